"""Every direction, the mixed archive, self/own-pair exclusion and k clamping of the protocol."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.retrieval import evaluate, evaluate_embeddings
from csmae.retrieval.metrics import METRICS
from csmae.retrieval.protocol import run_protocol
from csmae.retrieval.topk import l2_normalize

from .brute import metrics_all, rank
from .conftest import random_embeddings


def _brute_direction(q, a, exclude_ids_fn, ks):
    qv = l2_normalize(q.vectors).astype(float).tolist()
    av = l2_normalize(a.vectors).astype(float).tolist()
    q_sets = [set(np.flatnonzero(x).tolist()) for x in q.labels]
    a_sets = [set(np.flatnonzero(x).tolist()) for x in a.labels]
    ranked = []
    for i, v in enumerate(qv):
        ex = frozenset(j for j in range(len(av)) if exclude_ids_fn(i, j))
        ranked.append([a_sets[j] for j in rank(v, av, ex)])
    return {k: metrics_all(q_sets, ranked, k) for k in ks}


def test_reference_protocol_all_directions_match_brute_force():
    emb = random_embeddings(n_pairs=45, d=8, seed=1)
    ks = [1, 5, 10]
    res = run_protocol(emb, ks=ks)
    assert set(res.metrics) == {"s1->s1", "s1->s2", "s2->s1", "s2->s2", "s1->mixed", "s2->mixed"}
    for name, got in res.metrics.items():
        qs, a_s = name.split("->")
        q = emb.select(sensor=qs, split="val")
        if a_s == "mixed":
            a = emb.select(sensor="s1", split="test")
            a2 = emb.select(sensor="s2", split="test")
            a.vectors = np.concatenate([a.vectors, a2.vectors])
            a.labels = np.concatenate([a.labels, a2.labels])
        else:
            a = emb.select(sensor=a_s, split="test")
        want = _brute_direction(q, a, lambda i, j: False, ks)
        for k in ks:
            for m in METRICS:
                assert got[m][k] == pytest.approx(want[k][m], abs=1e-12), (name, m, k)


def test_mixed_merge_equals_direct_evaluation_of_concatenated_archive():
    emb = random_embeddings(n_pairs=90, d=12, seed=2)
    res = run_protocol(emb, ks=[3, 20])
    q = emb.select(sensor="s2", split="val")
    a = [emb.select(sensor=s, split="test") for s in ("s1", "s2")]
    direct = evaluate(
        q.vectors,
        q.labels,
        np.concatenate([x.vectors for x in a]),
        np.concatenate([x.labels for x in a]),
        ks=[3, 20],
    )
    assert res.metrics["s2->mixed"] == direct


@pytest.mark.parametrize("own_pair", [False, True])
def test_overlapping_splits_exclude_self_and_optionally_own_pair(own_pair):
    emb = random_embeddings(n_pairs=20, d=6, seed=3)
    emb.vectors[1::2] = emb.vectors[0::2]  # S2 vector == its S1 partner: the pair would rank first
    ks = [1, 4]
    res = run_protocol(emb, query_split="all", archive_split="all", ks=ks, exclude_own_pair=own_pair)
    assert res.protocol["exclude_self"] and res.protocol["exclude_own_pair"] == own_pair
    s1 = emb.select(sensor="s1")
    s2 = emb.select(sensor="s2")
    n = len(s1)
    for name, q, a, cross in [("s1->s1", s1, s1, False), ("s1->s2", s1, s2, True)]:
        want = _brute_direction(q, a, lambda i, j, c=cross: (i == j) and (not c or own_pair), ks)
        for m in METRICS:
            assert res.metrics[name][m][1] == pytest.approx(want[1][m], abs=1e-12)
    # mixed: archive = s1 items then s2 items
    mixed = s1.select()
    mixed.vectors = np.concatenate([s1.vectors, s2.vectors])
    mixed.labels = np.concatenate([s1.labels, s2.labels])
    want = _brute_direction(s1, mixed, lambda i, j: j == i or (own_pair and j == n + i), ks)
    for m in METRICS:
        assert res.metrics["s1->mixed"][m][4] == pytest.approx(want[4][m], abs=1e-12)
    top1 = res.rankings["s1->s2"][1][:, 0]
    assert (top1 == np.arange(n)).all() != own_pair  # the partner is found first unless excluded


def test_large_k_is_skipped_with_a_note_and_empty_archive_is_an_error():
    emb = random_embeddings(n_pairs=12, d=4, seed=4)  # 4 test pairs per sensor
    out = evaluate_embeddings(emb, ks=(2, 5, 100))
    assert set(out["directions"]["s1->s2"]["precision"]) == {2}
    assert set(out["directions"]["s1->mixed"]["precision"]) == {2, 5}
    assert any("skipped" in n for n in out["protocol"]["notes"])
    with pytest.raises(ValueError, match="empty"):
        run_protocol(emb, archive_split="nosuchsplit")
    with pytest.raises(ValueError, match="no s1 queries"):
        run_protocol(emb, query_split="nosuchsplit")


def test_interrupted_protocol_resumes_from_finished_searches(tmp_path, monkeypatch):
    import csmae.retrieval.eval_stream as protocol  # where the searches run (block by block)

    emb = random_embeddings(n_pairs=90, d=12, seed=5)
    want = run_protocol(emb, ks=[3, 10])
    real = protocol.exact_topk
    calls: list[int] = []

    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed in its third search
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol, "exact_topk", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(emb, ks=[3, 10], resume_dir=tmp_path / "partial")
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == ["s1-s1.npz", "s1-s2.npz"]

    calls.clear()
    monkeypatch.setattr(protocol, "exact_topk", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    got = run_protocol(emb, ks=[3, 10], resume_dir=tmp_path / "partial")
    assert len(calls) == 2  # only the two unfinished searches run again
    assert got.metrics == want.metrics
    for name in want.rankings:
        np.testing.assert_array_equal(got.rankings[name][1], want.rankings[name][1])
    assert got.timing["s1->s2"]["resumed"] and "resumed" not in got.timing["s2->s1"]

    # other inputs (k, vectors) or a damaged file: searched again, never trusted
    calls.clear()
    run_protocol(emb, ks=[3, 20], resume_dir=tmp_path / "partial")
    assert len(calls) == 4
    calls.clear()
    (tmp_path / "partial" / "s2-s2.npz").write_bytes(b"PK\x03\x04 cut short")
    emb.vectors[0] += 1.0  # an s1 vector in the train split: no query or archive changes...
    assert run_protocol(emb, ks=[3, 20], resume_dir=tmp_path / "partial").metrics
    assert len(calls) == 1  # ...so only the damaged s2->s2 is redone
    emb.vectors[emb.splits == "test"] *= -1.0
    calls.clear()
    run_protocol(emb, ks=[3, 20], resume_dir=tmp_path / "partial")
    assert len(calls) == 4
