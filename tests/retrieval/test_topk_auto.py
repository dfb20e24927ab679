"""The candidate pass in ``auto`` precision (fp32 on CPUs without native bf16): identical results,
its own fp32 error bound, and matmuls kept in IEEE fp32 whatever the process asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from csmae.models import precision as prec
from csmae.retrieval import topk as tk
from csmae.retrieval.topk import TopKStats, exact_topk, l2_normalize

from .brute import rank
from .problems import tie_problem


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def auto_means(request, monkeypatch):
    """``auto`` on a CPU without, then with, native bf16; yields what it must resolve to."""
    native = request.param
    monkeypatch.setattr(prec, "cpu_bf16", lambda: (native, "pretend"))
    yield "bf16" if native else "fp32"


def test_auto_resolves_by_the_cpu(auto_means):
    assert tk.resolve_precision("auto") == auto_means
    assert tk.resolve_precision("fp32") == "fp32" and tk.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        tk.resolve_precision("int8")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    nq=st.integers(1, 9),
    na=st.integers(40, 500),
    k=st.integers(1, 12),
    selection=st.sampled_from(["groups", "topk"]),
)
def test_auto_equals_bf16_fp32_and_brute_force_with_ties(seed, nq, na, k, selection):
    q, a, ex = tie_problem(seed, nq, na)  # integer vectors: exact scores, many ties
    k = min(k, na - 2)
    got = {p: exact_topk(q, a, k, precision=p, block_size=4, exclude=ex, selection=selection)
           for p in ("auto", "bf16", "fp32")}
    for p in ("bf16", "fp32"):
        assert np.array_equal(got["auto"][1], got[p][1]) and np.array_equal(got["auto"][0], got[p][0])
    for r in range(nq):
        drop = {int(j) for j in ex[r] if j >= 0}
        assert got["auto"][1][r].tolist() == [j for j in rank(q[r].tolist(), a.tolist()) if j not in drop][:k]


def test_fp32_pass_on_float_data_matches_float64_sort_and_needs_few_candidates():
    """Float data with duplicates and near-ties: fp32 candidates give the float64 ranking; its error
    bound (D u32 |q||a|, no output rounding) is far tighter than bf16's, so fewer items are rescored."""
    rng = np.random.default_rng(5)
    q = l2_normalize(rng.normal(size=(64, 256)))
    a = l2_normalize(rng.normal(size=(6000, 256)))
    a[100:6000:9] = a[11]  # many identical archive vectors
    a[40] = q[3]
    a[41] = l2_normalize((q[3] + 1e-7 * rng.normal(size=256))[None])[0]  # a near-tie below fp32 rounding
    k = 25
    stats = {p: TopKStats() for p in ("fp32", "bf16")}
    res = {p: exact_topk(q, a, k, precision=p, block_size=16, stats=stats[p]) for p in ("fp32", "bf16")}
    assert np.array_equal(res["fp32"][1], res["bf16"][1]) and np.array_equal(res["fp32"][0], res["bf16"][0])
    full = q.astype(np.float64) @ a.astype(np.float64).T
    for r in range(0, 64, 5):
        assert res["fp32"][1][r].tolist() == sorted(range(len(a)), key=lambda j: (-full[r, j], j))[:k]
    assert res["fp32"][1][3, :2].tolist() in ([40, 41], [41, 40])
    assert stats["fp32"].candidates < stats["bf16"].candidates


def test_fp32_bound_holds_where_cancellation_is_worst():
    """The spot check of the fp32 bound on vectors built for rounding error (large entries that cancel)."""
    rng = np.random.default_rng(6)
    d = 768
    big = rng.normal(size=(48, d)).astype(np.float32) * np.float32(1e3)
    a = torch.from_numpy(np.concatenate([big, -big + rng.normal(size=(48, d)).astype(np.float32)]))
    q = torch.from_numpy(rng.normal(size=(32, d)).astype(np.float32) * np.float32(1e3))
    approx = q @ a.T
    qn = q.norm(dim=1)
    assert tk._bound_holds(approx, q, a, torch.zeros_like(qn), qn, 0.0, float(a.norm(dim=1).max()), 0.0)
    # and the check has teeth: errors 1000x the fp32 bound are caught
    noisy = approx + 1e3 * d * tk._U_FP32 * qn[:, None] * float(a.norm(dim=1).max())
    assert not tk._bound_holds(noisy, q, a, torch.zeros_like(qn), qn, 0.0, float(a.norm(dim=1).max()), 0.0)


