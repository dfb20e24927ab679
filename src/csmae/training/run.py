"""``fit``: a config -> a run folder, through a Lightning Trainer.

Run folder::

    RUN/
      manifest.json        kind "csmae-run", status running|completed|failed, what produced it
      config.yaml          the resolved config (placeholders expanded)
      logs/                CSV (metrics.csv) and TensorBoard event files
      checkpoints/         last.ckpt (every N steps and at epoch ends, written atomically), epoch-*.ckpt
      pictures/            epoch-XXX.png reconstruction grids
      model/               the final model (``csmae.from_pretrained(RUN/model)``), renamed into place
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from csmae.atomic import write_json_atomic, write_text_atomic
from csmae.training.config import ConfigError, FitConfig, expand_placeholders

log = logging.getLogger(__name__)

RUN_DIR_ENV = "CSMAE_RUN_DIR"  # handed to the processes Lightning's DDP launcher starts


@dataclass
class FitResult:
    """What a finished run reports (the CLI prints it as one line)."""

    run_dir: Path
    model_dir: Path | None
    epochs: int
    steps: int
    samples_per_s: float
    data_wait_share: float
    final_loss: float | None
    seconds: float
    is_global_zero: bool = True

    def summary(self) -> str:
        loss = f"{self.final_loss:.4f}" if self.final_loss is not None else "n/a"
        return (
            f"trained {self.epochs} epoch(s), {self.steps} step(s) in {self.seconds:.1f}s, "
            f"{self.samples_per_s:.1f} samples/s ({100 * self.data_wait_share:.0f}% waiting for data), "
            f"final loss {loss}; model: {self.model_dir}"
        )


def process_rank() -> int:
    """Global rank of this process from the launcher's environment (before any Trainer exists)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def default_run_dir(config_path: str | Path | None) -> Path:
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def resolve_run_dir(out: str | Path | None, config_path: str | Path | None) -> Path:
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if out is not None:
        return Path(out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("SLURM_NTASKS", "1") not in ("", "1"):
        raise ConfigError(
            "several processes were launched: give every one the same run folder with --out RUN_DIR"
        )
    return default_run_dir(config_path)


def write_manifest(run_dir: Path, cfg: FitConfig, *, status: str, **extra: Any) -> None:
    import torch

    from csmae.version import __version__

    path = run_dir / "manifest.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    data = {
        "kind": "csmae-run",
        "status": status,
        "model": cfg.model.name,
        "model_overrides": cfg.model.overrides,
        "created": old.get("created", datetime.now(UTC).isoformat(timespec="seconds")),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "producer": {"csmae": __version__, "torch": torch.__version__, "python": platform.python_version()},
        **{k: v for k, v in old.items() if k in ("history", "precision")},
    }
    data.update(extra)
    write_json_atomic(path, data)


def resolved_config(cfg: FitConfig) -> FitConfig:
    """A copy with the data placeholders (``${VAR}``, ``~``) expanded."""
    import copy

    out = copy.deepcopy(cfg)
    d = out.data
    d.sources = expand_placeholders(d.sources, "data.sources")
    d.tables = expand_placeholders(d.tables, "data.tables")
    d.ids = expand_placeholders(d.ids, "data.ids")
    d.val_sources = expand_placeholders(d.val_sources, "data.val_sources")
    d.val_ids = expand_placeholders(d.val_ids, "data.val_ids")
    return out


