"""Independent pure-Python reference implementations (no numpy in the maths) for the metric tests."""

from __future__ import annotations

import math


def dot(a: list[float], b: list[float]) -> float:
    """Exactly rounded inner product (products of float32 values are exact in float64)."""
    return math.fsum(x * y for x, y in zip(a, b))


def rank(q: list[float], archive: list[list[float]], exclude: frozenset[int] = frozenset()) -> list[int]:
    """Archive indices by inner product descending, ties by archive index.

    Cosine = inner product of the L2-normalised float32 descriptors (the documented first step;
    callers pass normalised vectors), so exact ties stay exact ties.
    """
    scores = [(dot(q, a), j) for j, a in enumerate(archive) if j not in exclude]
    return [j for _, j in sorted(scores, key=lambda t: (-t[0], t[1]))]


def metrics_one(ql: set[int], ranked_labels: list[set[int]], k: int) -> dict[str, float]:
    """Per-query values of every metric at k, written straight from method.md section 7."""
    top = ranked_labels[:k]
    precs, recs, f1s, rels, inters = [], [], [], [], []
    for lr in top:
        inter = len(ql & lr)
        p = inter / len(lr) if lr else 0.0
        r = inter / len(ql) if ql else 0.0
        precs.append(p)
        recs.append(r)
        f1s.append(2 * p * r / (p + r) if inter > 0 else 0.0)
        rels.append(1 if inter > 0 else 0)
        inters.append(inter)
    ap = wap = 0.0
    nrel = sum(rels)
    for i in range(1, k + 1):
        if rels[i - 1]:
            ap += sum(rels[:i]) / i
            wap += sum(inters[:i]) / i
    return {
        "precision": sum(precs) / k,
        "recall": sum(recs) / k,
        "f1_item": sum(f1s) / k,
        "map": ap / nrel if nrel else 0.0,
        "wmap": wap / nrel if nrel else 0.0,
    }


def metrics_all(qls: list[set[int]], ranked: list[list[set[int]]], k: int) -> dict[str, float]:
    per = [metrics_one(q, r, k) for q, r in zip(qls, ranked)]
    out = {m: sum(p[m] for p in per) / len(per) for m in per[0]}
    p, r = out["precision"], out["recall"]
    out["f1"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return out
