"""Assemble the Lightning Trainer of a run: loggers, checkpoints, callbacks, precision, DDP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from csmae.training.callbacks import ProgressBar, Throughput
from csmae.training.checkpoint import AtomicCheckpointIO
from csmae.training.config import ConfigError, FitConfig
from csmae.training.datamodule import PairDataModule
from csmae.training.module import CSMAEModule
from csmae.training.step_checkpoint import StepCheckpoint

log = logging.getLogger(__name__)


def _accelerator(cfg: FitConfig) -> str:
    acc = cfg.trainer.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return acc


def check_precision(cfg: FitConfig) -> None:
    acc = _accelerator(cfg)
    if cfg.trainer.precision == "16-mixed" and acc == "cpu":
        raise ConfigError(
            "trainer.precision '16-mixed' (fp16 AMP) needs a GPU; on CPU use 'bf16-mixed' or '32'"
        )


def resolve_precision(cfg: FitConfig) -> tuple[FitConfig, dict[str, Any]]:
    """(``cfg`` with ``trainer.precision`` "auto" resolved, what the run manifest records).

    ``auto``: ``bf16-mixed`` where the accelerator runs bf16 matmuls natively, ``32`` elsewhere
    (:mod:`csmae.models.precision`; one info line says which and why). An explicit bf16 precision on
    a device that would emulate it is kept, with one warning line.

    Raises:
        ConfigError: ``trainer.bf16_weight_copies`` with ``auto`` resolved to ``32``.
    """
    import dataclasses

    from csmae.models.precision import LIGHTNING, choose_precision

    t = cfg.trainer
    acc = _accelerator(cfg)
    device = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(acc)
    if t.precision not in ("auto", "bf16-mixed", "bf16-true"):
        return cfg, {"requested": t.precision, "used": t.precision, "reason": "requested", "device": acc}
    if device is None:  # an accelerator torch.device does not name (tpu, ...): no bf16 policy for it
        used = "32" if t.precision == "auto" else t.precision
        return dataclasses.replace(cfg, trainer=dataclasses.replace(t, precision=used)), {
            "requested": t.precision, "used": used, "reason": f"accelerator {acc}", "device": acc}
    choice = choose_precision("auto" if t.precision == "auto" else "bf16", device, what="training precision")
    used = LIGHTNING[choice.precision] if t.precision == "auto" else t.precision
    if t.bf16_weight_copies and used != "bf16-mixed":
        raise ConfigError(
            f"trainer.bf16_weight_copies=true needs bf16-mixed, but trainer.precision auto chose {used} "
            f"({choice.reason}): set trainer.precision=bf16-mixed or trainer.bf16_weight_copies=false"
        )
    facts = {**choice.describe(), "requested": t.precision, "used": used}
    return dataclasses.replace(cfg, trainer=dataclasses.replace(t, precision=used)), facts


def compile_model(model: Any, cfg: FitConfig) -> None:
    """``trainer.compile``: ``torch.compile`` the encoder and decoder in place (state-dict keys unchanged).

    Raises:
        ConfigError: the accelerator has no ``torch.compile`` backend here (checked before training,
            never silently ignored).
    """
    import shutil

    acc = _accelerator(cfg)
    if acc == "cpu":
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx[0] if isinstance(inductor_config.cpp.cxx, tuple) else None
        candidates = [c for c in (cxx, "g++", "c++", "clang++") if c]
        if not any(shutil.which(c) for c in candidates):
            raise ConfigError(
                "trainer.compile=true on CPU needs a C++ compiler for torch.compile's inductor backend "
                f"(none of {candidates} found): install one (e.g. g++) or set trainer.compile=false"
            )
    elif acc in ("gpu", "cuda"):
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError(
                "trainer.compile=true on GPU needs Triton (pip install triton) for torch.compile's "
                "inductor backend; or set trainer.compile=false"
            )
    else:
        raise ConfigError(
            f"trainer.compile=true is not supported on accelerator {acc!r} (torch.compile's inductor "
            "backend runs on cpu and cuda): set trainer.compile=false"
        )
    parts = [name for name in ("encoder", "decoder") if getattr(model, name, None) is not None]
    for name in parts:
        getattr(model, name).compile()
    log.info("torch.compile: %s (inductor, %s)", ", ".join(parts), acc)


def checkpoint_callbacks(cfg: FitConfig, ckpt_dir: Path) -> list[ModelCheckpoint]:
    """``last.ckpt`` every N steps and at epoch ends; optionally ``epoch-XXX.ckpt`` kept for good."""
    c = cfg.callbacks
    last = dict(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    wanted: list[tuple[Any, dict[str, Any]]] = [
        (c.checkpoint_every_n_steps,
         dict(last, every_n_train_steps=c.checkpoint_every_n_steps, save_on_train_epoch_end=False)),
        (c.checkpoint_every_n_epochs,
         dict(last, every_n_epochs=c.checkpoint_every_n_epochs, save_on_train_epoch_end=True)),
        (c.keep_every_n_epochs,
         dict(dirpath=ckpt_dir, filename="epoch-{epoch:03d}", every_n_epochs=c.keep_every_n_epochs,
              save_top_k=-1, save_on_train_epoch_end=True, auto_insert_metric_name=False)),
    ]
    out: list[ModelCheckpoint] = []
    for i, (enabled, kwargs) in enumerate(wanted):
        if enabled:
            out.append(StepCheckpoint(**kwargs) if i == 0 else ModelCheckpoint(**kwargs))
    return out


def build_trainer(
    cfg: FitConfig,
    model: Any,
    run_dir: Path,
    *,
    callbacks: list[Any],
    trainer_overrides: dict[str, Any],
    csv_version: str = "",
) -> tuple[pl.Trainer, CSMAEModule, PairDataModule, Throughput]:
    """Trainer, LightningModule and DataModule for a run folder.

    ``csv_version``: sub-folder of ``logs/`` for the CSV log (Lightning's CSVLogger deletes an
    existing metrics.csv, so a resumed session writes ``logs/resume-N/metrics.csv``).
    """
    check_precision(cfg)
    t, c = cfg.trainer, cfg.callbacks
    if t.compile:
        compile_model(model, cfg)
    module = CSMAEModule(model, cfg)
    dm = PairDataModule(cfg.data, model.sensors, seed=t.seed)
    throughput = Throughput()
    ckpt_cbs = checkpoint_callbacks(cfg, run_dir / "checkpoints")
    cbs: list[Any] = [throughput, *ckpt_cbs]
    if t.enable_progress_bar:
        cbs.append(ProgressBar(refresh_rate=1))
    if c.recon_pictures and c.pictures_every_n_epochs:
        from csmae.training.pictures import ReconstructionPictures

        cbs.append(
            ReconstructionPictures(
                run_dir / "pictures",
                n_samples=c.pictures_n_samples,
                every_n_epochs=c.pictures_every_n_epochs,
                seed=t.seed,
            )
        )
    if c.retrieval_every_n_epochs:
        from csmae.training.retrieval_callback import RetrievalMetrics

        cbs.append(
            RetrievalMetrics(
                every_n_epochs=c.retrieval_every_n_epochs,
                max_samples=c.retrieval_max_samples,
                ks=tuple(c.retrieval_ks),
                batch_size=cfg.data.val_batch_size or cfg.data.batch_size,
            )
        )
    cbs.append(LearningRateMonitor(logging_interval="step"))
    cbs.extend(callbacks)
    loggers = [
        CSVLogger(run_dir, name="logs", version=csv_version),
        TensorBoardLogger(run_dir, name="logs", version=""),
    ]
    kwargs: dict[str, Any] = dict(
        default_root_dir=run_dir,
        # without our checkpoint callbacks Lightning would add its own default one
        enable_checkpointing=bool(ckpt_cbs),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our batch sampler shards by rank and is resumable
        callbacks=cbs,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    if not dm.has_val:
        kwargs["limit_val_batches"] = 0
    kwargs.update(trainer_overrides)
    return pl.Trainer(**kwargs), module, dm, throughput
