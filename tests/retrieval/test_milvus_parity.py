"""Milvus Lite and a real Milvus server against FAISS exact (``faiss.IndexFlatIP`` over the allowed
rows) and numpy brute force, on every filter kind, after build, add and remove; and bad input on both
(names Milvus refuses, URIs that are no Milvus, label names and values that look like expressions,
refused writes that must leave the collection as it was)."""

from __future__ import annotations

import http.server
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'csmae[milvus]')")
faiss = pytest.importorskip("faiss")

from csmae.retrieval.backends import milvus as M  # noqa: E402
from csmae.retrieval.filters import Filter, FilterColumns  # noqa: E402
from tests.retrieval.test_milvus import NAMES, D, brute, make_items  # noqa: E402

K = 8
#: one filter per kind (and a few combinations), each leaving some but not all items
KINDS = {
    "sensor": {"sensor": ["s2"]},
    "split": {"split": ["val", "test"]},
    "labels_any": {"labels_any": ["L1", "L4"]},
    "labels_all": {"labels_all": ["L0", "L2"]},
    "labels_none": {"labels_none": ["L3", "L5"]},
    "country": {"country": ["Portugal", "Serbia"]},
    "season": {"season": ["Summer"]},
    "start": {"start": "2018-06-20"},
    "end": {"end": "2018-06-20"},
    "dates": {"start": "2018-06-10", "end": "2018-07-05"},
    "bbox": {"bbox": [-6.0, 37.0, 4.0, 42.5]},
    "bbox+labels": {"bbox": [-8.0, 36.0, 2.0, 44.0], "labels_any": ["L2"], "sensor": ["s1"]},
    "all-but-bbox": {
        "split": ["train", "test"],
        "labels_none": ["L0"],
        "country": ["Austria"],
        "end": "2018-07-20",
    },
}