def test_fp32_pass_computes_in_ieee_fp32_and_restores_the_setting(monkeypatch):
    """A process that set ``torch.set_float32_matmul_precision("medium")`` (oneDNN may then use bf16
    for fp32 matmuls) still gets exact results: the pass runs its matmuls at "highest"."""
    seen: list[str] = []
    real = tk._select_block

    def spy(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return real(*args, **kwargs)

    monkeypatch.setattr(tk, "_select_block", spy)
    rng = np.random.default_rng(7)
    q = l2_normalize(rng.normal(size=(8, 32)))
    a = l2_normalize(rng.normal(size=(300, 32)))
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        _, i = exact_topk(q, a, 5, precision="fp32")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)
    assert seen and set(seen) == {"highest"}
    full = q.astype(np.float64) @ a.astype(np.float64).T
    assert i.tolist() == np.argsort(-full, axis=1, kind="stable")[:, :5].tolist()


def test_an_fp32_matmul_outside_its_bound_is_refused(monkeypatch):
    """If the first block's spot check fails in fp32 (a BLAS in lower precision), no result is given."""
    monkeypatch.setattr(tk, "_bound_holds", lambda *a, **k: False)
    rng = np.random.default_rng(8)
    with pytest.raises(RuntimeError, match="less accurate than IEEE fp32"):
        exact_topk(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32), 2,
                   precision="fp32")


def test_protocol_records_the_candidate_precision_it_chose(auto_means):
    from csmae.retrieval.protocol import run_protocol
    from tests.retrieval.conftest import random_embeddings

    emb = random_embeddings(n_pairs=80, d=24)
    res = run_protocol(emb, ks=[5, 10])
    explicit = run_protocol(emb, ks=[5, 10], precision="bf16" if auto_means == "fp32" else "fp32")
    assert res.protocol["search_candidates"] == auto_means
    assert res.protocol["search_candidates_choice"]["requested"] == "auto"
    assert res.protocol["search_candidates_choice"]["used"] == auto_means
    assert res.metrics == explicit.metrics
    for name in res.rankings:
        assert all(np.array_equal(x, y) for x, y in zip(res.rankings[name], explicit.rankings[name]))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), nq=st.integers(1, 9), na=st.integers(40, 400), k=st.integers(1, 10))
def test_numpy_and_torch_blas_give_identical_results_with_ties(seed, nq, na, k):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (nq, 6)).astype(np.float32)
    a = rng.integers(-2, 3, (na, 6)).astype(np.float32)
    ex = rng.integers(-1, na, (nq, 2))
    k = min(k, na - 2)
    t = exact_topk(q, a, k, precision="fp32", block_size=4, exclude=ex, blas="torch")
    n = exact_topk(q, a, k, precision="fp32", block_size=4, exclude=ex, blas="numpy")
    assert np.array_equal(t[0], n[0]) and np.array_equal(t[1], n[1])
    for r in range(nq):
        drop = {int(j) for j in ex[r] if j >= 0}
        assert n[1][r].tolist() == [j for j in rank(q[r].tolist(), a.tolist()) if j not in drop][:k]


def test_numpy_blas_on_float_data_equals_the_float64_sort():
    rng = np.random.default_rng(9)
    q = l2_normalize(rng.normal(size=(40, 96)))
    a = l2_normalize(rng.normal(size=(3001, 96)))
    a[10:3001:4] = a[2]
    got = exact_topk(q, a, 15, precision="fp32", block_size=16, blas="numpy")
    assert np.array_equal(got[1], exact_topk(q, a, 15, precision="fp32", block_size=7, blas="torch")[1])
    full = q.astype(np.float64) @ a.astype(np.float64).T
    assert got[1].tolist() == np.argsort(-full, axis=1, kind="stable")[:, :15].tolist()


def test_which_blas_computes_the_candidates(monkeypatch):
    monkeypatch.setattr(prec, "is_x86", lambda: True)
    monkeypatch.setattr(tk, "_numpy_has_openblas", lambda: True)
    for vendor, want in (("AuthenticAMD", "numpy"), ("HygonGenuine", "numpy"), ("GenuineIntel", "torch"),
                         ("", "torch")):
        monkeypatch.setattr(prec, "cpu_vendor", lambda v=vendor: v)
        assert tk.candidate_blas("fp32") == want, vendor
        assert tk.candidate_blas("bf16") == "torch"  # numpy has no bf16
    monkeypatch.setattr(tk, "_numpy_has_openblas", lambda: False)
    assert tk.candidate_blas("fp32") == "torch"
    assert tk.candidate_blas("fp32", "numpy") == "numpy"
    with pytest.raises(ValueError, match="blas"):
        tk.candidate_blas("fp32", "blis")
