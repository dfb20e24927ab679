"""Fused S1+S2 queries against pure-Python references (tests/retrieval/brute.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csmae.retrieval.embeddings import embeddings_from_arrays
from csmae.retrieval.fusion import FUSED, fuse, fused_pairs, fused_query_map
from tests.retrieval import brute


def _emb(seed: int = 0, n: int = 40, dim: int = 6):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim))
    rows = {"ids": [], "sensors": [], "splits": [], "labels": [], "vectors": []}
    labels = rng.random((n, 5)) < 0.35
    splits = rng.choice(["val", "test"], size=n)
    for i in range(n):
        for s in ("s1", "s2"):
            if i % 9 == 4 and s == "s2":  # a pair without S2: never fused
                continue
            rows["ids"].append(f"p{i}")
            rows["sensors"].append(s)
            rows["splits"].append(str(splits[i]))
            rows["labels"].append(labels[i])
            rows["vectors"].append(base[i] + rng.normal(0, 0.8, dim) + (0.5 if s == "s1" else -0.5))
    return embeddings_from_arrays(ids=rows["ids"], sensors=rows["sensors"], splits=rows["splits"],
                                  labels=np.array(rows["labels"]),
                                  vectors=np.array(rows["vectors"], dtype=np.float32),
                                  manifest={"sensors": {"s1": {}, "s2": {}}})


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_fuse_is_the_renormalised_mean_of_unit_descriptors():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 4)), 3 * rng.standard_normal((5, 4))
    got = fuse(a, b)
    for i in range(5):
        want = _unit([x + y for x, y in zip(_unit(a[i].tolist()), _unit(b[i].tolist()), strict=True)])
        np.testing.assert_allclose(got[i], want, atol=1e-6)
    with pytest.raises(ValueError, match="cannot fuse"):
        fuse(a, b[:, :3])


def test_fused_query_map_matches_brute_force():
    emb = _emb()
    ids, vec, lab = fused_pairs(emb, split="val")
    assert all(int(p[1:]) % 9 != 4 for p in ids) and len(ids) > 5
    res = fused_query_map(emb, k=5)
    arch = [(i, s) for i, s, sp in zip(emb.ids, emb.sensors, emb.splits, strict=True) if sp == "test"]
    rows = {(i, s): r for r, (i, s) in enumerate(zip(emb.ids, emb.sensors, strict=True))}
    a_vec = [_unit(emb.vectors[rows[x]].astype(np.float64).tolist()) for x in arch]
    a_lab = [set(np.flatnonzero(emb.labels[rows[x]]).tolist()) for x in arch]
    assert res["archive"] == len(arch) and res["queries"] == len(ids)
    for name in ("s1", "s2", FUSED):
        qs, qls = [], []
        for pid in ids:
            v1 = _unit(emb.vectors[rows[(pid, "s1")]].astype(np.float64).tolist())
            v2 = _unit(emb.vectors[rows[(pid, "s2")]].astype(np.float64).tolist())
            q = {"s1": v1, "s2": v2}.get(name) or _unit([x + y for x, y in zip(v1, v2, strict=True)])
            qs.append(q)
            qls.append(set(np.flatnonzero(emb.labels[rows[(pid, "s1")]]).tolist()))
        ranked = [[a_lab[j] for j in brute.rank(q, a_vec)] for q in qs]
        want = brute.metrics_all(qls, ranked, 5)["map"]
        assert res[name] == pytest.approx(want, abs=1e-5), name


def test_nothing_to_fuse_is_an_error():
    emb = _emb().select(sensor="s1")
    with pytest.raises(ValueError, match="both S1 and S2"):
        fused_query_map(emb)
