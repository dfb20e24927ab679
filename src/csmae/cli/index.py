"""Build one search index over both sensors' descriptors of an embeddings folder.

Kinds: exact (FAISS IndexFlatIP, default), hnsw (HNSW32), hnsw-sq8 (HNSW32 over 8-bit quantised
vectors: a third of the memory, approximate scores), ivf (IVF with sqrt-sized lists), or any FAISS
factory string (e.g. "IVF4096_HNSW32,PQ96"). Cosine similarity = inner product on
L2-normalised vectors. Approximate kinds are tuned (efSearch / nprobe) to reach --target-recall
recall@10 against exact search on a sample, and the measured recall is stored in manifest.json.

Examples:
  csmae index emb/reben --out idx/reben
  csmae index emb/big --out idx/big-hnsw --kind hnsw
  csmae index emb/big --out idx/big-sq8 --kind hnsw-sq8     # 1M x 768: 1.0 GB instead of 3.3 GB
  csmae index emb/reben --out idx/reben-m --backend milvus --uri archive.db        # Milvus Lite, in-process
  csmae index emb/big --out idx/big-m --backend milvus --uri http://host:19530    # a Milvus server

Milvus (optional extra: pip install 'csmae[milvus]'; docs/milvus.md): the vectors and filter columns go
to a new collection at --uri; the index folder keeps manifest.json + items.parquet, and every csmae
command (search, evaluate --index, serve) uses it unchanged. Kinds: exact (FLAT), hnsw, ivf, ivf-sq8
or a Milvus index type.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("embeddings", help="embeddings folder (csmae embed)")
    p.add_argument("--out", required=True, help="output index folder")
    p.add_argument("--kind", default="exact", help="exact | hnsw | hnsw-sq8 | ivf | FAISS factory string")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 to tune approximate kinds to")
    p.add_argument("--recall-queries", type=int, default=500, help="sampled queries for the recall check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (only once complete)")
    p.add_argument("--backend", default="faiss", choices=["faiss", "milvus"], help="vector backend")
    p.add_argument("--uri", default=None, help="milvus: path ending .db (Milvus Lite) or http://host:19530")
    p.add_argument("--collection", default=None, help="milvus: collection name (default: new, unique)")


def run(args: argparse.Namespace) -> int:
    from csmae.retrieval.index import build_index

    si = build_index(
        args.embeddings,
        args.kind,
        args.out,
        target_recall=args.target_recall,
        recall_queries=args.recall_queries,
        overwrite=args.overwrite,
        backend=args.backend,
        uri=args.uri,
        collection=args.collection,
    )
    m = si.manifest
    extra = ""
    if m.get("recall_at_10") is not None:
        extra = f", recall@10 {m['recall_at_10']:.3f} vs exact with {m['search_params']}"
    ranges = ", ".join(f"{s}: {hi - lo:,}" for s, (lo, hi) in m["sensor_ranges"].items())
    print(
        f"wrote {args.out}: {m['factory']} over {m['count']:,} vectors ({ranges}), D={m['dim']}, "
        f"built in {m['build_seconds']:.1f}s{extra}"
    )
    return 0
