"""Evaluation of the demo's models with the retrieval package: every direction, the uni-modal
baseline pair, a chance level, the effect check and the real-sample pass.

The uni-modal baseline answers S1 items with the S1-only MAE and S2 items with the S2-only MAE (two
descriptor spaces of the same dimension that nobody aligned): its embeddings are the S1 rows of
one model and the S2 rows of the other, evaluated by the same protocol as CSMAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.retrieval.embeddings import Embeddings
from csmae.retrieval.protocol import ProtocolResult, run_protocol

CROSS = ("s1->s2", "s2->s1")
UNI = ("s1->s1", "s2->s2")
DIRECTIONS = ("s1->s1", "s2->s2", "s1->s2", "s2->s1", "s1->mixed", "s2->mixed")
#: the effect counts as shown when CSMAE beats the baseline by at least this much (mAP@10, absolute)
#: in both cross-modal directions, and loses at most this much in both uni-modal ones.
MARGIN = 0.05


def combine(parts: Sequence[Embeddings], *, name: str) -> Embeddings:
    """Rows of several embeddings in one object (e.g. S1 rows of one model + S2 rows of another)."""
    if len({p.dim for p in parts}) != 1:
        raise ValueError(f"cannot combine embeddings of dimensions {[p.dim for p in parts]}")
    man = dict(parts[0].manifest)
    man["sensors"] = {s: {} for p in parts for s in p.sensor_names}
    man["model"] = {"name": name, "parts": [p.manifest.get("model") for p in parts], "dim": parts[0].dim}
    cols = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("ids", "sensors", "splits", "labels",
                                                                        "vectors")}
    return Embeddings(**cols, manifest=man)


def random_like(emb: Embeddings, *, seed: int) -> Embeddings:
    """The same rows with random Gaussian descriptors: retrieval at chance level."""
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal(emb.vectors.shape).astype(np.float32)
    man = {**emb.manifest, "model": {"name": "random descriptors (chance level)", "dim": emb.dim}}
    return Embeddings(emb.ids, emb.sensors, emb.splits, emb.labels, vec, man)


def evaluate_all(embs: dict[str, Embeddings], *, ks: Sequence[int], seed: int) -> dict[str, ProtocolResult]:
    """Protocol results for "csmae", "mae" (S1-MAE + S2-MAE) and "random"."""
    csmae = embs["csmae"]
    mae = combine([embs["mae_s1"].select(sensor="s1"), embs["mae_s2"].select(sensor="s2")],
                  name="MAE S1-only + MAE S2-only")
    return {
        "csmae": run_protocol(csmae, ks=ks),
        "mae": run_protocol(mae, ks=ks),
        "random": run_protocol(random_like(csmae, seed=seed), ks=ks),
    }


def metric(res: ProtocolResult | dict[str, Any], direction: str, name: str, k: int) -> float:
    d: dict[str, Any] = res.metrics if isinstance(res, ProtocolResult) else res
    table: dict[Any, float] = d[direction][name]
    return float(table[k] if k in table else table[str(k)])


@dataclass
class Effect:
    """The paper's main effect, measured: cross-modal gains and uni-modal differences (mAP@k)."""

    k: int
    cross_gain: dict[str, float]
    uni_diff: dict[str, float]
    shown: bool
    rule: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "cross_gain": self.cross_gain, "uni_diff": self.uni_diff, "shown": self.shown,
                "rule": self.rule, "values": self.values}


def effect(results: dict[str, ProtocolResult], *, k: int = 10, margin: float = MARGIN) -> Effect:
    """Is CSMAE's cross-modal mAP@k clearly above the uni-modal MAEs', uni-modal comparable?"""
    vals = {m: {d: metric(results[m], d, "map", k) for d in DIRECTIONS} for m in ("csmae", "mae", "random")}
    gain = {d: vals["csmae"][d] - vals["mae"][d] for d in CROSS}
    diff = {d: vals["csmae"][d] - vals["mae"][d] for d in UNI}
    shown = all(g >= margin for g in gain.values()) and all(x >= -margin for x in diff.values())
    rule = (f"shown when CSMAE's mAP@{k} exceeds the uni-modal MAEs' by at least {margin:.2f} in both "
            f"cross-modal directions and is at most {margin:.2f} below them in both uni-modal directions")
    return Effect(k=k, cross_gain=gain, uni_diff=diff, shown=shown, rule=rule, values=vals)


# ----------------------------------------------------------------------------- real samples
def partner_ranks(emb: Embeddings, query: str, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every ``query``-sensor item, the 1-based rank of its co-registered ``target`` item among
    all ``target`` items (cosine); also the full score matrix and target order (for grids)."""
    from csmae.retrieval.normalize import l2_normalize

    q = emb.select(sensor=query)
    a = emb.select(sensor=target)
    pos = {pid: i for i, pid in enumerate(a.ids.tolist())}
    scores = l2_normalize(q.vectors) @ l2_normalize(a.vectors).T  # (Nq, Na)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.array([int(np.flatnonzero(order[i] == pos[pid])[0]) + 1
                      for i, pid in enumerate(q.ids.tolist())])
    return ranks, scores, order


def rank_summary(ranks: np.ndarray, n: int) -> dict[str, float]:
    return {"n": int(len(ranks)), "archive": int(n), "top1": float(np.mean(ranks == 1)),
            "top5": float(np.mean(ranks <= 5)), "median_rank": float(np.median(ranks)),
            "mrr": float(np.mean(1.0 / ranks))}


def chance_summary(n: int) -> dict[str, float]:
    """Expected values of :func:`rank_summary` for a uniformly random rank among ``n``."""
    r = np.arange(1, n + 1)
    return {"n": 0, "archive": n, "top1": 1.0 / n, "top5": min(5, n) / n, "median_rank": float(np.median(r)),
            "mrr": float(np.mean(1.0 / r))}


def real_pass(embs: dict[str, Embeddings], *, ks: Sequence[int]) -> dict[str, Any]:
    """Cross-sensor search among the real pairs: co-registered partner ranks and label metrics."""
    csmae = embs["csmae"]
    mae = combine([embs["mae_s1"].select(sensor="s1"), embs["mae_s2"].select(sensor="s2")],
                  name="MAE S1-only + MAE S2-only")
    n = int((csmae.sensors == "s2").sum())
    out: dict[str, Any] = {"pairs": n, "partner": {}, "labels": {}, "chance": chance_summary(n)}
    for name, emb in (("csmae", csmae), ("mae", mae)):
        out["partner"][name] = {}
        for q, t in (("s1", "s2"), ("s2", "s1")):
            ranks, _, _ = partner_ranks(emb, q, t)
            out["partner"][name][f"{q}->{t}"] = rank_summary(ranks, n)
        res = run_protocol(emb, query_split="all", archive_split="all", ks=[k for k in ks if k < n],
                           exclude_own_pair=True)
        out["labels"][name] = res.metrics
    return out
