"""Retrieval metrics of method.md section 7, vectorised over queries and over many k at once.

For a query q with label set Lq and a retrieved item r with label set Lr::

    prec_r = |Lq & Lr| / |Lr|          rec_r = |Lq & Lr| / |Lq|

- ``precision`` / ``recall`` @k: mean of prec_r / rec_r over the top k, then over queries.
- ``f1`` @k (reference definition): 2PR / (P + R) of the averaged P@k and R@k (0 when P + R = 0).
- ``f1_item`` @k: mean over the top k of 2 prec_r rec_r / (prec_r + rec_r) (0 without overlap), then
  over queries.
- ``map`` @k: relevance rel_i = shares at least one label; AP@k = (1/Nrel@k) sum_{i<=k} rel_i P(i),
  P(i) = precision of the first i results, Nrel@k = relevant items in the top k (AP = 0 when none).
- ``wmap`` @k: as ``map`` with ACG(i) = (1/i) sum_{j<=i} |Lq & Lr_j| in place of P(i).

Conventions for degenerate labels (never met on BigEarthNet 19-class data, documented here): an item
with no label has prec_r = 0; a query with no label has rec_r = 0 (and no relevant item).
Ranking: cosine similarity on L2-normalised vectors, ties broken by archive order (see topk.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METRICS: tuple[str, ...] = ("precision", "recall", "f1", "f1_item", "map", "wmap")


def pack_labels(labels: np.ndarray) -> np.ndarray:
    """Bool multi-hot (N, L) -> (N, W) uint64 bit sets (W = ceil(L / 64)) for fast intersections."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D multi-hot array (N, L), got shape {labels.shape}")
    if labels.dtype != np.bool_:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be boolean multi-hot (0/1 values)")
        labels = labels.astype(bool)
    n, n_labels = labels.shape
    w = max(1, -(-n_labels // 64))
    padded = np.zeros((n, w * 64), dtype=bool)
    padded[:, :n_labels] = labels
    bits = np.packbits(padded.reshape(n, w, 64), axis=-1, bitorder="little")  # (N, W, 8) uint8
    return np.ascontiguousarray(bits).view(np.uint64).reshape(n, w)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).sum(-1, dtype=np.int64)


def _check_ks(ks: Iterable[int], k_max: int) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out:
        raise ValueError("no k given")
    if out[0] < 1:
        raise ValueError(f"every k must be >= 1, got {out}")
    if out[-1] > k_max:
        raise ValueError(f"k={out[-1]} is larger than the ranked lists ({k_max} results per query)")
    return out


def metrics_from_overlaps(
    inter: np.ndarray, n_query: np.ndarray, n_item: np.ndarray, ks: Sequence[int]
) -> dict[str, dict[int, float]]:
    """Metrics from label-overlap counts of ranked results.

    Args:
        inter: (Q, K) |Lq & Lr_i| for the i-th result of each query, in rank order.
        n_query: (Q,) |Lq|.
        n_item: (Q, K) |Lr_i|.
        ks: cut-offs (each <= K).

    Returns:
        {metric: {k: value}} averaged over the Q queries; every value is in [0, 1] except ``wmap``
        (ACG counts shared labels, so wmAP is in label units, up to the number of classes).
    """
    inter = np.asarray(inter, dtype=np.float64)
    if inter.ndim != 2 or inter.shape[0] == 0:
        raise ValueError(f"need at least one query with ranked results, got overlaps of shape {inter.shape}")
    ks = _check_ks(ks, inter.shape[1])
    kmax = ks[-1]
    inter = inter[:, :kmax]
    n_item = np.asarray(n_item, dtype=np.float64)[:, :kmax]
    n_query = np.asarray(n_query, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(n_item > 0, inter / n_item, 0.0)
        rec = np.where(n_query > 0, inter / n_query, 0.0)
        f1r = np.where(inter > 0, 2 * prec * rec / (prec + rec), 0.0)
    rel = (inter > 0) & (n_query > 0)
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    n_rel = np.cumsum(rel, axis=1)  # (Q, K)
    p_i = n_rel / ranks  # precision of the first i results
    acg_i = np.cumsum(inter, axis=1) / ranks
    ap_num = np.cumsum(rel * p_i, axis=1)
    wap_num = np.cumsum(rel * acg_i, axis=1)
    c_prec = np.cumsum(prec, axis=1)
    c_rec = np.cumsum(rec, axis=1)
    c_f1r = np.cumsum(f1r, axis=1)
    out: dict[str, dict[int, float]] = {m: {} for m in METRICS}
    for k in ks:
        j = k - 1
        p = float(np.mean(c_prec[:, j] / k))
        r = float(np.mean(c_rec[:, j] / k))
        out["precision"][k] = p
        out["recall"][k] = r
        out["f1"][k] = 2 * p * r / (p + r) if p + r > 0 else 0.0
        out["f1_item"][k] = float(np.mean(c_f1r[:, j] / k))
        nr = n_rel[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["map"][k] = float(np.mean(np.where(nr > 0, ap_num[:, j] / nr, 0.0)))
            out["wmap"][k] = float(np.mean(np.where(nr > 0, wap_num[:, j] / nr, 0.0)))
    return out


class OverlapAccumulator:
    """Collect label overlaps of ranked results block by block, then compute the metrics once."""

    def __init__(self, archive_labels: np.ndarray):
        self._archive_bits = pack_labels(archive_labels)
        self._n_item = _popcount(self._archive_bits)
        self._inter: list[np.ndarray] = []
        self._nq: list[np.ndarray] = []
        self._ni: list[np.ndarray] = []

    def add(self, query_labels: np.ndarray, ranked: np.ndarray) -> None:
        """query_labels: (B, L) bool; ranked: (B, K) archive indices in rank order."""
        qb = pack_labels(query_labels)  # (B, W)
        ab = self._archive_bits[ranked]  # (B, K, W)
        self._inter.append(_popcount(ab & qb[:, None, :]).astype(np.int16))
        self._nq.append(_popcount(qb))
        self._ni.append(self._n_item[ranked].astype(np.int16))

    def compute(self, ks: Sequence[int]) -> dict[str, dict[int, float]]:
        if not self._inter:
            raise ValueError("no queries were added")
        return metrics_from_overlaps(
            np.concatenate(self._inter), np.concatenate(self._nq), np.concatenate(self._ni), ks
        )


def ranked_metrics(
    query_labels: np.ndarray, archive_labels: np.ndarray, ranked: np.ndarray, ks: Sequence[int]
) -> dict[str, dict[int, float]]:
    """Metrics of ranked archive indices (Q, K) given multi-hot labels of queries and archive."""
    query_labels = np.asarray(query_labels)
    archive_labels = np.asarray(archive_labels)
    if query_labels.shape[1:] != archive_labels.shape[1:]:
        raise ValueError(
            f"query labels have {query_labels.shape[1:]} classes, archive labels {archive_labels.shape[1:]}"
        )
    acc = OverlapAccumulator(archive_labels)
    acc.add(query_labels, np.asarray(ranked, dtype=np.int64))
    return acc.compute(ks)


def evaluate(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    archive_emb: np.ndarray,
    archive_labels: np.ndarray,
    ks: Sequence[int] = (5, 10),
    *,
    exclude: np.ndarray | None = None,
    precision: str = "auto",
    block_size: int = 1024,
) -> dict[str, dict[int, float]]:
    """Exact retrieval metrics of queries against an archive (cosine similarity, stable ties).

    Args:
        query_emb: (Q, D) descriptors (any scale; L2-normalised here).
        query_labels: (Q, L) bool multi-hot.
        archive_emb: (N, D) descriptors.
        archive_labels: (N, L) bool multi-hot.
        ks: cut-offs. A k larger than the archive raises ``ValueError`` (callers that want clamping,
            like ``csmae evaluate``, drop such k with a note).
        exclude: optional (Q, m) archive indices to leave out per query (-1 = none), e.g. the query
            itself when queries and archive overlap.
        precision: candidate pass of the exact search (``"auto"``: bf16 where this CPU runs bf16
            matmuls natively, else fp32; ``"bf16"`` or ``"fp32"``; identical results).
        block_size: queries per block.

    Returns:
        {metric: {k: value}} for metric in precision, recall, f1, f1_item, map, wmap.
    """
    from csmae.retrieval.topk import exact_topk, l2_normalize

    query_emb = np.asarray(query_emb)
    archive_emb = np.asarray(archive_emb)
    if len(query_emb) == 0:
        raise ValueError("no queries to evaluate")
    if len(archive_emb) == 0:
        raise ValueError("the archive is empty: nothing to search")
    if len(query_labels) != len(query_emb) or len(archive_labels) != len(archive_emb):
        raise ValueError(
            f"labels and descriptors differ in length: queries {len(query_labels)} vs {len(query_emb)}, "
            f"archive {len(archive_labels)} vs {len(archive_emb)}"
        )
    ks = list(ks)
    kmax = max(_check_ks(ks, 10**18))
    _, idx = exact_topk(
        l2_normalize(query_emb),
        l2_normalize(archive_emb),
        kmax,
        exclude=exclude,
        precision=precision,
        block_size=block_size,
    )
    return ranked_metrics(query_labels, archive_labels, idx, ks)