def faiss_exact(q: np.ndarray, v: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """FAISS exact inner-product top-k rows among ``allowed`` (-1 padded)."""
    rows = np.flatnonzero(allowed)
    out = np.full((len(q), k), -1, dtype=np.int64)
    if len(rows):
        index = faiss.IndexFlatIP(v.shape[1])
        index.add(np.ascontiguousarray(v[rows]))
        _, got = index.search(np.ascontiguousarray(q), min(k, len(rows)))
        out[:, : got.shape[1]] = np.where(got >= 0, rows[np.maximum(got, 0)], -1)
    return out


def expression_rows(be, flt: Filter, n: int) -> set[int]:
    """Rows the Milvus expression alone selects (no allowed rows passed)."""
    _, got = be.search(np.ones((1, D), np.float32) / np.sqrt(D), min(n, M.TOPK_MAX), where=flt)
    return set(got[0][got[0] >= 0].tolist())


def bbox_bounds_rows(items: pd.DataFrame, bbox) -> np.ndarray:
    """Rows whose footprint's bounds meet ``bbox`` (what the expression tests for bbox)."""
    import shapely

    b = np.array(
        [shapely.bounds(shapely.from_wkb(g)) if g is not None else [np.nan] * 4 for g in items["geometry"]]
    )
    w, s, e, n = bbox
    with np.errstate(invalid="ignore"):
        return (b[:, 2] >= w) & (b[:, 0] <= e) & (b[:, 3] >= s) & (b[:, 1] <= n)


def check_every_kind(be, v: np.ndarray, items: pd.DataFrame, live: np.ndarray, stage: str) -> None:
    cols = FilterColumns(items.assign(live=live), label_names=NAMES)
    q = v[[1, 7, 30, 77]] + 0.05
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for kind, f in KINDS.items():
        flt = Filter.from_dict(f)
        allowed = flt.mask(cols)
        assert 0 < allowed.sum() < live.sum(), (stage, kind)
        scores, rows = be.search(q, K, rows=np.flatnonzero(allowed), where=flt)
        ref_s, ref_r = brute(q, v, allowed, K)
        np.testing.assert_array_equal(rows, ref_r, err_msg=f"{stage} {kind}")
        np.testing.assert_array_equal(rows, faiss_exact(q, v, allowed, K), err_msg=f"{stage} {kind}")
        np.testing.assert_allclose(scores[rows >= 0], ref_s[ref_r >= 0], atol=1e-5)
        want = (
            allowed
            if flt.bbox is None
            else flt.replace(bbox=None).mask(cols) & bbox_bounds_rows(items, flt.bbox)
        )
        assert expression_rows(be, flt, len(items)) == set(np.flatnonzero(want).tolist()), (stage, kind)


def test_every_filter_kind_equals_faiss_exact_after_build_add_remove(milvus_deploy):
    v1, it1 = make_items(150, seed=11)
    v2, it2 = make_items(70, seed=12, start=150)
    v, items = np.concatenate([v1, v2]), pd.concat([it1, it2], ignore_index=True)
    be = M.create(milvus_deploy.uri("parity"), dim=D, label_names=NAMES, name_hint="parity")
    try:
        be.add(np.arange(150), v1, it1)
        live = np.zeros(len(v), bool)
        live[:150] = True
        check_every_kind(be, v, items, live, "build")
        be.add(np.arange(150, 220), v2, it2)
        live[150:] = True
        check_every_kind(be, v, items, live, "add")
        gone = np.array([0, 3, 40, 149, 150, 151, 219])
        be.remove(gone)
        live[gone] = False
        assert len(be) == live.sum()
        check_every_kind(be, v, items, live, "remove")
    finally:
        be.drop()


EVIL_LABELS = ["L0", 'x" or row >= 0 or "', "a') or (row >= 0", "label_0 == true or true", 'ä \\ "b"', "L5"]
EVIL_COUNTRIES = ['Portugal" or row >= 0 or country == "', "Austria') or (1 == 1", "Serbia\\", 'a"b']


def test_names_and_values_that_look_like_expressions_never_widen_the_filter(milvus_deploy):
    v, items = make_items(120, seed=13)
    rng = np.random.default_rng(0)
    items["country"] = pd.Series(rng.choice(EVIL_COUNTRIES, len(items)), dtype=object).where(
        np.arange(len(items)) % 5 != 0, None
    )
    be = M.create(milvus_deploy.uri("evil"), dim=D, label_names=EVIL_LABELS, name_hint="evil")
    try:
        be.add(np.arange(len(items)), v, items)
        cols = FilterColumns(items, label_names=EVIL_LABELS)
        cases = [{"labels_any": [n]} for n in EVIL_LABELS[1:5]]
        cases += [{"labels_all": EVIL_LABELS[1:3]}, {"labels_none": [EVIL_LABELS[2], EVIL_LABELS[3]]}]
        cases += [{"country": [c]} for c in EVIL_COUNTRIES]
        q = v[:3]
        for f in cases:
            flt = Filter.from_dict(f)
            allowed = flt.mask(cols)
            assert allowed.sum() < len(items), f
            assert expression_rows(be, flt, len(items)) == set(np.flatnonzero(allowed).tolist()), f
            _, rows = be.search(q, K, rows=np.flatnonzero(allowed), where=flt)
            np.testing.assert_array_equal(rows, faiss_exact(q, v, allowed, K), err_msg=str(f))
        # values no item has (the mask refuses them as unknown names): the expression selects nothing
        for f in ({"country": ['nowhere" or row >= 0 or country == "x']}, {"season": ["Summer' or '1'=='1"]}):
            assert expression_rows(be, Filter.from_dict(f), len(items)) == set(), f
    finally:
        be.drop()


def collection_state(be) -> tuple[int, list]:
    """Count and every row's stored fields (what a refused write must not change)."""
    res = be.client.query(
        be.collection, filter="row >= 0", output_fields=["row", "id", "country", "t"], limit=1000
    )
    return be._count(), sorted((r["row"], r["id"], r["country"], r["t"]) for r in res)


def test_refused_writes_change_nothing(milvus_deploy):
    v, items = make_items(30, seed=14)
    be = M.create(milvus_deploy.uri("refused"), dim=D, label_names=NAMES, name_hint="refused")
    try:
        be.add(np.arange(30), v, items)
        before = collection_state(be)
        long_id = items.iloc[:4].assign(id=["ok", "ok2", "x" * 600, "ok3"])
        with pytest.raises(ValueError, match=r"row 12 .*id is 600 bytes, the collection allows 512; nothing"):
            be.add(np.arange(10, 14), v[:4], long_id)  # replaces rows 10, 11 if it were written
        with pytest.raises(ValueError, match="country is 300 bytes"):
            be.add(np.arange(30, 34), v[:4], items.iloc[:4].assign(country="ä" * 150))
        bad = v[:4].copy()
        bad[2, 5] = np.nan
        with pytest.raises(ValueError, match="row 32 is not finite"):
            be.add(np.arange(30, 34), bad, items.iloc[:4])
        with pytest.raises(ValueError, match="the index holds D=16"):
            be.add(np.arange(30, 34), np.zeros((4, 8), np.float32), items.iloc[:4])
        assert collection_state(be) == before and be.n_rows == 30 and len(be) == 30
        with pytest.raises(FileExistsError, match="already exists"):
            M.create(be.uri, dim=D, label_names=NAMES, collection=be.collection)
        assert collection_state(be) == before
    finally:
        be.drop()


@pytest.mark.parametrize("name", ["bad name", "bad-name", "1abc", "ä", "x" * 256, "a;drop"])
def test_collection_names_milvus_refuses_are_named_before_connecting(milvus_deploy, name):
    uri = milvus_deploy.uri("names")
    before = sorted(M.connect(uri).list_collections())
    with pytest.raises(ValueError, match="Milvus collection name .*letters, digits and underscores"):
        M.create(uri, dim=D, label_names=NAMES, collection=name)
    assert sorted(M.connect(uri).list_collections()) == before


def test_uris_that_are_no_milvus_fail_clearly(milvus_server_uri):
    port = milvus_server_uri.rsplit(":", 1)[1]
    for scheme in ("ftp", "grpc", "postgres"):
        with pytest.raises(ValueError, match=f"unsupported scheme '{scheme}'"):
            M.connect(f"{scheme}://127.0.0.1:{port}")
    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # HTTP, not gRPC
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{web.server_port}"
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match=f"Milvus at {uri} did not answer"):
            M.connect(uri, timeout=5)
        assert time.monotonic() - t0 < 15
    finally:
        web.shutdown()
        web.server_close()
    with pytest.raises(ConnectionError, match=r"Milvus at .*/nodb did not answer .*database not found"):
        M.connect(f"{milvus_server_uri}/nodb", timeout=5)
    assert M.connect(milvus_server_uri).list_collections() is not None


