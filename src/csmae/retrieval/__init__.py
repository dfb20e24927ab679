"""Retrieval: embed an archive, index it (exact or approximate FAISS), search, evaluate.

Public API::

    evaluate(query_emb, query_labels, archive_emb, archive_labels, ks=(5, 10)) -> {metric: {k: value}}
    Retriever.load(index_dir, *, model_dir=None, data=None), Hit
    load_embeddings(dir) -> Embeddings, embed_dataset(model_dir, sources, out, ...)
    build_index(emb, kind="exact", out=None) -> SearchIndex, SearchIndex.load(dir)
    evaluate_embeddings(emb, *, query_split="val", archive_split="test", ks=..., exclude_own_pair=False)
    exact_topk(queries, archive, k, ...), merge_topk(...)
"""

from __future__ import annotations

from typing import Any

from csmae.retrieval.metrics import METRICS, evaluate

__all__ = [
    "METRICS",
    "Embeddings",
    "Hit",
    "Retriever",
    "SearchIndex",
    "build_index",
    "embed_dataset",
    "evaluate",
    "evaluate_embeddings",
    "exact_topk",
    "load_embeddings",
    "merge_topk",
]

_LAZY = {
    "Embeddings": "csmae.retrieval.embeddings",
    "load_embeddings": "csmae.retrieval.embeddings",
    "embed_dataset": "csmae.retrieval.embed",
    "Hit": "csmae.retrieval.retriever",
    "Retriever": "csmae.retrieval.retriever",
    "SearchIndex": "csmae.retrieval.index",
    "build_index": "csmae.retrieval.index",
    "exact_topk": "csmae.retrieval.topk",
    "merge_topk": "csmae.retrieval.topk",
    "evaluate_embeddings": "csmae.retrieval.protocol",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'csmae.retrieval' has no attribute {name!r}")
