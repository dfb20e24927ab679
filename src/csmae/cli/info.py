"""Describe a dataset source: its kind, number of pairs, sensors and bands, split counts, first ids.

Examples::

    csmae info DATA/bigearthnet-v1/BigEarthNet-v1.0 DATA/bigearthnet-v1/BigEarthNet-S1-v1.0
    csmae info DATA/reben/BigEarthNet-V2-LMDB
    csmae info DATA/bigearthnet-encoded-lmdb --split test
"""

from __future__ import annotations

import argparse
from collections import Counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="dataset path(s) (auto-detected)")
    parser.add_argument("--sensors", default="s1,s2", help="comma-separated sensors (default: s1,s2)")
    parser.add_argument("--s2-bands", default=None, help="S2 bands: 'all' or a comma-separated list")
    parser.add_argument("--tables", default=None, help="v1 side-table folder (pairing, splits)")
    parser.add_argument("--split", default=None, help="only this split (train/val/test)")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="skip",
                        help="pairing/label problems: list them (skip, default) or fail (raise)")
    parser.add_argument("--show", type=int, default=5, help="how many ids to list (default: 5)")
    parser.add_argument("--read", action="store_true", help="also read the first pair and show its arrays")


def run(args: argparse.Namespace) -> int:
    from csmae.data import open_dataset

    ds = open_dataset(
        *args.sources, sensors=tuple(s.strip() for s in args.sensors.split(",") if s.strip()),
        s2_bands=args.s2_bands, tables=args.tables, split=args.split, on_error=args.on_error,
    )
    print(f"kind:    {getattr(ds, 'kind', '') or type(ds).__name__}")
    print(f"source:  {ds.source}")
    print(f"pairs:   {len(ds)}")
    for name, sensor in ds.sensors.items():
        print(f"{name}:      {len(sensor.bands)} bands {' '.join(sensor.bands)} ({sensor.units})")
    counts = Counter(s or "none" for s in ds.splits())
    print("splits:  " + ", ".join(f"{k} {counts[k]}" for k in ("train", "val", "test", "none") if counts[k]))
    problems = getattr(ds, "problems", [])
    if problems:
        print(f"skipped: {len(problems)} patch(es) with problems")
        for pid, why in problems[: args.show]:
            print(f"  {pid}: {why}")
    if len(ds):
        print("first ids:")
        for pid in ds.ids[: args.show]:
            print(f"  {pid}")
    if args.read and len(ds):
        sample = ds[0]
        print(f"first pair {sample['id']}:")
        for key, value in sample.items():
            if hasattr(value, "shape"):
                extra = f" min {value.min():.4g} max {value.max():.4g}" if value.dtype.kind == "f" else ""
                print(f"  {key}: {value.dtype} {tuple(value.shape)}{extra}")
            elif key != "id":
                print(f"  {key}: {value}")
    return 0
