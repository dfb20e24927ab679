"""Every metric against the independent brute force of brute.py, on random data (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csmae.retrieval import METRICS, evaluate
from csmae.retrieval.metrics import metrics_from_overlaps, pack_labels, ranked_metrics
from csmae.retrieval.topk import l2_normalize

from .brute import metrics_all, rank

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    """Small integer-valued vectors (many exact similarity ties) and random multi-hot labels,
    including items with many labels and items/queries with none."""
    d = draw(st.integers(1, 6))
    n_lab = draw(st.integers(1, 70))  # > 64 exercises multi-word bit sets
    nq = draw(st.integers(1, 6))
    na = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    vals = draw(st.sampled_from([(-1, 2), (-2, 3), (0, 2)]))
    q = rng.integers(*vals, size=(nq, d)).astype(np.float32)
    a = rng.integers(*vals, size=(na, d)).astype(np.float32)
    q[np.abs(q).sum(1) == 0, 0] = 1.0
    a[np.abs(a).sum(1) == 0, 0] = 1.0
    density = draw(st.sampled_from([0.05, 0.3, 0.9]))
    ql = rng.random((nq, n_lab)) < density
    al = rng.random((na, n_lab)) < density
    ks = draw(st.lists(st.integers(1, na), min_size=1, max_size=4))
    return q, ql, a, al, ks


def _brute(q, ql, a, al, ks):
    an = l2_normalize(a).astype(float).tolist()
    ranked = [rank(qi, an) for qi in l2_normalize(q).astype(float).tolist()]
    q_sets = [set(np.flatnonzero(x).tolist()) for x in ql]
    a_sets = [set(np.flatnonzero(x).tolist()) for x in al]
    return {k: metrics_all(q_sets, [[a_sets[j] for j in r] for r in ranked], k) for k in ks}


@SETTINGS
@given(problems())
def test_evaluate_matches_brute_force(p):
    q, ql, a, al, ks = p
    got = evaluate(q, ql, a, al, ks=ks)
    want = _brute(q, ql, a, al, ks)
    assert set(got) == set(METRICS)
    for k in ks:
        for m in METRICS:
            assert got[m][k] == pytest.approx(want[k][m], abs=1e-12), (m, k)


@SETTINGS
@given(problems())
def test_fp32_and_bf16_candidate_passes_agree(p):
    q, ql, a, al, ks = p
    assert evaluate(q, ql, a, al, ks=ks, precision="fp32") == evaluate(q, ql, a, al, ks=ks, precision="bf16")


def test_random_float_vectors_match_brute_force():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(7, 16)).astype(np.float32)
    a = rng.normal(size=(40, 16)).astype(np.float32)
    a[5] = a[9]  # an exact duplicate: tie broken by archive order
    ql = rng.random((7, 19)) < 0.2
    al = rng.random((40, 19)) < 0.2
    ks = [1, 5, 40]
    got = evaluate(q, ql, a, al, ks=ks)
    want = _brute(q, ql, a, al, ks)
    for k in ks:
        for m in METRICS:
            assert got[m][k] == pytest.approx(want[k][m], abs=1e-12)


def test_hand_computed_example():
    # query labels {0, 1}; ranked items: {0}, {2}, {0, 1, 2}
    inter = np.array([[1, 0, 2]])
    n_item = np.array([[1, 1, 3]])
    out = metrics_from_overlaps(inter, np.array([2]), n_item, [1, 3])
    assert out["precision"][3] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert out["recall"][3] == pytest.approx((0.5 + 0 + 1) / 3)
    p, r = out["precision"][3], out["recall"][3]
    assert out["f1"][3] == pytest.approx(2 * p * r / (p + r))
    assert out["f1_item"][3] == pytest.approx((2 / 3 + 0 + 0.8) / 3)
    assert out["map"][3] == pytest.approx((1 + 2 / 3) / 2)
    assert out["wmap"][3] == pytest.approx((1 + 1) / 2)  # ACG(1)=1, ACG(3)=(1+0+2)/3
    assert out["map"][1] == 1.0


def test_k_larger_than_archive_is_an_error():
    q = np.ones((2, 3), np.float32)
    a = np.ones((4, 3), np.float32)
    lab_q, lab_a = np.ones((2, 19), bool), np.ones((4, 19), bool)
    with pytest.raises(ValueError, match="larger than the archive"):
        evaluate(q, lab_q, a, lab_a, ks=(5,))


def test_empty_inputs_are_errors():
    lab = np.ones((2, 19), bool)
    with pytest.raises(ValueError, match="archive is empty"):
        evaluate(np.ones((2, 3)), lab, np.zeros((0, 3)), np.zeros((0, 19), bool))
    with pytest.raises(ValueError, match="no queries"):
        evaluate(np.zeros((0, 3)), np.zeros((0, 19), bool), np.ones((2, 3)), lab)
    with pytest.raises(ValueError, match="dimension"):
        evaluate(np.ones((2, 3)), lab, np.ones((5, 4)), np.ones((5, 19), bool), ks=(1,))


def test_labels_must_be_multi_hot():
    with pytest.raises(ValueError, match="multi-hot"):
        pack_labels(np.array([[0, 2, 1]]))
    with pytest.raises(ValueError, match="classes"):
        ranked_metrics(np.ones((1, 19), bool), np.ones((3, 18), bool), np.array([[0, 1]]), [1])


def test_pack_labels_round_trip():
    rng = np.random.default_rng(0)
    lab = rng.random((10, 130)) < 0.5
    bits = pack_labels(lab)
    assert bits.shape == (10, 3)
    back = np.unpackbits(bits.view(np.uint8).reshape(10, -1), axis=1, bitorder="little")[:, :130].astype(bool)
    assert np.array_equal(back, lab)
