"""Build a reproducible list of pair names from the BigEarthNet side tables.

Writes OUT/train.txt, OUT/val.txt, OUT/test.txt (one pair id per line, by official split),
OUT/all.txt and OUT/subset.json (the filter and the counts).

Presets:
  ben-14k   Serbia + Summer with the recommended exclusions (snow, cloud/shadow, no 19-class label).
            The paper's exact BEN-14K list (14,832 pairs) is not public: this filter gives
            14,717 pairs (7,699 / 3,482 / 3,536 train / val / test), not 14,832.
  ben-270k  the official 19-class train split (269,695 pairs), with the official val (123,723)
            and test (125,866) splits for queries and archive.

Examples:
  csmae subset ../shared/data/bigearthnet-v1/tables --preset ben-14k --out subsets/ben14k
  csmae subset TABLES --country Serbia Austria --season Summer --max-size 5000 --seed 1 --out sub
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tables", help="v1 tables folder (s1_s2_name_country_season.csv.bz2, splits, "
                                  "exclusion lists) or a reBEN metadata.parquet")
    p.add_argument("--out", required=True, help="output folder for the names files and subset.json")
    p.add_argument("--preset", choices=["ben-14k", "ben-270k"],
                   help="a named filter (options below refine it); ben-14k: the paper's exact list is not "
                        "public, this filter gives 14,717 pairs, not 14,832")
    p.add_argument("--country", nargs="+", help="keep only these countries")
    p.add_argument("--season", nargs="+", choices=["Spring", "Summer", "Fall", "Winter"],
                   help="keep only these seasons")
    p.add_argument("--split", nargs="+", choices=["train", "val", "test"],
                   help="keep only these official splits")
    p.add_argument("--keep-snow", action="store_true", help="do not exclude patches with seasonal snow")
    p.add_argument("--keep-cloud", action="store_true", help="do not exclude patches with cloud or shadow")
    p.add_argument("--keep-no-label", action="store_true",
                   help="do not exclude patches without a 19-class label")
    p.add_argument("--max-size", type=int, help="keep at most this many pairs (uniform draw)")
    p.add_argument("--seed", type=int, help="seed of the --max-size draw (default 0)")


def run(args: argparse.Namespace) -> int:
    from csmae.data.subsets import BEN14K_NOTE, make_subset

    info = make_subset(
        args.tables, args.out, preset=args.preset,
        countries=args.country, seasons=args.season, splits=args.split,
        exclude_snow=False if args.keep_snow else None,
        exclude_cloud=False if args.keep_cloud else None,
        exclude_no_label=False if args.keep_no_label else None,
        max_size=args.max_size, seed=args.seed,
    )
    counts = info["counts"]
    detail = ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "all")
    print(f"wrote {args.out}: {counts['all']:,} pairs of {info['table_rows']:,} ({detail})")
    if args.preset == "ben-14k":
        print(f"note: {BEN14K_NOTE}")
    return 0