def prepare_run_dir(run_dir: Path, cfg: FitConfig, *, resume: bool | str) -> Path | None:
    """Create (or check, when resuming) the run folder; returns the checkpoint to resume from."""
    from csmae.training.checkpoint import check_checkpoint

    ckpt: Path | None = None
    if resume:
        ckpt = Path(resume) if isinstance(resume, str) else run_dir / "checkpoints" / "last.ckpt"
        if not run_dir.is_dir() and isinstance(resume, bool):
            raise FileNotFoundError(f"--resume: run folder {run_dir} does not exist")
        check_checkpoint(ckpt)  # raises a clear error before anything is written
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"run folder {run_dir} exists and is not empty: continue it with --resume or choose another --out"
        )
    for sub in ("checkpoints", "logs", "pictures"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    cfg_text = resolved_config(cfg).to_yaml()
    name = "config.yaml" if not (run_dir / "config.yaml").exists() else "config.resume.yaml"
    write_text_atomic(run_dir / name, cfg_text)
    return ckpt


def build_model(cfg: FitConfig) -> Any:
    from csmae.models import create_model

    try:
        return create_model(cfg.model.name, **cfg.model.overrides)
    except KeyError as e:
        raise ConfigError(f"model.name: {e.args[0] if e.args else e}") from None


def fit(
    cfg: FitConfig,
    *,
    out: str | Path | None = None,
    resume: bool | str = False,
    config_path: str | Path | None = None,
    callbacks: list[Any] | None = None,
    trainer_overrides: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``cfg`` into a run folder (see the module docstring); returns the run's numbers.

    Args:
        cfg: a validated config (:func:`csmae.training.config.load_config`).
        out: run folder (default ``runs/<config stem>-<UTC time>``).
        resume: True to continue from ``out/checkpoints/last.ckpt``, or a checkpoint path.
        config_path: the config file (names the default run folder).
        callbacks: extra Lightning callbacks.
        trainer_overrides: extra ``pl.Trainer`` keyword arguments.
    """
    from csmae.training.trainer import resolve_precision

    rank = process_rank()
    run_cfg, precision = resolve_precision(cfg)  # config.yaml keeps what was asked ("auto")
    if rank == 0:
        run_dir = Path(out) if out is not None else resolve_run_dir(None, config_path)
        ckpt = prepare_run_dir(run_dir, cfg, resume=resume)
        write_manifest(run_dir, cfg, status="running", precision=precision)
        os.environ[RUN_DIR_ENV] = str(run_dir)  # Lightning's DDP launcher passes it to the other ranks
    else:
        run_dir = resolve_run_dir(out, config_path)
        ckpt = (
            (Path(resume) if isinstance(resume, str) else run_dir / "checkpoints" / "last.ckpt")
            if resume
            else None
        )
    try:
        return _fit(run_cfg, run_dir, ckpt, callbacks=callbacks, trainer_overrides=trainer_overrides)
    finally:
        if rank == 0:
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(
    cfg: FitConfig,
    run_dir: Path,
    ckpt: Path | None,
    *,
    callbacks: list[Any] | None,
    trainer_overrides: dict[str, Any] | None,
) -> FitResult:
    import lightning.pytorch as pl
    import torch

    from csmae.training.trainer import build_trainer

    if cfg.trainer.matmul_precision:
        torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    model = build_model(cfg)
    csv_version = ""
    if ckpt is not None:  # keep the earlier sessions' metrics.csv
        csv_version = f"resume-{len(list((run_dir / 'logs').glob('resume-*'))) + 1}"
    trainer, module, dm, tp = build_trainer(
        cfg,
        model,
        run_dir,
        callbacks=callbacks or [],
        trainer_overrides=trainer_overrides or {},
        csv_version=csv_version,
    )
    from csmae.training.module import NonFiniteLossError

    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    except NonFiniteLossError as e:
        last = run_dir / "checkpoints" / "last.ckpt"
        msg = f"{e} Last good checkpoint: {last if last.exists() else 'none yet'}."
        if trainer.is_global_zero:
            write_manifest(run_dir, cfg, status="failed", error=msg)
        raise RuntimeError(msg) from None
    except BaseException as e:
        if trainer.is_global_zero:
            write_manifest(run_dir, cfg, status="failed", error=f"{type(e).__name__}: {e}")
        raise
    if trainer.interrupted:
        if trainer.is_global_zero:
            write_manifest(run_dir, cfg, status="interrupted")
        raise KeyboardInterrupt
    model_dir: Path | None = None
    if trainer.is_global_zero:
        model_dir = save_final_model(module.model, run_dir / "model")
        write_manifest(
            run_dir,
            cfg,
            status="completed",
            epochs=trainer.current_epoch,
            steps=trainer.global_step,
            model_dir="model",
        )
    loss = module.last_loss
    return FitResult(
        run_dir=run_dir,
        model_dir=model_dir,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        samples_per_s=tp.stats.samples_per_s,
        data_wait_share=tp.stats.data_wait_share,
        final_loss=float(loss) if loss is not None else None,
        seconds=time.perf_counter() - t0,
        is_global_zero=trainer.is_global_zero,
    )


def save_final_model(model: Any, target: Path) -> Path:
    """``model.save_pretrained`` (it writes a temp folder and renames it into place)."""
    return Path(model.save_pretrained(target))
