"""Evaluate retrieval in every direction: S1->S1, S2->S2, S1->S2, S2->S1, S1->mixed, S2->mixed.

Reference protocol by default: queries = val split, archive = test split, exact cosine search,
ties broken by archive order, k = 5, 10, 20, 100 (a k larger than an archive is skipped with a note).
Give a model and a dataset (descriptors are computed first, in fp32 like the reference protocol
unless --precision bf16, into OUT.embeddings unless --embeddings-out says otherwise) or
--embeddings EMB_DIR. Cross-model pairs (the paper's uni-modal baseline) take each sensor's items
from its own embeddings folder: --embeddings s1=EMB_S1 s2=EMB_S2 (both must describe the same
pairs). Writes OUT/metrics.json, metrics.md,
metrics_by_direction.png, precision_recall_at_k.png and retrieval grids (grid_*.png).
Finished searches are kept in OUT.partial until the report is written: rerun the same command after
an interruption and it resumes from them.

For tiny archives without val/test pairs use e.g. --queries all --archive all (each query's own
item is then left out; --exclude-own-pair also leaves out its other-sensor partner).

Examples:
  csmae evaluate runs/tiny/model ../shared/data/reben --out reports/tiny --queries all --archive all
  csmae evaluate --embeddings emb/ben14k --out reports/ben14k --ks 5,10
  csmae evaluate --embeddings s1=emb/mae_s1 s2=emb/mae_s2 --out reports/mae_baseline
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from csmae.cli.embed import add_compile_argument, add_precision_argument, show_precision_choice


def _splits(v: str) -> str | list[str]:
    parts = [x.strip() for x in v.split(",") if x.strip()]
    return parts[0] if len(parts) == 1 else parts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", nargs="?", help="model folder (omit with --embeddings)")
    p.add_argument("dataset", nargs="*", help="dataset source path(s)")
    p.add_argument(
        "--embeddings",
        nargs="+",
        metavar="EMB_DIR | SENSOR=EMB_DIR",
        help="use this embeddings folder instead of a model + dataset, or one folder per sensor "
        "(s1=EMB_A s2=EMB_B: cross-model pairs)",
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--queries", default="val", type=_splits, help="query split(s): val (default), test, train, all"
    )
    p.add_argument(
        "--archive", default="test", type=_splits, help="archive split(s): test (default), ..., all"
    )
    p.add_argument("--ks", default="5,10,20,100", help="comma-separated k values")
    p.add_argument(
        "--exclude-own-pair",
        action="store_true",
        help="leave each query's other-sensor partner out of overlapping archives",
    )
    add_precision_argument(
        p,
        default="fp32",
        help="precision of the descriptors computed from a model: fp32 (default, the reference "
        "protocol), bf16 autocast, or auto (bf16 where this device runs bf16 matmuls natively, fp32 "
        "elsewhere); recorded in the report",
    )
    add_precision_argument(
        p,
        flag="--search-precision",
        help="candidate pass of the exact search (results are identical): auto (default) = bf16 where "
        "this CPU runs bf16 matmuls natively (AVX512-BF16, AMX), fp32 elsewhere (AVX2-only CPUs: bf16 "
        "is emulated there, 8-360x slower); the report records it",
    )
    p.add_argument("--grids", type=int, default=3, help="queries per retrieval grid (0 = no grids)")
    p.add_argument(
        "--data", nargs="+", help="dataset source(s) for grid previews (default: the recorded one)"
    )
    p.add_argument("--embeddings-out", help="where to write computed embeddings (default OUT.embeddings)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="replace an existing report (only once complete)")
    add_compile_argument(p)


def parse_embeddings(values: list[str]) -> dict[str, Path] | Path:
    """``[DIR]`` -> DIR; ``["s1=A", "s2=B"]`` -> {"s1": A, "s2": B}; anything else is a clear error."""
    if len(values) == 1 and "=" not in values[0]:
        return Path(values[0])
    out: dict[str, Path] = {}
    for v in values:
        sensor, sep, folder = v.partition("=")
        sensor = sensor.strip().lower()
        if not sep or not sensor or not folder:
            raise ValueError(
                f"--embeddings {v!r}: give one folder, or SENSOR=FOLDER for every sensor "
                "(e.g. s1=emb/a s2=emb/b)"
            )
        if sensor in out:
            raise ValueError(f"--embeddings names {sensor} twice")
        out[sensor] = Path(folder)
    return out


def load_for_evaluation(spec: dict[str, Path] | Path, query_split: Any = None) -> tuple[Any, Any]:
    """(evaluation source, what the report records as "embeddings") for one folder or one folder
    per sensor: the per-row columns now (and the ``query_split`` vectors when they fit), the
    vectors read shard by shard while searching."""
    from csmae.retrieval.protocol import cross_model_source, evaluation_source

    if isinstance(spec, Path):
        return evaluation_source(spec, query_split=query_split), str(spec.resolve())
    parts = {s: evaluation_source(p, query_split=query_split) for s, p in spec.items()}
    sources = {s: str(p.resolve()) for s, p in spec.items()}
    return cross_model_source(parts, sources=sources), sources


def _only_searches(folder: Path) -> bool:
    """An unfinished evaluation of a csmae from before partial markers: finished searches only."""
    return all(p.suffix == ".npz" and p.is_file() and not p.is_symlink() for p in folder.iterdir())


def _check_reused_precision(emb_dir: Path, precision: str) -> None:
    """Refuse to reuse descriptors computed in another precision than the one asked for."""
    from csmae.retrieval.artifacts import read_manifest
    from csmae.retrieval.embeddings import KIND

    had = read_manifest(emb_dir, kind=KIND).get("precision")
    if precision == "auto":  # what auto would choose here (embedding runs on CUDA when available)
        import torch

        from csmae.models.precision import device_bf16

        precision = "bf16" if device_bf16("cuda" if torch.cuda.is_available() else "cpu")[0] else "fp32"
    if had is not None and had != precision:
        raise ValueError(
            f"{emb_dir} holds descriptors computed in {had}, not {precision}: pass --precision {had} to "
            "use them, --overwrite to recompute, or another --embeddings-out"
        )


def run(args: argparse.Namespace) -> int:
    import shutil

    from tqdm import tqdm

    from csmae.retrieval.protocol import run_protocol
    from csmae.retrieval.report import write_report

    show_precision_choice()
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    out_dir = Path(args.out)
    if out_dir.exists() and not args.overwrite:  # before minutes of work, not after
        raise FileExistsError(f"{out_dir} already exists; choose another --out or pass --overwrite")
    from csmae.atomic import PARTIAL_MARKER, check_partial, check_replaceable, write_json_atomic
    from csmae.retrieval.report import REPORT_KIND

    if args.overwrite:
        check_replaceable(out_dir, REPORT_KIND)  # only a report is replaced
    resume_dir = out_dir.with_name(f"{out_dir.name}.partial")
    check_partial(resume_dir, "evaluate", legacy=_only_searches)  # a symlink or user folder: refused
    if args.embeddings:
        if args.model_dir:
            raise ValueError("give either MODEL_DIR DATASET or --embeddings, not both")
        unused = [flag for flag, given in (("--embeddings-out", args.embeddings_out is not None),
                                           ("--batch-size", args.batch_size != 64),
                                           ("--precision", args.precision != "fp32")) if given]
        if unused:  # never silently ignored: they are for computing descriptors from a model
            raise ValueError(f"with --embeddings nothing is embedded: {', '.join(unused)} do(es) not apply")
        spec = parse_embeddings(args.embeddings)
    else:
        if not args.model_dir or not args.dataset:
            raise ValueError("give MODEL_DIR and DATASET (or --embeddings EMB_DIR)")
        from csmae.retrieval.embed import embed_dataset

        emb_dir = Path(args.embeddings_out or f"{args.out.rstrip('/')}.embeddings")
        spec = emb_dir
        if emb_dir.exists() and not args.overwrite:
            _check_reused_precision(emb_dir, args.precision)
            print(f"reusing embeddings {emb_dir} (pass --overwrite to recompute)")
        else:
            bar = tqdm(total=0, unit="pair", desc="embed", dynamic_ncols=True)

            def progress(done: int, total: int) -> None:
                bar.total, bar.n = total, done
                bar.refresh()

            try:
                embed_dataset(
                    args.model_dir,
                    args.dataset,
                    emb_dir,
                    batch_size=args.batch_size,
                    precision=args.precision,
                    overwrite=args.overwrite,
                    on_progress=progress,
                    compiled=args.compile,
                )
            finally:
                bar.close()
    emb, recorded = load_for_evaluation(spec, args.queries)
    bar = tqdm(total=0, unit="query", desc="search", dynamic_ncols=True)

    def on_search(name: str, n: int, _: int) -> None:
        bar.set_description(name)
        bar.update(n)

    check_partial(resume_dir, "evaluate", legacy=_only_searches)  # again: embedding took a while
    if any(resume_dir.glob("*.npz")):
        print(f"resuming from the finished searches in {resume_dir}")
    resume_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(resume_dir / PARTIAL_MARKER, {"kind": "evaluate"})
    try:
        res = run_protocol(
            emb,
            query_split=args.queries,
            archive_split=args.archive,
            ks=ks,
            exclude_own_pair=args.exclude_own_pair,
            precision=args.search_precision,
            on_progress=on_search,
            resume_dir=resume_dir,
        )
    finally:
        bar.close()
    dataset = None
    if args.grids > 0:
        sources = args.data or args.dataset or (emb.manifest.get("dataset") or {}).get("sources") or []
        sources = [s for s in sources if Path(s).exists()]
        if sources:
            from csmae.data import open_dataset

            dataset = open_dataset(*sources, sensors=tuple(emb.rows.sensor_names))
        else:
            print("note: no dataset for previews; grids drawn without pictures")
    out = write_report(
        res,
        args.out,
        dataset=dataset,
        n_grid_queries=args.grids,
        overwrite=args.overwrite,
        extra={"embeddings": recorded, "embedding_precision": emb.manifest.get("precision")},
    )
    shutil.rmtree(resume_dir, ignore_errors=True)
    print((out / "metrics.md").read_text())
    print(f"wrote {out}")
    return 0