def test_a_lite_collection_with_the_earlier_nullable_schema_loads_and_filters_exactly(tmp_path):
    """Collections built by an earlier csmae (nullable country / season / t / bbox, no presence
    flags; Milvus Lite only) are detected on load and searched with their own expression form."""
    from pymilvus import DataType, MilvusClient

    v, items = make_items(90, seed=15)
    uri = str(tmp_path / "legacy.db")
    client = MilvusClient(uri)
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("row", DataType.INT64, is_primary=True)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=D)
    for f, n in (("id", 512), ("sensor", 64), ("split", 64)):
        s.add_field(f, DataType.VARCHAR, max_length=n)
    s.add_field("labels", DataType.ARRAY, element_type=DataType.INT64, max_capacity=len(NAMES))
    for i in range(len(NAMES)):
        s.add_field(f"label_{i}", DataType.BOOL)
    s.add_field("country", DataType.VARCHAR, max_length=256, nullable=True)
    s.add_field("season", DataType.VARCHAR, max_length=64, nullable=True)
    s.add_field("t", DataType.INT64, nullable=True)
    for f in M.BBOX_FIELDS:
        s.add_field(f, DataType.DOUBLE, nullable=True)
    ip = client.prepare_index_params()
    ip.add_index("vec", index_type="FLAT", metric_type="IP")
    client.create_collection("legacy", schema=s, index_params=ip)
    client.upsert("legacy", M._records(np.arange(90), v, items, NAMES, True, nullable=True))
    client.flush("legacy")
    entry = {"uri": uri, "collection": "legacy", "dim": D, "label_names": NAMES, "count": 90, "next_row": 90}
    be = M.load(tmp_path, entry)
    assert be.nullable
    live = np.ones(len(v), bool)
    check_every_kind(be, v, items, live, "legacy")
