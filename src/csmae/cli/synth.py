"""Write a synthetic paired S1/S2 archive with realistic structure (procedural land cover over the
19 classes, per-class S2 spectra and S1 backscatter with speckle; crop types look alike to S1).

--format v1 (default): BigEarthNet v1.0 folders (per-band GeoTIFFs + JSON) and side tables, read by
the same code as real data. --format store: a prepared store (fastest, for the demo).

--series: places through time (csmae.data.synth_time): each of the --n places at every date of
--dates (default 3 spring + 3 late-summer dates), with seasons, speckle, clouds hiding S2 on some
dates (--cloud-prob) and known change events in --change-fraction of the places (a land-cover class
replaced by another at a known date between --change-start and --change-end); the ground truth is in
the store manifest / synth.json under "synthetic_series".

Example:
  csmae synth --out synth --n 2000 --seed 0
  csmae synth --out series --n 200 --format store --series --change-fraction 0.3
  csmae prepare synth/BigEarthNet-v1.0 synth/BigEarthNet-S1-v1.0 synth/tables --out synth-store
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=1000, help="number of pairs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--format", choices=["v1", "store"], default="v1", help="on-disk format (default v1)")
    p.add_argument("--split", type=float, nargs=3, default=[0.6, 0.2, 0.2], metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions (default 0.6 0.2 0.2)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    t = p.add_argument_group("places through time (--series)")
    t.add_argument("--series", action="store_true", help="each place at several dates, with change events")
    t.add_argument("--dates", metavar="D1,D2,...", help="S2 acquisition dates (ISO, in order)")
    t.add_argument("--change-fraction", type=float, help="fraction of places with a change (default 0.3)")
    t.add_argument("--change-start", metavar="YYYY-MM-DD", help="earliest change date")
    t.add_argument("--change-end", metavar="YYYY-MM-DD", help="latest change date")
    t.add_argument("--cloud-prob", type=float, help="probability that S2 is cloudy on a date (default 0.25)")


def run(args: argparse.Namespace) -> int:
    from csmae.data.synth import write_synthetic

    series = _series(args)
    paths = write_synthetic(args.out, n=args.n, seed=args.seed, format=args.format,
                            split_fractions=args.split, overwrite=args.overwrite, series=series)
    if series is not None:
        print(f"wrote {args.n:,} synthetic places x {len(series.dates)} dates ({args.format}) to {args.out}")
    else:
        print(f"wrote {args.n:,} synthetic pairs ({args.format}) to {args.out}")
    print("open with: " + " ".join(str(p) for p in paths))
    return 0


def _series(args: argparse.Namespace) -> Any:
    from csmae.data.synth_time import Series

    given = {"dates": tuple(d.strip() for d in args.dates.split(",")) if args.dates else None,
             "change_fraction": args.change_fraction, "change_start": args.change_start,
             "change_end": args.change_end, "cloud_prob": args.cloud_prob}
    options = {k: v for k, v in given.items() if v is not None}
    if not args.series:
        if options:
            raise ValueError(f"--{next(iter(options)).replace('_', '-')} needs --series")
        return None
    return Series(**options)
