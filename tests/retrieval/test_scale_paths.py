"""The fast paths of timelines and change detection at archive scale, against brute-force loops.

Each vectorised path (grouping rows by place, ISO times of a datetime column, rows among allowed
rows, place cells projected a zone at a time, change sums read a chunk at a time) is checked
against the per-row loop it replaces, on random input with the awkward cases (missing places,
removed rows, NaT, time zones, times before 1970, rows out of order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_rows_of_place_match_a_loop_over_the_rows():
    from csmae.retrieval.places import ArchivePlaces

    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 3000):
        keys = [None if rng.random() < 0.1 else "" if rng.random() < 0.02 else f"33N-{rng.integers(40)}-7"
                for _ in range(n)]
        live = rng.random(n) > 0.2
        items = pd.DataFrame({"place": pd.Series(keys, dtype=object)})
        ap = ArchivePlaces(items, ids=np.arange(n).astype(str).astype(object),
                           sensors=np.full(n, "s2", object), live=live, index_sensors=["s2"])
        want: dict[str, list[int]] = {}
        for r, (p, ok) in enumerate(zip(keys, live, strict=True)):
            if p is not None and ok:
                want.setdefault(p, []).append(r)
        for k in [*want, "01N-0-0"]:
            got = ap.rows_of_place(k)
            assert got.dtype == np.int64 and got.tolist() == want.get(k, [])


def test_iso_times_of_a_datetime_column_match_the_per_value_path():
    from csmae.geo.keys import iso_utc
    from csmae.geo.parquet import iso_list

    rng = np.random.default_rng(1)
    us = rng.integers(-2 * 10**15, 4 * 10**15, 5000)  # 1906 .. 2096, microseconds
    utc = pd.Series(pd.to_datetime(us, unit="us", utc=True))
    utc[::7] = pd.NaT
    columns = [utc, utc.dt.tz_convert("Europe/Vienna"), utc.dt.tz_localize(None),
               pd.Series(pd.to_datetime(us * 1000 + 999, unit="ns")),
               pd.Series(np.array(["0900-01-01", "2018-01-01"], dtype="datetime64[s]"))]
    for col in columns:
        want = [None if pd.isna(v) else iso_utc(v.to_pydatetime(warn=False)) for v in col]
        assert iso_list(col) == want
    assert iso_list(pd.Series([None, "2018-01-05T10:00:00+02:00"])) == [None, "2018-01-05T08:00:00Z"]


def test_rows_among_allowed_rows_match_isin():
    from csmae.retrieval.timeline import _among

    rng = np.random.default_rng(2)
    for n_allowed in (0, 1, 5, 1000):
        allowed = np.sort(rng.choice(2000, n_allowed, replace=False)).astype(np.int64)
        for rows in (np.zeros(0, np.int64), np.sort(rng.choice(2000, 40, replace=False)), np.array([1999])):
            want = rows[np.isin(rows, allowed)]
            assert _among(rows, allowed).tolist() == want.tolist()
        assert _among(np.array([3, 4]), None).tolist() == [3, 4]


def test_place_cells_a_zone_at_a_time_equal_place_polygon():
    import shapely

    from csmae.geo.place import place_polygon
    from csmae.retrieval.change_index import cell_polygons

    rng = np.random.default_rng(3)
    n = 400
    keys = [f"{z:02d}{h}-{c}-{r}" for z, h, c, r in zip(rng.integers(1, 61, n), rng.choice(["N", "S"], n),
                                                          rng.integers(140, 700, n), rng.integers(0, 8000, n),
                                                          strict=True)]
    keys += ["01N-140-100", "60S-699-8000", "33N-337-4451"]
    got = cell_polygons(np.array(keys, dtype=object))
    assert [shapely.to_wkb(g) for g in got] == [shapely.to_wkb(place_polygon(k)) for k in keys]
    assert len(cell_polygons([])) == 0


class _Rows:
    """A RowSource over an array that counts how many rows each read asks for."""

    def __init__(self, v: np.ndarray):
        self.v, self.shape, self.reads = v, v.shape, []

    def __len__(self) -> int:
        return len(self.v)

    def __getitem__(self, idx):
        self.reads.append(len(np.atleast_1d(idx)))
        return self.v[idx]


@pytest.mark.parametrize("pairing", ["auto", "s2->s1"])
def test_change_scores_read_in_chunks_and_shuffled_equal_the_array_path(monkeypatch, pairing):
    from csmae.retrieval import change
    from tests.retrieval.test_change import AFTER, BEFORE, _archive, _brute

    places, sensors, times, vecs, valid = _archive(seed=7, n_places=40)
    ref = change.change_scores(places, sensors, times, vecs, before=BEFORE, after=AFTER, pairing=pairing,
                               valid=valid)
    perm = np.random.default_rng(4).permutation(len(places))
    src = _Rows(vecs[perm])
    real = change._unit_rows
    monkeypatch.setattr(change, "_unit_rows", lambda v, rows: real(v, rows, chunk=5))
    got = change.change_scores(places[perm], sensors[perm], times[perm], src, before=BEFORE, after=AFTER,
                               pairing=pairing, valid=valid[perm])
    assert max(src.reads) <= 5  # read a chunk at a time, never the whole array
    for f in ("places", "pairing", "n_before", "n_after"):
        assert getattr(got, f).tolist() == getattr(ref, f).tolist()
    np.testing.assert_allclose(got.score, ref.score, rtol=0, atol=1e-12)
    if pairing != "auto":
        want = _brute(places, sensors, times, vecs, valid, *pairing.split("->"))
        np.testing.assert_allclose(got.score, [want[p][0] for p in got.places], atol=1e-6)


def test_group_sums_add_each_group_in_row_order():
    from csmae.retrieval.change import _group_sum

    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 30, 300)
    inv = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    v = rng.standard_normal((len(inv), 6))
    want = np.zeros((len(sizes), 6))
    for i, g in enumerate(inv):  # ((0 + v_a) + v_b) + ...: the loop a reader would write
        want[g] = want[g] + v[i]
    assert np.array_equal(_group_sum(inv, v, len(sizes)), want)


def test_live_rows_of_new_items_match_a_dict_of_every_live_row():
    from csmae.retrieval.index_grow import _live_rows_of

    rng = np.random.default_rng(6)
    for n in (0, 1, 500):
        ids = [f"p{rng.integers(300)}" for _ in range(n)]
        sensors = [str(s) for s in rng.choice(["s1", "s2"], n)]
        seen, live = set(), []
        for k in zip(ids, sensors, strict=True):  # a removed row may share its key with a live one
            live.append(k not in seen and bool(rng.random() > 0.2))
            if live[-1]:
                seen.add(k)
        items = pd.DataFrame({"id": pd.Series(ids, dtype="str"), "sensor": pd.Series(sensors, dtype="str"),
                              "live": np.array(live, bool)})
        where = {(i, s): r for r, (i, s, ok) in enumerate(zip(ids, sensors, live, strict=True)) if ok}
        new_ids = np.array([f"p{rng.integers(400)}" for _ in range(60)], dtype=object)
        new_s = rng.choice(["s1", "s2"], 60).astype(object)
        got = _live_rows_of(items, new_ids, new_s)
        assert got.tolist() == [where.get(k, -1) for k in zip(new_ids.tolist(), new_s.tolist(), strict=True)]
