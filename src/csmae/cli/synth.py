"""Write a synthetic paired S1/S2 archive with realistic structure (procedural land cover over the
19 classes, per-class S2 spectra and S1 backscatter with speckle; crop types look alike to S1).

--format v1 (default): BigEarthNet v1.0 folders (per-band GeoTIFFs + JSON) and side tables, read by
the same code as real data. --format store: a prepared store (fastest, for the demo).

Example:
  csmae synth --out synth --n 2000 --seed 0
  csmae prepare synth/BigEarthNet-v1.0 synth/BigEarthNet-S1-v1.0 synth/tables --out synth-store
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=1000, help="number of pairs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--format", choices=["v1", "store"], default="v1", help="on-disk format (default v1)")
    p.add_argument("--split", type=float, nargs=3, default=[0.6, 0.2, 0.2], metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions (default 0.6 0.2 0.2)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from csmae.data.synth import write_synthetic

    paths = write_synthetic(args.out, n=args.n, seed=args.seed, format=args.format,
                            split_fractions=args.split, overwrite=args.overwrite)
    print(f"wrote {args.n:,} synthetic pairs ({args.format}) to {args.out}")
    print("open with: " + " ".join(str(p) for p in paths))
    return 0
