"""Import a checkpoint of the reference CSMAE implementation (jakhac/CSMAE) as a csmae model folder.

Example:
    csmae import-reference trained_models/last.ckpt --config trained_models/args.yaml --out models/csmae-cecd

The folder loads with ``csmae.from_pretrained(DIR)`` and gives the reference's descriptors for
normally oriented images whose channels follow the recorded band order.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="reference Lightning checkpoint (.ckpt with a state_dict)")
    parser.add_argument("--config", required=True, help="the reference run's resolved args.yaml")
    parser.add_argument("--out", required=True, help="output model folder (written atomically)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from csmae.models import import_reference
    from csmae.models.io import save_pretrained

    model = import_reference(args.checkpoint, args.config)
    out = save_pretrained(
        model,
        args.out,
        extra={
            "imported_from": {
                "checkpoint": str(Path(args.checkpoint).resolve()),
                "config": str(Path(args.config).resolve()),
            }
        },
    )
    c = model.config
    print(
        f"imported {c.variant} (D={c.embed_dim}, private={c.private_depth}, shared={c.shared_depth}, "
        f"decoder={c.decoder_sharing}) -> {out}"
    )
    for s, spec in model.sensors.items():
        print(f"  {s}: bands {' '.join(spec.bands)}")
    return 0
