"""Compute descriptors of every pair and sensor of a dataset with a saved model.

Writes EMB_DIR with Parquet shards (id, sensor, split, labels, vector) and manifest.json (model
sha256, variant, pooling, sensors with band order and normalisation). Resumable: an interrupted run
leaves EMB_DIR.partial/; the same command continues from the finished shards (on any number of
devices). One device runs in this process; --devices N (and --num-nodes) run Lightning's predict
under DDP, each rank embedding whole shards. The dataset's band order is mapped by band name to the
model's.

Examples:
  csmae embed runs/tiny/model ../shared/data/reben --out emb/reben
  csmae embed MODEL STORE_DIR --out emb/test --split test --sensors s1,s2 --batch-size 128
  csmae embed MODEL STORE_DIR --out emb/all --devices 4 --batch-size 256 --workers 4   # 4 GPUs
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="model folder (save_pretrained)")
    p.add_argument("dataset", nargs="+", help="dataset source path(s) (any format csmae reads)")
    p.add_argument("--out", required=True, help="output embeddings folder")
    p.add_argument("--split", nargs="+", choices=["train", "val", "test"], help="only pairs of these splits")
    p.add_argument("--sensors", help="comma-separated sensors to embed (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    add_precision_argument(p)
    p.add_argument("--shard-pairs", type=int, default=4096, help="pairs per Parquet shard (resume unit)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1...")
    p.add_argument("--devices", type=int, default=1, help="devices per node; >1 runs Lightning DDP predict")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes (torchrun/SLURM set the ranks)")
    p.add_argument("--workers", type=int, default=0, help="reader processes (0 = read in the main process)")
    p.add_argument(
        "--device-transforms",
        choices=["auto", "true", "false"],
        default="auto",
        help="read a prepared store's records as stored and upsample/normalise them on the device "
        "(same descriptors; auto = on a CUDA device)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (only once complete)")
    add_compile_argument(p)


PRECISION_HELP = (
    "auto (default): bf16 autocast where this device runs bf16 matmuls natively (CPUs with "
    "AVX512-BF16 or AMX, GPUs from compute capability 8.0), fp32 elsewhere (AVX2-only CPUs: bf16 "
    "is emulated there, 8-360x slower); bf16 or fp32 to choose. One line says which and why; the "
    "manifest records it"
)


def add_precision_argument(p: argparse.ArgumentParser, *, default: str = "auto", help: str = PRECISION_HELP,
                           flag: str = "--precision") -> None:
    """A precision option taking auto / bf16 / fp32 (:mod:`csmae.models.precision`)."""
    p.add_argument(flag, choices=["auto", "bf16", "fp32"], default=default, help=help)


def show_precision_choice() -> None:
    """Let the one line of the precision decision through (the CLI logs warnings only by default)."""
    import logging

    logger = logging.getLogger("csmae.models.precision")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def add_compile_argument(p: argparse.ArgumentParser) -> None:
    """``--no-compile``: shared by ``csmae embed`` and ``csmae evaluate``."""
    p.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="embed with the eager model (default: the inductor-compiled one on CPUs with AMX for jobs "
        "of >= 16k pairs; same descriptors within the tolerance the manifest records)",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from tqdm import tqdm

    from csmae.retrieval.embed import embed_dataset, is_launched_rank

    bar = tqdm(total=0, unit="pair", desc="embed", dynamic_ncols=True, disable=is_launched_rank())

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    show_precision_choice()
    t0 = time.perf_counter()
    split = args.split[0] if args.split and len(args.split) == 1 else args.split
    sensors = [s.strip() for s in args.sensors.split(",") if s.strip()] if args.sensors else None
    try:
        out = embed_dataset(
            args.model_dir,
            args.dataset,
            args.out,
            split=split,
            sensors=sensors,
            batch_size=args.batch_size,
            precision=args.precision,
            shard_pairs=args.shard_pairs,
            device=args.device,
            devices=args.devices,
            num_nodes=args.num_nodes,
            workers=args.workers,
            device_transforms={"true": True, "false": False}.get(args.device_transforms, "auto"),
            overwrite=args.overwrite,
            on_progress=progress,
            compiled=args.compile,
        )
    finally:
        bar.close()
    if is_launched_rank():
        return 0  # rank 0 (the command the user started) finishes the folder and reports
    man = json.loads((out / "manifest.json").read_text())
    el = time.perf_counter() - t0
    pairs = man["dataset"]["pairs"]
    print(
        f"wrote {out}: {man['count']:,} vectors (D={man['dim']}, {pairs:,} pairs x {len(man['sensors'])} "
        f"sensors) in {el:.1f}s ({pairs / max(el, 1e-9):.1f} pairs/s end to end, start-up included), "
        f"{man.get('precision')}"
    )
    return 0
