"""Train a model from a YAML config into a run folder.

Examples:
  csmae fit --config configs/tiny/synth.yaml --out runs/tiny
  csmae fit --config configs/paper/ben14k_sesd.yaml --set data.sources=[/data/ben-store] --out runs/sesd
  csmae fit --config configs/paper/ben14k_sesd.yaml --out runs/sesd --resume      # continue last.ckpt
  csmae fit --config configs/paper/ben14k_sesd.yaml --print-config                 # resolved config
  csmae fit --config configs/paper/ben14k_sesd.yaml --dry-run                      # validate, no data

Overrides: --set section.key=value (YAML values), e.g. --set trainer.max_epochs=10 optim.lr=2e-4
model.overrides.mask_ratio=0.75 trainer.devices=4 trainer.strategy=ddp. Multi-GPU / multi-node:
docs/training.md (torchrun and SLURM commands).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config (configs/...); defaults are the paper settings")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override config keys, e.g. trainer.max_epochs=3 data.batch_size=32",
    )
    p.add_argument("--out", help="run folder (default runs/<config name>-<UTC time>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue the run in --out from checkpoints/last.ckpt (or from CKPT)",
    )
    p.add_argument(
        "--print-config", "--print_config", action="store_true", help="print the resolved config and exit"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config and the model without data and without training",
    )


def dry_run_report(cfg) -> list[str]:  # type: ignore[no-untyped-def]
    """Validate the model preset and overrides on the meta device (no memory, no data)."""
    import torch

    from csmae.models import create_model
    from csmae.training.config import has_placeholders
    from csmae.training.optim import scaled_lr
    from csmae.training.trainer import check_precision, resolve_precision

    check_precision(cfg)
    _, chosen = resolve_precision(cfg)
    with torch.device("meta"):
        model = create_model(cfg.model.name, **cfg.model.overrides)
    n_params = sum(p.numel() for p in model.parameters())
    sensors = ", ".join(f"{s}: {list(v.bands)}" for s, v in model.sensors.items())
    t, d = cfg.trainer, cfg.data
    batch = d.global_batch_size or d.batch_size
    where = "global, split over devices" if d.global_batch_size else "per device"
    lines = [
        f"config OK: model {cfg.model.name} ({n_params / 1e6:.1f} M parameters), sensors {sensors}",
        f"batch {batch} {where}, peak lr {scaled_lr(cfg.optim, batch):.3g} at one device "
        f"(lr_scaling {cfg.optim.lr_scaling}), {t.max_epochs} epochs, precision {_precision_text(chosen)}, "
        f"seed {t.seed}",
    ]
    for key in ("sources", "ids", "val_sources", "val_ids"):
        value = getattr(d, key)
        if has_placeholders(value):
            lines.append(f"data.{key} = {value}: set the environment variable(s) or --set data.{key}=...")
    if not d.sources:
        lines.append("data.sources is empty: set it before training")
    from pathlib import Path

    for i, src in enumerate(d.sources):
        if not has_placeholders(src) and not Path(src).expanduser().exists():
            lines.append(f"note: data.sources[{i}] = {src!r} does not exist (yet); training needs it")
    return lines


def _precision_text(chosen: dict) -> str:  # type: ignore[type-arg]
    if chosen["requested"] == "auto":
        return f"auto -> {chosen['used']} ({chosen['reason']})"
    return str(chosen["used"])


def run(args: argparse.Namespace) -> int:
    import logging

    from csmae.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.dry_run:
        for line in dry_run_report(cfg):
            print(line)
        return 0
    if args.resume and not args.out and args.resume is True:
        raise ValueError("--resume needs the run folder: --out RUN_DIR")
    from csmae.training.run import fit

    logging.getLogger("csmae").setLevel(min(logging.getLogger().level, logging.INFO))
    logging.getLogger("lightning.pytorch").propagate = False  # it has its own handler: no double lines
    result = fit(cfg, out=args.out, resume=args.resume, config_path=args.config)
    if result.is_global_zero:
        print(result.summary())
    return 0
