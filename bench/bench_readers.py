"""Per-sample read speed of every archive reader on the real samples in ../shared/data (one process).

Usage: .venv/bin/python bench/bench_readers.py [--seconds 3] [--data ../shared/data]

For each reader: full samples/s (decode + checks + bicubic upsampling + sample dict), the decode
part alone (``read_arrays``: TIFF/safetensors/pickle), and samples/s with torch limited to one
thread (what a DataLoader worker uses). Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from csmae.data import open_dataset

REPO = Path(__file__).resolve().parents[1]


def rate(fn: Callable[[int], object], n: int, seconds: float) -> float:
    for i in range(n):  # warm-up (page cache, lazy opens)
        fn(i)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(n):
            fn(i)
        done += n
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    d = args.data
    sources = {
        "v1 folders (GeoTIFF, 12 files/pair)": [d / "bigearthnet-v1"],
        "reBEN LMDB (safetensors)": [d / "reben" / "BigEarthNet-V2-LMDB"],
        "encoded LMDB (restricted unpickler)": [d / "bigearthnet-encoded-lmdb"],
    }
    threads = torch.get_num_threads()
    print(f"| reader | pairs | samples/s (torch {threads} threads) | samples/s (1 thread) "
          "| decode only /s |")
    print("|---|---|---|---|---|")
    for name, src in sources.items():
        ds = open_dataset(*src)
        torch.set_num_threads(threads)
        full = rate(ds.__getitem__, len(ds), args.seconds)
        torch.set_num_threads(1)
        one = rate(ds.__getitem__, len(ds), args.seconds)
        torch.set_num_threads(threads)
        dec = rate(ds.read_arrays, len(ds), args.seconds)  # type: ignore[attr-defined]
        print(f"| {name} | {len(ds)} | {full:,.0f} | {one:,.0f} | {dec:,.0f} |")


if __name__ == "__main__":
    main()
