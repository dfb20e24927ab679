"""Build a search index over descriptors, or grow / shrink one in place.

Build: kinds exact (FAISS Flat, default), hnsw (HNSW32), hnsw-sq8 (HNSW32 over 8-bit quantised
vectors: a third of the memory, approximate scores), ivf (IVF with sqrt-sized lists), ivfpq (IVF
with 4-bit PQ codes in RAM, D/8 bytes a vector, re-ranked exactly from on-disk float16 vectors: for
archives beyond RAM), or any FAISS factory string. Cosine similarity = inner product on
L2-normalised vectors. Approximate kinds are tuned (efSearch / nprobe / re-rank depth) to reach
--target-recall recall@10 against exact search on a sample; the measured recall is stored.

Update in place (crash-safe: a kill leaves the old or the new index, never a mix):
  add IDX EMB_DIR        append new embeddings (same model, D, sensors, band order); an (id, sensor)
                         already in the index is replaced, and the command says so; items repeating
                         the place, sensor and acquisition of an item of another scene grid (the
                         overlap of neighbouring tiles tiled apart) are left out and reported
                         (--keep-duplicates adds them; docs/places.md)
  remove IDX --ids FILE  remove items; FILE lines are "ID" (every sensor) or "ID SENSOR"
  remove IDX --scene S   remove every item of a scene csmae ingest added (repeatable); a scene left
                         without items loses its ingest record, so csmae ingest takes it again
  compact IDX            rebuild an HNSW graph without removed rows (other kinds need nothing)
A running `csmae serve` picks the new version up on POST /api/reload (or a restart).

Examples:
  csmae index emb/reben --out idx/reben
  csmae index emb/big --out idx/big-hnsw --kind hnsw
  csmae index emb/big --out idx/big-pq --kind ivfpq          # 1M x 768: ~0.1 GB RAM + 1.5 GB on disk
  csmae index add idx/reben emb/new-scenes
  csmae index remove idx/reben --ids withdrawn.txt
  csmae index remove idx/mine --scene S2B_MSIL2A_20240805T102559_N0511_R108_T32TMT_20240805T143022
  csmae index emb/reben --out idx/reben-m --backend milvus --uri archive.db        # Milvus Lite, in-process
  csmae index emb/big --out idx/big-m --backend milvus --uri http://host:19530    # a Milvus server

Milvus (optional extra: pip install 'csmae[milvus]'; docs/milvus.md): the vectors and filter columns go
to a new collection at --uri; the index folder keeps manifest.json + items.parquet, and every csmae
command that opens an index (search, serve, index add/remove) uses it unchanged. Kinds: exact (FLAT),
hnsw, ivf, ivf-sq8 or a Milvus index type.
"""

from __future__ import annotations

import argparse

OPS = ("add", "remove", "compact")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="+",
        metavar="EMB_DIR | add IDX EMB_DIR | remove IDX | compact IDX",
        help="embeddings folder to build from, or an update of an existing index",
    )
    p.add_argument("--out", help="output index folder (build)")
    from csmae.retrieval.backends import registry

    default = registry.get_spec(registry.default_backend())
    p.add_argument("--kind", default="exact", help=default.kinds)
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 to tune approximate kinds to")
    p.add_argument("--recall-queries", type=int, default=500, help="sampled queries for the recall check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (only once complete)")
    p.add_argument("--ids", help="remove: file of ids ('ID' or 'ID SENSOR' per line)")
    p.add_argument("--missing-ok", action="store_true", help="remove: ignore ids not in the index")
    p.add_argument("--scene", action="append", default=None, metavar="NAME",
                   help="remove: every item of this ingested scene (repeatable; drops its ingest record)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="add: also add items that repeat the place, sensor and acquisition of an item of "
                        "another scene grid (overlapping tiles tiled apart; default: left out and reported)")
    p.add_argument(
        "--backend", default=default.name, choices=registry.backend_names(), help="vector backend"
    )
    for opt, engines in registry.cli_options():  # each engine's own options (BackendSpec.options)
        p.add_argument(opt.flag, dest=opt.name, default=None, help=f"{', '.join(engines)}: {opt.help}")


#: options each update takes (a build takes every option but these)
UPDATE_OPTIONS: dict[str, tuple[str, ...]] = {"add": ("keep_duplicates",),
                                              "remove": ("ids", "missing_ok", "scene"), "compact": ()}


