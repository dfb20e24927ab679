"""The Milvus backend against brute force, on Milvus Lite (in-process, tmp dirs) and on a real Milvus
standalone server (``milvus_deploy``: tests/retrieval/conftest.py)."""

from __future__ import annotations

import datetime as dt
import socket
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

shapely = pytest.importorskip("shapely")

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'csmae[milvus]')")

from csmae.retrieval.backends import milvus as M  # noqa: E402
from csmae.retrieval.backends.base import check_result  # noqa: E402
from csmae.retrieval.filters import Filter, FilterColumns  # noqa: E402

D = 16
N = 240
NAMES = [f"L{i}" for i in range(6)]
COUNTRIES = ["Portugal", "Austria", "Serbia"]


def make_items(n: int, seed: int, start: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Random unit vectors and an items table with every filter column (some values missing)."""
    import shapely

    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, D)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    lon, lat = rng.uniform(-10, 10, n), rng.uniform(35, 45, n)
    geoms = [  # tilted quadrilaterals: their bbox and footprint differ near corners
        shapely.to_wkb(shapely.Polygon([(x, y), (x + 1, y + 0.4), (x + 0.6, y + 1.4), (x - 0.4, y + 1)]))
        if i % 7
        else None
        for i, (x, y) in enumerate(zip(lon, lat))
    ]
    # 60 days, ~4 items a day, sub-second times: date bounds fall between items of the same day
    t = pd.to_datetime(1_527_811_200 + rng.uniform(0, 60 * 86400, n), unit="s", utc=True)
    t = t.where(np.arange(n) % 5 != 0)
    items = pd.DataFrame(
        {
            "id": [f"p{start + i:05d}" for i in range(n)],
            "sensor": np.where(np.arange(n) % 2 == 0, "s1", "s2"),
            "split": rng.choice(["train", "val", "test"], n),
            "labels": list(rng.random((n, len(NAMES))) < 0.3),
            "country": pd.Series(rng.choice(COUNTRIES, n), dtype=object).where(np.arange(n) % 6 != 1, None),
            "season": rng.choice(["Spring", "Summer", "Fall", "Winter"], n),
            "datetime": t,
            "geometry": geoms,
        }
    )
    return v, items


def brute(q: np.ndarray, v: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows among ``allowed`` by inner product, -1 padded (the independent reference)."""
    s = q @ v.T
    s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(s, order, axis=1)
    order[~np.isfinite(top)] = -1
    return top, order


@pytest.fixture(scope="module")
def lite(milvus_deploy):
    """The module's collection (on Lite or the server, as ``milvus_deploy`` says)."""
    v, items = make_items(N, seed=1)
    be = M.create(milvus_deploy.uri("t"), dim=D, label_names=NAMES, name_hint="hyp")
    be.add(np.arange(N), v, items)
    yield be, v, items
    be.close()


FIELDS = {
    "sensor": st.lists(st.sampled_from(["s1", "s2"]), min_size=1, max_size=2),
    "split": st.lists(st.sampled_from(["train", "val", "test"]), min_size=1, max_size=2),
    "labels_any": st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
    "labels_all": st.lists(st.sampled_from(NAMES), min_size=1, max_size=2),
    "labels_none": st.lists(st.sampled_from(NAMES), min_size=1, max_size=2),
    "country": st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=2),
    "season": st.lists(st.sampled_from(["Spring", "Summer", "Fall", "Winter"]), min_size=1, max_size=2),
    "start": st.dates(min_value=dt.date(2018, 5, 25), max_value=dt.date(2018, 8, 5)),
    "end": st.dates(min_value=dt.date(2018, 6, 1), max_value=dt.date(2018, 8, 5)),
    "bbox": st.tuples(st.floats(-12, 8), st.floats(33, 43), st.floats(0.1, 12), st.floats(0.1, 8)).map(
        lambda b: (b[0], b[1], min(180.0, b[0] + b[2]), min(90.0, b[1] + b[3]))
    ),
}
# at most three fields at once, so that most filters leave items to rank
filters = st.sets(st.sampled_from(sorted(FIELDS)), max_size=3).flatmap(
    lambda keys: st.fixed_dictionaries({key: FIELDS[key] for key in keys})
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters, k=st.integers(1, 30), qseed=st.integers(0, 10_000))
def test_filtered_flat_search_equals_brute_force(lite, f, k, qseed):
    be, v, items = lite
    if f.get("start") and f.get("end") and f["start"] > f["end"]:
        f["start"], f["end"] = f["end"], f["start"]
    flt = Filter.from_dict(f)
    allowed = flt.mask(FilterColumns(items, label_names=NAMES))
    q = np.random.default_rng(qseed).normal(size=(3, D)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores, rows = be.search(q, k, rows=np.flatnonzero(allowed), where=flt)
    check_result(scores, rows, 3, k)
    ref_s, ref_r = brute(q, v, allowed, k)
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(scores[rows >= 0], ref_s[ref_r >= 0], rtol=1e-5, atol=1e-5)
    # the expression alone (no allowed rows) selects exactly the mask, except that bbox is tested on
    # the footprint's bounds there (a superset the allowed rows narrow down)
    _, got = be.search(q[:1], N, where=flt)
    got_set = set(got[0][got[0] >= 0].tolist())
    if flt.bbox is None:
        assert got_set == set(np.flatnonzero(allowed).tolist())
    else:
        bounds = np.array(
            [
                shapely.bounds(shapely.from_wkb(g)) if g is not None else [np.nan] * 4
                for g in items["geometry"]
            ]
        )
        w, s_, e, n = flt.bbox
        with np.errstate(invalid="ignore"):
            bb = (bounds[:, 2] >= w) & (bounds[:, 0] <= e) & (bounds[:, 3] >= s_) & (bounds[:, 1] <= n)
        loose = flt.replace(bbox=None).mask(FilterColumns(items, label_names=NAMES)) & bb
        assert got_set == set(np.flatnonzero(loose).tolist()) >= set(np.flatnonzero(allowed).tolist())


@pytest.mark.parametrize(
    "f",
    [
        {"sensor": ["s2"]},
        {"split": ["val", "test"]},
        {"labels_any": ["L1", "L4"]},
        {"labels_all": ["L0", "L2"]},
        {"labels_none": ["L3"]},
        {"country": ["Portugal", "Serbia"]},
        {"season": ["Summer"]},
        {"start": "2018-06-10"},
        {"end": "2018-06-10"},
        {"start": "2018-06-10", "end": "2018-06-10"},
        {"start": "2018-06-03", "end": "2018-07-20", "country": ["Austria"], "labels_none": ["L0"]},
    ],
)
def test_expression_selects_exactly_the_mask(lite, f):
    """Each field on its own: the Milvus expression's result set is the Filter's mask."""
    be, v, items = lite
    flt = Filter.from_dict(f)
    allowed = flt.mask(FilterColumns(items, label_names=NAMES))
    assert 0 < allowed.sum() < N
    _, got = be.search(v[:1], N, where=flt)
    assert set(got[0][got[0] >= 0].tolist()) == set(np.flatnonzero(allowed).tolist())


def test_rows_narrower_than_the_filter_refetch_then_list(lite):
    """Allowed rows far narrower than the expression (worst case of the exactness loop)."""
    be, v, items = lite
    flt = Filter(sensor=["s1"])
    allowed = np.zeros(N, bool)
    allowed[[0, 2, 100, 238]] = True
    q = v[[5, 7]]
    scores, rows = be.search(q, 6, rows=np.flatnonzero(allowed), where=flt)
    _, ref_r = brute(q, v, allowed, 6)
    np.testing.assert_array_equal(rows, ref_r)
    assert (rows[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all()


def test_rows_without_filter_and_reconstruct(lite):
    be, v, _ = lite
    allowed = np.zeros(N, bool)
    allowed[50:90] = True
    _, rows = be.search(v[:4], 5, rows=np.flatnonzero(allowed))
    np.testing.assert_array_equal(rows, brute(v[:4], v, allowed, 5)[1])
    np.testing.assert_allclose(be.reconstruct(np.array([9, 3, 9])), v[[9, 3, 9]], atol=1e-6)
    with pytest.raises(KeyError, match="not in Milvus collection"):
        be.reconstruct(np.array([N + 5]))
    with pytest.raises(ValueError, match="D=16"):
        be.search(np.zeros((1, 8), np.float32), 3)
    with pytest.raises(ValueError, match="at most 16384"):
        be.search(v[:1], 20_000)


def test_add_remove_round_trip_matches_fresh_build(tmp_path, milvus_deploy):
    v1, it1 = make_items(80, seed=3)
    v2, it2 = make_items(50, seed=4, start=80)
    grown = M.create(milvus_deploy.uri("a"), dim=D, label_names=NAMES)
    grown.add(np.arange(80), v1, it1)
    grown.add(np.arange(80, 130), v2, it2)
    gone = np.array([0, 5, 81, 129])
    grown.remove(gone)
    assert len(grown) == 126 and grown.n_rows == 130
    v, items = np.concatenate([v1, v2]), pd.concat([it1, it2], ignore_index=True)
    keep = np.setdiff1d(np.arange(130), gone)
    fresh = M.create(milvus_deploy.uri("b"), dim=D, label_names=NAMES)
    fresh.add(keep, v[keep], items.iloc[keep])
    q = v[[1, 50, 100, 81]]
    flt = Filter(labels_any=["L1", "L2"], season=["Summer", "Winter", "Fall"])
    live = np.ones(130, bool)
    live[gone] = False
    allowed = flt.mask(FilterColumns(items.assign(live=live), label_names=NAMES))
    a = grown.search(q, 10, rows=np.flatnonzero(allowed), where=flt)
    b = fresh.search(q, 10, rows=np.flatnonzero(allowed), where=flt)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[1], brute(q, v, allowed, 10)[1])
    assert not np.isin(a[1], gone).any()
    # the manifest entry reloads the same collection; an interrupted add (rows past next_row) is rolled back
    entry = grown.save(tmp_path)
    grown.add(np.arange(130, 133), v[:3], items.iloc[:3])  # as if the new manifest never got written
    again = M.load(tmp_path, entry)
    assert len(again) == 126 and again.n_rows == 130
    np.testing.assert_array_equal(again.search(q, 10, rows=np.flatnonzero(allowed), where=flt)[1], a[1])


def test_load_detects_a_changed_or_missing_collection(tmp_path, milvus_deploy):
    v, items = make_items(20, seed=5)
    be = M.create(milvus_deploy.uri("c"), dim=D, label_names=NAMES)
    be.add(np.arange(20), v, items)
    entry = be.entry()
    be.client.delete(be.collection, ids=[3])  # as an interrupted remove: loads, warns, row 3 gone
    again = M.load(tmp_path, entry)
    assert len(again) == 20 and 3 not in again.search(v[3:4], 20)[1]
    be.remove(np.array([3]))
    entry = be.entry()
    be.client.upsert(be.collection, M._records(np.array([3]), v[3:4], items.iloc[3:4], NAMES, True))
    with pytest.raises(ValueError, match="holds 20 vectors, the index manifest says 19"):
        M.load(tmp_path, entry)  # a row inserted outside csmae (below next_row)
    be.drop()
    with pytest.raises(ValueError, match="is missing at"):
        M.load(tmp_path, entry)


def test_hnsw_tunes_to_target_recall(milvus_deploy):
    v, items = make_items(600, seed=6)
    be = M.create(milvus_deploy.uri("h"), dim=D, label_names=NAMES, kind="hnsw", n_hint=600)
    be.add(np.arange(600), v, items)
    recall = be.tune(v, target=0.95, n_queries=100)
    assert recall is not None and recall >= 0.95
    assert be.approximate and "ef" in be.search_params
    # a very selective filter on the graph still returns every allowed row (widened / widest ef)
    flt = Filter(labels_all=["L0", "L1", "L2"])
    allowed = flt.mask(FilterColumns(items, label_names=NAMES))
    assert 0 < allowed.sum() < 30
    q = v[:5]
    _, rows = be.search(q, 30, rows=np.flatnonzero(allowed), where=flt)
    for r in rows:
        assert set(r[r >= 0].tolist()) == set(np.flatnonzero(allowed).tolist())
    ref = brute(q, v, allowed, 10)[1]
    for params in (None, {"ef": 16}):  # ef 16, not widened: the walk runs dry, redone at the widest ef
        got = be.search(q, 10, rows=np.flatnonzero(allowed), where=flt, params=params)[1]
        hits = [len(set(a[a >= 0]) & set(b[b >= 0])) / (b >= 0).sum() for a, b in zip(got, ref)]
        assert np.mean(hits) >= 0.95, params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_uri_fails_fast_naming_it():
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"Milvus at {uri} did not answer"):
        M.connect(uri, timeout=5)
    assert time.monotonic() - t0 < 10


def test_bad_uri_and_kind(tmp_path, milvus_deploy):
    with pytest.raises(ValueError, match=r"must end in \.db"):
        M.connect(str(tmp_path / "x.sqlite"))
    with pytest.raises(ValueError, match="unknown Milvus index kind"):
        M.create(milvus_deploy.uri("k"), dim=D, label_names=NAMES, kind="lsh")


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"pip install 'csmae\[milvus\]'"):
        M.connect("x.db")


