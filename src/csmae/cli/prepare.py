"""Convert any BigEarthNet source (v1 folders, reBEN folders/LMDB, encoded LMDB, a store) into the
prepared store that training reads: memory-mapped fixed-size records + pairs.parquet + manifest.json.

Written atomically (into STORE.partial, renamed at the end). Interrupted? Run the same command
again: committed chunks are not redone. Patches that cannot be read are listed in
STORE/skipped.csv (patch, file, reason) with --on-error skip (default), or stop the run.

Example:
  D=../shared/data/bigearthnet-v1
  csmae prepare $D/BigEarthNet-v1.0 $D/BigEarthNet-S1-v1.0 $D/tables --out stores/v1 \\
      --subset subsets/ben14k/all.txt --workers 2
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", help="source path(s), auto-detected (see csmae info)")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--subset", help="names file (one pair id per line), e.g. from csmae subset")
    p.add_argument("--split", nargs="+", choices=["train", "val", "test"], help="keep only these splits")
    p.add_argument("--workers", type=int, default=1, help="reader processes (default 1)")
    p.add_argument("--on-error", choices=["skip", "stop"], default="skip",
                   help="skip bad patches (listed in skipped.csv) or stop at the first (default skip)")
    p.add_argument("--sensors", nargs="+", choices=["s1", "s2"], default=["s1", "s2"],
                   help="sensors to store")
    p.add_argument("--s2-bands", default=None, help="'all' (12 bands) or a comma list; default the 10 bands")
    p.add_argument("--layout", choices=["float32", "native"], default="float32",
                   help="float32 (default): every band stored upsampled to 120x120, fastest reads, "
                        "~690 KB/pair; native: S2 kept uint16 at native resolution (~270 KB/pair), "
                        "upsampled when read (bicubic-bound, ~3-5x slower reads)")
    p.add_argument("--chunk-size", type=int, default=256, help="pairs per committed chunk")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from csmae.data.prepare import prepare

    bar = tqdm(total=0, unit="pair", desc="prepare", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        res = prepare(args.sources, args.out, subset=args.subset, workers=args.workers,
                      on_error=args.on_error, sensors=args.sensors, s2_bands=args.s2_bands,
                      split=args.split, layout=args.layout, chunk_size=args.chunk_size,
                      overwrite=args.overwrite, progress=progress)
    finally:
        bar.close()
    resumed = f", resumed {res.chunks_resumed} of {res.chunks} chunks" if res.chunks_resumed else ""
    print(f"wrote {res.path}: {res.pairs:,} pairs, {res.skipped:,} skipped (see skipped.csv){resumed}")
    return 0