def _given(args: argparse.Namespace) -> dict[str, str]:
    """dest -> flag of every option given a value other than its default."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    defaults = vars(p.parse_args(["x"]))
    flags = {a.dest: a.option_strings[0] for a in p._actions if a.option_strings}
    return {d: flags[d] for d, v in vars(args).items() if d in flags and v != defaults.get(d)}


def _refuse_foreign_options(args: argparse.Namespace, op: str | None) -> None:
    """An option the operation does not take is an error, never silently ignored."""
    given = _given(args)
    if op is None:
        foreign = sorted(f for d, f in given.items() if d in UPDATE_OPTIONS["remove"] + UPDATE_OPTIONS["add"])
        why = "they are for csmae index add / remove"
        what = "building an index"
    else:
        foreign = sorted(f for d, f in given.items() if d not in UPDATE_OPTIONS[op])
        names = ", ".join(f"--{d.replace('_', '-')}" for d in UPDATE_OPTIONS[op])
        why = f"it changes IDX in place and takes {names or 'no options'}"
        what = f"csmae index {op}"
    if foreign:
        raise ValueError(f"{what} does not take {', '.join(foreign)} ({why})")


def run(args: argparse.Namespace) -> int:
    t = args.target
    if t[0] in OPS and len(t) >= 2:
        _refuse_foreign_options(args, t[0])
        return _update(args)
    _refuse_foreign_options(args, None)
    if len(t) != 1:
        raise ValueError(f"expected one embeddings folder or one of {OPS}, got {t}")
    if not args.out:
        raise ValueError("building an index needs --out FOLDER")
    from csmae.retrieval.backends.registry import cli_options
    from csmae.retrieval.index import build_index

    si = build_index(
        t[0],
        args.kind,
        args.out,
        target_recall=args.target_recall,
        recall_queries=args.recall_queries,
        overwrite=args.overwrite,
        backend=args.backend,
        **{opt.name: getattr(args, opt.name) for opt, _ in cli_options()},
    )
    m = si.manifest
    extra = ""
    if m.get("recall_at_10") is not None:
        extra = f", recall@10 {m['recall_at_10']:.3f} vs exact with {m['search_params']}"
    counts = ", ".join(f"{s}: {c:,}" for s, c in m["sensor_counts"].items())
    print(
        f"wrote {args.out}: {m['factory']} over {m['count']:,} vectors ({counts}), D={m['dim']}, "
        f"built in {m['build_seconds']:.1f}s{extra}"
    )
    _say_duplicates(si)
    return 0


def _examples(found: list[dict[str, str]]) -> str:
    return ", ".join(f"{d['id']} ({d['sensor']}) as {d['kept']}" for d in found[:3])


def _say_duplicates(si: object) -> None:
    """Report items of separately tiled overlapping scenes that repeat the same ground (kept in a build)."""
    from csmae.retrieval.dedupe import find_duplicates

    items = getattr(si, "items", None)
    if items is None or "place" not in items:
        return
    found = find_duplicates(items["id"], items["sensor"], items)
    if found.count:
        print(f"note: {found.count:,} items repeat the same place, sensor and acquisition as items of "
              f"another scene grid (overlapping scenes tiled apart), e.g. {_examples(found.examples)}; tile "
              "them in one run, or build from one and `csmae index add` the others, to keep each once "
              "(docs/places.md)")


def _update(args: argparse.Namespace) -> int:
    from csmae.retrieval import index_grow

    op, idx, rest = args.target[0], args.target[1], args.target[2:]
    if op == "add":
        if len(rest) != 1:
            raise ValueError("usage: csmae index add IDX EMB_DIR")
        rep = index_grow.add_embeddings(idx, rest[0], duplicates="keep" if args.keep_duplicates else "drop")
        if rep.duplicates:
            what = ("added anyway (--keep-duplicates)" if rep.duplicates_added else
                    "not added (--keep-duplicates adds them)")
            print(f"{rep.duplicates:,} items repeat the same place, sensor and acquisition as items of "
                  f"another scene grid, e.g. {_examples(rep.duplicate_examples or [])}: {what}")
        if rep.replaced:
            print(
                f"replaced {rep.replaced:,} items already in the index (same id and sensor), e.g. "
                + ", ".join(f"{i} ({s})" for i, s in (rep.replaced_ids or [])[:5])
            )
        print(
            f"added {rep.added:,} new items to {idx}: {rep.count:,} items (version {rep.generation}), "
            f"{rep.seconds:.1f}s"
        )
    elif op == "remove":
        if rest or not (args.ids or args.scene):
            raise ValueError("usage: csmae index remove IDX --ids FILE | --scene NAME")
        keys = index_grow.read_id_file(args.ids) if args.ids else []
        rep = index_grow.remove_items(idx, keys, missing_ok=args.missing_ok, scenes=args.scene or ())
        print(
            f"removed {rep.removed:,} items from {idx}: {rep.count:,} items left (version {rep.generation})"
        )
        if rep.forgotten:
            gone = ", ".join(rep.forgotten)
            print(f"ingest records dropped (no item left; csmae ingest takes them again): {gone}")
    else:
        if rest:
            raise ValueError("usage: csmae index compact IDX")
        rep = index_grow.compact_index(idx)
        print(
            f"compacted {idx}: {rep.removed:,} removed rows dropped from the graph (version {rep.generation})"
        )
    return 0
