"""Blocked exact top-k == full stable argsort; per-sensor merge == search of the concatenation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csmae.retrieval.topk import exact_topk, l2_normalize, merge_topk

from .brute import rank


def _int_problem(seed: int, nq: int, na: int, d: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(-2, 3, (nq, d)).astype(np.float32), rng.integers(-2, 3, (na, d)).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    nq=st.integers(1, 12),
    na=st.integers(1, 60),
    d=st.integers(1, 8),
    block=st.integers(1, 5),
    precision=st.sampled_from(["bf16", "fp32"]),
    data=st.data(),
)
def test_blocked_topk_equals_stable_full_sort(seed, nq, na, d, block, precision, data):
    q, a = _int_problem(seed, nq, na, d)  # integer vectors: exact scores, many ties
    k = data.draw(st.integers(1, na))
    s, i = exact_topk(q, a, k, precision=precision, block_size=block)
    for r in range(nq):
        want = rank(q[r].tolist(), a.tolist())[:k]
        assert i[r].tolist() == want
        assert s[r].tolist() == [float(q[r].astype(float) @ a[j].astype(float)) for j in want]


def test_bf16_candidates_are_exact_on_float_data_with_duplicates():
    rng = np.random.default_rng(1)
    q = l2_normalize(rng.normal(size=(50, 64)))
    a = l2_normalize(rng.normal(size=(3000, 64)))
    a[100:3000:7] = a[3]  # many identical archive vectors
    a[5] = q[0]  # a perfect match
    s16, i16 = exact_topk(q, a, 30, precision="bf16", block_size=16)
    s32, i32 = exact_topk(q, a, 30, precision="fp32", block_size=50)
    assert np.array_equal(i16, i32) and np.array_equal(s16, s32)
    full = np.array([[np.dot(x.astype(np.float64), y.astype(np.float64)) for y in a] for x in q[:5]])
    for r in range(5):
        order = sorted(range(len(a)), key=lambda j: (-full[r, j], j))[:30]
        assert i16[r].tolist() == order
    assert i16[0, 0] == 5


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_rows_with_more_candidates_than_the_top_list_are_scanned_in_full(precision):
    """100 tied archive items for k=3: more candidates than the 4k-long top list holds."""
    from csmae.retrieval.topk import TopKStats

    rng = np.random.default_rng(2)
    a = l2_normalize(rng.normal(size=(400, 32)))
    q = l2_normalize(rng.normal(size=(6, 32)))
    a[50:250:2] = q[1]  # rows 50, 52, ..., 248 all equal query 1
    stats = TopKStats()
    s, i = exact_topk(q, a, 3, precision=precision, block_size=4, stats=stats)
    assert i[1].tolist() == [50, 52, 54]  # ties by archive order
    assert stats.candidates >= 100  # the tied items were all rescored: the full scan ran
    full = q.astype(np.float64) @ a.astype(np.float64).T
    for r in range(len(q)):
        assert i[r].tolist() == sorted(range(len(a)), key=lambda j: (-full[r, j], j))[:3]
        assert np.allclose(s[r], full[r, i[r]], rtol=0, atol=1e-12)  # float64 up to summation order


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    nq=st.integers(1, 8),
    n1=st.integers(1, 30),
    n2=st.integers(1, 30),
    d=st.integers(1, 6),
    data=st.data(),
)
def test_merge_equals_search_of_concatenation(seed, nq, n1, n2, d, data):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (nq, d)).astype(np.float32)
    a1 = rng.integers(-2, 3, (n1, d)).astype(np.float32)
    a2 = rng.integers(-2, 3, (n2, d)).astype(np.float32)
    k = data.draw(st.integers(1, n1 + n2))
    parts = [exact_topk(q, a1, min(k, n1)), exact_topk(q, a2, min(k, n2))]
    ms, mi = merge_topk(parts, [0, n1], k)
    ds, di = exact_topk(q, np.concatenate([a1, a2]), k)
    assert np.array_equal(mi, di)
    assert np.array_equal(ms, ds)


def test_exclusion_leaves_items_out():
    q, a = _int_problem(0, 6, 20, 4)
    excl = np.array([[0], [3], [-1], [19], [5], [5]])
    _, i = exact_topk(q, a, 19, exclude=excl)
    for r in range(6):
        want = rank(q[r].tolist(), a.tolist(), frozenset(x for x in excl[r] if x >= 0))[:19]
        assert i[r].tolist() == want
    with pytest.raises(ValueError, match="excluded"):
        exact_topk(q, a, 20, exclude=excl)


def test_bad_inputs():
    q, a = _int_problem(0, 2, 5, 3)
    with pytest.raises(ValueError, match="larger than the archive"):
        exact_topk(q, a, 6)
    with pytest.raises(ValueError, match="empty"):
        exact_topk(q, a[:0], 1)
    with pytest.raises(ValueError, match="dimension"):
        exact_topk(q, a[:, :2], 1)
    with pytest.raises(ValueError, match="precision"):
        exact_topk(q, a, 1, precision="int8")


def test_rescoring_is_independent_of_position_chunking_and_threads():
    import torch

    from csmae.retrieval import topk as tk

    rng = np.random.default_rng(2)
    a = torch.from_numpy(l2_normalize(rng.normal(size=(300, 96))))
    q = torch.from_numpy(l2_normalize(rng.normal(size=(40, 96)))).double()
    rows = torch.from_numpy(rng.integers(0, 40, 20000))
    cols = torch.from_numpy(rng.integers(0, 300, 20000))
    got = tk._rescore_chunks(q, a, rows, cols, 512)
    assert torch.equal(got, tk._rescore_chunks(q, a, rows, cols, 7))
    perm = torch.from_numpy(rng.permutation(20000))
    assert torch.equal(got[perm], tk._rescore_chunks(q, a, rows[perm], cols[perm], 33))
    exact = [
        float(np.dot(q[r].numpy(), a[c].numpy().astype(np.float64))) for r, c in zip(rows[:50], cols[:50])
    ]
    np.testing.assert_allclose(got[:50].numpy(), exact, rtol=0, atol=1e-15)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("order", ["row_col", "shuffled"])
@pytest.mark.parametrize("ranking", ["table", "lexsort"])
def test_select_block_ranks_rows_like_a_brute_force_sort(monkeypatch, threads, order, ranking):
    """The candidate selection (rows split over threads, each row ranked in a padded table or by
    lexsort) equals a brute-force (score desc, col asc) sort of each row's rescored candidates,
    ties (duplicate archive rows) included, whatever the thread count and the pairs' order."""
    import torch

    from csmae.retrieval import topk as tk

    monkeypatch.setattr(tk, "_MIN_PAIRS_PER_PART", 64)
    if ranking == "lexsort":  # the path of rows with very uneven candidate counts
        monkeypatch.setattr(tk, "_TABLE_EXTRA", -(10**9))
    rng = np.random.default_rng(5)
    base = l2_normalize(rng.normal(size=(60, 24)))
    a = torch.from_numpy(np.concatenate([base, base[:20]]))  # rows 60..79 tie with rows 0..19
    q = torch.from_numpy(l2_normalize(rng.normal(size=(30, 24)))).double()
    nq, k = 30, 7
    per_row = [np.sort(rng.choice(80, int(rng.integers(k, 80)), replace=False)) for _ in range(nq)]
    pairs = [(r, int(c)) for r in range(nq) for c in per_row[r]]
    if order == "shuffled":
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    rows = torch.tensor([p[0] for p in pairs])
    cols = torch.tensor([p[1] for p in pairs])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        s, i, n = tk._select_block(rows, cols, nq, q, a, k)
    finally:
        torch.set_num_threads(old)
    assert n == len(pairs) and s.shape == i.shape == (nq, k)
    for r in range(nq):
        cand = sorted({c for rr, c in pairs if rr == r})
        sc = [float(np.dot(q[r].numpy(), a[c].numpy().astype(np.float64))) for c in cand]
        want = sorted(zip(sc, cand), key=lambda t: (-t[0], t[1]))[:k]
        assert i[r].tolist() == [c for _, c in want]
        np.testing.assert_allclose(s[r], [v for v, _ in want], rtol=0, atol=1e-15)
    ties = [(r, c) for r in range(nq) for c in i[r] if c >= 60 and c - 60 in set(i[r].tolist())]
    assert ties, "the problem should rank some tied pairs side by side"



def test_bf16_error_model_holds_here_and_fallback_is_exact(monkeypatch, caplog):
    import torch

    from csmae.retrieval import topk

    rng = np.random.default_rng(4)
    q = l2_normalize(rng.normal(size=(64, 128)))
    a = l2_normalize(rng.normal(size=(700, 128)))
    qt, at = torch.from_numpy(q), torch.from_numpy(a)
    qh, ah = qt.bfloat16().float(), at.bfloat16().float()
    approx = qt.bfloat16() @ at.bfloat16().T
    assert topk._bound_holds(
        approx,
        qt,
        at,
        (qt - qh).norm(dim=1),
        qh.norm(dim=1),
        float((at - ah).norm(dim=1).max()),
        float(at.norm(dim=1).max()),
    )
    want = exact_topk(q, a, 20, precision="fp32")
    monkeypatch.setattr(topk, "_bound_holds", lambda *args: args[-1] == 0.0)  # bf16 fails, fp32 holds
    got = exact_topk(q, a, 20, precision="bf16", block_size=16)
    assert "less accurate than assumed" in caplog.text
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])
