"""The group-maxima candidate pass gives exactly the results of the top-4k-list pass and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csmae.retrieval.topk import TopKStats, _group_size, exact_topk, l2_normalize

from .brute import rank
from .problems import tie_problem


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    nq=st.integers(1, 9),
    na=st.integers(40, 700),
    k=st.integers(1, 12),
    precision=st.sampled_from(["bf16", "fp32"]),
)
def test_groups_equal_topk_list_and_brute_force_with_ties(seed, nq, na, k, precision):
    q, a, ex = tie_problem(seed, nq, na)  # integer vectors: exact scores, many ties
    k = min(k, na - 2)
    sg, ig = exact_topk(q, a, k, precision=precision, block_size=4, exclude=ex, selection="groups")
    st_, it = exact_topk(q, a, k, precision=precision, block_size=4, exclude=ex, selection="topk")
    assert np.array_equal(ig, it) and np.array_equal(sg, st_)
    for r in range(nq):
        drop = {int(j) for j in ex[r] if j >= 0}
        want = [j for j in rank(q[r].tolist(), a.tolist()) if j not in drop][:k]
        assert ig[r].tolist() == want


def test_groups_of_32_on_float_data_with_duplicates_and_a_ragged_tail():
    rng = np.random.default_rng(3)
    q = l2_normalize(rng.normal(size=(40, 48)))
    a = l2_normalize(rng.normal(size=(5003, 48)))  # 5003 = 156 groups of 32 + 11: padded tail
    a[200:5003:5] = a[7]  # many identical archive vectors (ties across groups)
    a[5000] = q[1]  # a perfect match in the padded last group
    k = 20
    assert _group_size(len(a), k) == 32
    stats = {m: TopKStats() for m in ("groups", "topk")}
    res = {m: exact_topk(q, a, k, block_size=16, selection=m, stats=stats[m]) for m in ("groups", "topk")}
    assert np.array_equal(res["groups"][1], res["topk"][1]) and np.array_equal(
        res["groups"][0], res["topk"][0]
    )
    assert res["groups"][1][1, 0] == 5000
    full = q.astype(np.float64) @ a.astype(np.float64).T
    for r in range(0, 40, 7):
        assert res["groups"][1][r].tolist() == sorted(range(len(a)), key=lambda j: (-full[r, j], j))[:k]
    assert stats["groups"].candidates >= 40 * k


def test_many_excluded_items_fall_back_to_the_topk_list():
    """Excluding whole groups can leave fewer than k finite group maxima: still exact."""
    rng = np.random.default_rng(4)
    q = l2_normalize(rng.normal(size=(3, 16)))
    a = l2_normalize(rng.normal(size=(400, 16)))
    k = 3
    ex = np.tile(np.arange(0, 396), (3, 1))  # only items 396..399 left
    s, i = exact_topk(q, a, k, exclude=ex, selection="groups")
    full = q.astype(np.float64) @ a[396:].astype(np.float64).T
    assert i.tolist() == (396 + np.argsort(-full, axis=1, kind="stable")[:, :k]).tolist()


def test_unknown_selection_is_refused():
    with pytest.raises(ValueError, match="selection"):
        exact_topk(np.ones((1, 2), np.float32), np.ones((3, 2), np.float32), 1, selection="heap")