def test_lite_db_held_by_another_process_is_named(tmp_path):
    import subprocess

    db = tmp_path / "held.db"
    code = (
        "import sys, time; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]); "
        "print('ready', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(ConnectionError, match=r"held\.db: another process has it open"):
            M.connect(str(db))
    finally:
        holder.kill()
        holder.wait()


def test_server_tunes_only_once_every_row_is_indexed(milvus_server_uri):
    """A server indexes sealed segments in its index node after the insert returns (20,000 rows
    here: ~1 s; the old code tuned at once, with 0 rows indexed); the tuning waits for it."""
    n = 20_000
    v, items = make_items(n, seed=7)
    be = M.create(milvus_server_uri, dim=D, label_names=NAMES, kind="hnsw", n_hint=n)
    try:
        be.add(np.arange(n), v, items)
        recall = be.tune(v, target=0.95, n_queries=50)
        info = be.client.describe_index(be.collection, index_name="vec")
        assert int(info["indexed_rows"]) == int(info["total_rows"]) == n, info
        # the recall it reports is the graph's at the ef it chose, checked on other items by brute force
        q = np.random.default_rng(8).choice(n, 100, replace=False)
        exact = brute(v[q], v, np.ones(n, bool), 11)[1][:, 1:]  # without the query item itself
        got = be.search(v[q], 11)[1]
        seen = np.mean([len(set(e) & set(g[g != i])) / 10 for e, g, i in zip(exact, got, q)])
        assert recall is not None and abs(recall - seen) < 0.08, (recall, seen, be.search_params)
    finally:
        be.drop()


class IndexNode:
    """A server client whose index covers ``steps`` rows more at each look (0: never finishes)."""

    def __init__(self, total: int, steps: int):
        self.total, self.steps, self.looks = total, steps, 0

    def describe_index(self, collection: str, index_name: str) -> dict:
        self.looks += 1
        return {"total_rows": self.total, "indexed_rows": min(self.total, self.steps * self.looks)}


class LaggingCount:
    """A server client holding rows 0..599 whose count(*) still counts deleted rows for ``lag``
    more looks after each delete (as a 2.3 server's did under load in CI)."""

    def __init__(self, lag: int):
        self.rows, self.lag, self.stale, self.looks = set(range(600)), lag, 0, 0
        self.reported = len(self.rows)

    def delete(self, collection: str, ids: list[int]) -> None:
        self.rows -= set(ids)
        self.stale = self.lag

    def flush(self, collection: str) -> None:
        pass

    def query(self, collection: str, filter: str, output_fields: list[str]) -> list[dict]:
        assert output_fields == ["count(*)"]
        self.looks += 1
        if self.stale:
            self.stale -= 1
        else:
            self.reported = len(self.rows)
        return [{"count(*)": self.reported}]


def test_remove_waits_for_a_lagging_count_and_takes_the_real_one_after_the_settle_time(monkeypatch):
    monkeypatch.setattr(M, "COUNT_POLL_S", 0.0)
    client = LaggingCount(lag=3)
    be = _server_backend(client)
    be.remove(np.arange(10, 20))
    assert be.count == 590 and client.looks == 4  # three stale answers, then the count after the delete
    monkeypatch.setattr(M, "COUNT_SETTLE_S", 0.05)
    client.lag = 0
    be.remove(np.arange(15, 25))  # 15..19 are gone already: count(*) never comes down to 580
    assert be.count == 585 == len(client.rows)  # what the server says once the settle time is over
    be.remove(np.arange(30, 40))
    assert be.count == 575 == len(client.rows)


def _server_backend(client, index_type: str = "HNSW") -> M.MilvusBackend:
    return M.MilvusBackend(
        client=client, uri="http://127.0.0.1:19530", collection="csmae_t", dim=D, label_names=NAMES,
        index_type=index_type, index_params={}, search_params={}, count=600, next_row=600,
    )  # fmt: skip


def test_wait_indexed_waits_for_every_row_then_times_out_naming_the_collection(monkeypatch, caplog):
    monkeypatch.setattr(M, "INDEX_POLL_S", 0.0)
    node = IndexNode(600, 250)
    with caplog.at_level("WARNING", logger=M.__name__):
        _server_backend(node).wait_indexed(timeout=60)
    assert node.looks == 3  # 250, 500, 600: returns at the first look that covers all 600
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "csmae_t" in said[0] and "250 of 600 rows" in said[0]  # said once
    flat = IndexNode(600, 0)
    _server_backend(flat, "FLAT").wait_indexed(timeout=0)  # nothing to build: never asks
    assert flat.looks == 0
    with pytest.raises(TimeoutError, match=r"HNSW index of collection 'csmae_t' covers 0 of 600 rows"):
        _server_backend(IndexNode(600, 0)).wait_indexed(timeout=0)
