"""Tuning the FAISS backend for a recall target: the cheapest efSearch / nprobe (and ivfpq re-rank
depth) whose recall@10 against exact search on sampled archive rows reaches it
(:meth:`~csmae.retrieval.backends.faiss.FaissBackend.tune`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from csmae.retrieval.backends import faiss as fb

if TYPE_CHECKING:
    from csmae.retrieval.backends.faiss import FaissBackend

log = logging.getLogger("csmae.retrieval.backends.faiss")  # the backend's log, as before the split


def tune(
    backend: FaissBackend,
    vectors: np.ndarray | None,
    *,
    target: float,
    n_queries: int = 500,
    seed: int = 0,
    truth: tuple[np.ndarray, np.ndarray] | None = None,
) -> float | None:
    """Smallest efSearch / nprobe (and, for ivfpq, re-rank depth) reaching recall@10 ``target``
    vs exact on sampled rows of ``vectors`` (the row ids 0..N-1 of this backend), or against
    ``truth`` = (queries, their exact top-10 row ids) for archives too big to hold; stores the
    setting in ``backend.params`` (``FaissBackend.tune``)."""

    def measure(params: dict[str, int]) -> float:
        if truth is None:
            assert vectors is not None
            return recall_at_k(backend, vectors, n_queries=n_queries, seed=seed, params=params)
        tq, tr = truth
        _, got = backend._search_index(
            np.ascontiguousarray(tq, dtype=np.float32), tr.shape[1], None, params
        )
        return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, tr)]))

    if not backend.approximate:
        return None
    name, values = tunable(backend)
    if name is None:
        return measure({})
    # kinds with an on-disk re-rank: more candidates lift the recall cap of the compressed codes
    reranks = [backend.rerank] if backend.store is None else [m * fb.RERANK for m in (1, 2, 4, 10)]
    # ivfpq aims 0.01 higher: at 1M x 768 nprobe 4 measured 0.955 on the tuning queries and
    # 0.945 on held-out ones (bench/README.md "## search"); with it: 0.978 at 1M, 0.955 at 5M
    aim = target + (0.01 if backend.store is not None else 0.0)
    best: tuple[float, int, int] | None = None  # recall, value, rerank
    for rr in reranks:
        prev, flat = -1.0, 0
        for v in values:
            extra = {"rerank": rr} if backend.store is not None else {}
            r = measure({name: v, **extra})
            if best is None or r > best[0] + 1e-9:
                best = (r, v, rr)
            flat = flat + 1 if r <= prev + 0.002 else 0
            if r >= aim or flat >= 2:  # reached, or the codes cap it
                break
            prev = max(prev, r)
        if best is not None and best[0] >= aim:
            break
    assert best is not None
    recall, v, rr = best
    if recall < target:
        log.warning(
            "%s cannot reach recall@10 %.3f on this archive (best %.3f at %s=%d, rerank %d); "
            "a kind with exact vectors (hnsw, exact) can",
            backend.factory,
            target,
            recall,
            name,
            v,
            rr,
        )
    backend.params[name] = v
    if backend.store is not None:
        backend.rerank = rr
    log.info("%s: %s=%d (rerank %d) gives recall@10 %.3f", backend.factory, name, v, backend.rerank, recall)
    return recall

def tunable(backend: FaissBackend) -> tuple[str | None, list[int]]:
    """The search parameter to tune and its candidate values (None: nothing to tune)."""
    if backend.hnsw:
        return "efSearch", [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    if backend.ivf is not None:
        return "nprobe", [
            p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if p <= backend.ivf.nlist
        ]
    return None, []


def recall_at_k(
    backend: FaissBackend,
    vectors: np.ndarray,
    *,
    k: int = 10,
    n_queries: int = 500,
    seed: int = 0,
    params: dict[str, int] | None = None,
    rows: np.ndarray | None = None,
) -> float:
    """Mean recall@k of ``backend`` against exact inner-product search on ``vectors`` (row i =
    row id i), sampled archive items as queries (each query's own row excluded from both lists).
    ``rows``: restrict both searches to these allowed rows (filtered recall)."""
    faiss = fb.faiss_module()
    allowed = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(allowed) < 2:
        return 1.0
    k = min(k, len(allowed) - 1)
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(allowed, size=min(n_queries, len(allowed)), replace=False))
    q = np.ascontiguousarray(vectors[qi], dtype=np.float32)
    _, e = faiss.knn(
        q, np.ascontiguousarray(vectors[allowed], dtype=np.float32), k + 1, metric=faiss.METRIC_INNER_PRODUCT
    )
    exact = allowed[e]
    _, approx = (
        backend._search_index(q, k + 1, rows, params)
        if rows is None
        else backend.search(q, k + 1, rows=rows, params=params)
    )
    hits = 0
    for row, own in enumerate(qi):
        ex = [j for j in exact[row] if j != own][:k]
        a = {j for j in approx[row] if j != own and j >= 0}
        hits += len(set(ex) & a)
    return hits / (k * len(qi))
