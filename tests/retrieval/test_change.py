"""Change detection functions against brute-force per-place loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from csmae.retrieval.change import (
    Period,
    change_scores,
    pixel_change_scores,
    precision_at_k,
    robust_z,
    roc_auc,
)

BEFORE = Period.parse("2018-04-01/2018-06-01")
AFTER = Period.parse("2018-08-01/2018-10-01")
DATES = np.array(["2018-04-10", "2018-05-20", "2018-07-01", "2018-08-15", "2018-09-20"],
                 dtype="datetime64[s]")


def _archive(seed: int = 0, n_places: int = 30, dim: int = 8):
    rng = np.random.default_rng(seed)
    places, sensors, times, vecs = [], [], [], []
    for p in range(n_places):
        for t in DATES:
            for s in ("s1", "s2"):
                if rng.random() < 0.2:  # missing acquisitions
                    continue
                places.append(None if p == 0 else f"33N-{p}-1")
                sensors.append(s)
                times.append(t)
                vecs.append(rng.standard_normal(dim))
    valid = rng.random(len(places)) > 0.15
    return (np.array(places, dtype=object), np.array(sensors, dtype=object), np.array(times),
            np.array(vecs, dtype=np.float32), valid)


def _unit(v):
    return v / np.linalg.norm(v)


def _brute(places, sensors, times, vecs, valid, a, b):
    """{place: (distance, n_before, n_after)} by loops over places."""
    out = {}
    for p in sorted({p for p in places if p is not None}):
        rows_b = [i for i in range(len(places)) if places[i] == p and sensors[i] == a and valid[i]
                  and np.datetime64("2018-04-01") <= times[i] < np.datetime64("2018-06-01")]
        rows_a = [i for i in range(len(places)) if places[i] == p and sensors[i] == b and valid[i]
                  and np.datetime64("2018-08-01") <= times[i] < np.datetime64("2018-10-01")]
        if rows_b and rows_a:
            db = _unit(sum(_unit(vecs[i].astype(np.float64)) for i in rows_b))
            da = _unit(sum(_unit(vecs[i].astype(np.float64)) for i in rows_a))
            out[p] = (1 - float(db @ da), len(rows_b), len(rows_a))
    return out


@pytest.mark.parametrize("pairing", ["s2->s2", "s1->s1", "s2->s1", "s1->s2"])
def test_change_scores_match_brute_force(pairing):
    places, sensors, times, vecs, valid = _archive()
    res = change_scores(places, sensors, times, vecs, before=BEFORE, after=AFTER, pairing=pairing,
                        valid=valid)
    want = _brute(places, sensors, times, vecs, valid, *pairing.split("->"))
    assert set(res.places) == set(want) and len(res) == len(want) > 10
    for p, s, nb, na, pr in zip(res.places, res.score, res.n_before, res.n_after, res.pairing, strict=True):
        assert s == pytest.approx(want[p][0], abs=1e-5) and (nb, na) == want[p][1:] and pr == pairing
    assert np.all(np.diff(res.score) <= 1e-12)  # ranked, highest first
    assert [r["rank"] for r in res.top(3).to_records()] == [1, 2, 3]


def test_auto_pairing_prefers_s2_and_ranks_by_z_within_pairing():
    places, sensors, times, vecs, valid = _archive(seed=1)
    res = change_scores(places, sensors, times, vecs, before=BEFORE, after=AFTER, valid=valid)
    per = {pr: _brute(places, sensors, times, vecs, valid, *pr.split("->"))
           for pr in ("s2->s2", "s1->s1", "s2->s1", "s1->s2")}
    got = dict(zip(res.places, res.pairing, strict=True))
    for p in got:  # the first pairing with acquisitions in both periods
        first = next(pr for pr in ("s2->s2", "s1->s1", "s2->s1", "s1->s2") if p in per[pr])
        assert got[p] == first
    for pr in set(got.values()):
        sel = res.pairing == pr
        np.testing.assert_allclose(res.rank_score[sel], robust_z(res.score[sel]))
    assert np.all(np.diff(res.rank_score) <= 1e-12)


def test_pixel_baseline_matches_brute_force():
    places, sensors, times, _, valid = _archive(seed=2)
    rng = np.random.default_rng(3)
    images = rng.standard_normal((len(places), 2, 4, 4)).astype(np.float32)
    keys, dist = pixel_change_scores(places, sensors, times, images, before=BEFORE, after=AFTER, sensor="s1",
                                     valid=valid)
    for p, d in zip(keys, dist, strict=True):
        rb = [i for i in range(len(places)) if places[i] == p and sensors[i] == "s1" and valid[i]
              and BEFORE.start <= times[i] < BEFORE.end]
        ra = [i for i in range(len(places)) if places[i] == p and sensors[i] == "s1" and valid[i]
              and AFTER.start <= times[i] < AFTER.end]
        want = np.abs(np.mean(images[ra], axis=0) - np.mean(images[rb], axis=0)).mean()
        assert d == pytest.approx(float(want), rel=1e-5)
    assert len(keys) > 10


def test_auc_and_precision_at_k_match_pair_counting():
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        s = np.round(rng.random(n), 1)  # ties
        y = rng.random(n) < 0.4
        if y.all() or not y.any():
            continue
        pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
        assert roc_auc(s, y) == pytest.approx(np.mean(pairs))
        k = int(rng.integers(1, n + 1))
        order = sorted(range(n), key=lambda i: (-s[i], i))[:k]
        assert precision_at_k(s, y, k) == pytest.approx(np.mean(y[order]))
    assert roc_auc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc(np.array([1.0, 2.0]), np.array([True, True]))


def test_periods_parse_and_reject_bad_input():
    p = Period.parse("2018-04-01/2018-06-01T12:00:00Z")
    assert p.contains(np.array(["2018-06-01T11:59:59", "2018-06-01T12:00:00", "NaT"], dtype="datetime64[s]")
                      ).tolist() == [True, False, False]
    for bad in ("2018-04-01", "2018-06-01/2018-04-01", "spring/autumn"):
        with pytest.raises(ValueError, match="START/END|after START"):
            Period.parse(bad)
    with pytest.raises(ValueError, match="unknown sensor pairing"):
        change_scores([], [], np.array([], "datetime64[s]"), np.zeros((0, 2)), before=BEFORE, after=AFTER,
                      pairing="s3->s1")


def test_change_vectors_and_change_like_search_match_brute_force():
    from csmae.retrieval.change import change_vectors, similar_changes

    places, sensors, times, vecs, valid = _archive(seed=5)
    keys, deltas = change_vectors(places, sensors, times, vecs, before=BEFORE, after=AFTER, pairing="s2->s1",
                                  valid=valid)
    raw = {}
    for p in sorted({p for p in places if p is not None}):
        def period_mean(s, lo, hi, p=p):
            rows = [i for i in range(len(places)) if places[i] == p and sensors[i] == s and valid[i]
                    and np.datetime64(lo) <= times[i] < np.datetime64(hi)]
            return _unit(sum(_unit(vecs[i].astype(np.float64)) for i in rows)) if rows else None

        b, a = period_mean("s2", "2018-04-01", "2018-06-01"), period_mean("s1", "2018-08-01", "2018-10-01")
        if b is not None and a is not None:
            raw[p] = a - b
    mean = sum(raw.values()) / len(raw)
    assert list(keys) == sorted(raw)
    for k, d in zip(keys, deltas, strict=True):
        np.testing.assert_allclose(d, raw[k] - mean, atol=1e-5)
    query = keys[3]
    found, sims = similar_changes(keys, deltas, query)
    cos = {k: float(_unit(raw[k] - mean) @ _unit(raw[query] - mean)) for k in raw if k != query}
    assert list(found) == sorted(cos, key=lambda k: (-cos[k], k))
    np.testing.assert_allclose(sims, [cos[k] for k in found], atol=1e-5)
    with pytest.raises(ValueError, match="no acquisitions in both periods"):
        similar_changes(keys, deltas, "01N-0-0")
