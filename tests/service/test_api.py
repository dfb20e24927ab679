"""The HTTP API in-process: listing, previews, search by id, and bad requests (4xx, never 5xx)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from csmae.sensors import SENSORS, display_rgb
from csmae.service import ServiceSettings, create_app

from .fake_retriever import FakeRetriever


def brute_force(fake: FakeRetriever, pid: str, sensor: str, target: str, k: int, exclude_self: bool):
    """Exact cosine ranking computed here from the archive vectors (ties by archive order)."""
    q = fake.vectors[fake.rows.index((pid, sensor))]
    scores = fake.vectors @ q
    keep = [i for i, (rid, s) in enumerate(fake.rows)
            if (target == "any" or s == target) and not (exclude_self and rid == pid)]
    keep.sort(key=lambda i: (-scores[i], i))
    return [(fake.rows[i][0], fake.rows[i][1], float(scores[i])) for i in keep[:k]]


def p_at_k(query_labels: list[str], hit_labels: list[list[str]]) -> float:
    return float(np.mean([len(set(query_labels) & set(h)) / len(h) if h else 0.0 for h in hit_labels]))


# --- info and listing ---------------------------------------------------------------------------
def test_health_counts(client, fake):
    h = client.get("/api/health").json()
    assert h["status"] == "ok"
    assert h["counts"]["pairs"] == len(fake.ids)
    assert h["counts"]["vectors"] == len(fake.rows)
    assert h["counts"]["by_sensor"] == {"s1": len(fake.ids), "s2": len(fake.ids)}
    assert h["sensors"] == ["s1", "s2"]
    assert h["query_bands"]["s2"] == list(SENSORS["s2"].bands)
    assert h["label_names"] == fake.label_names
    assert h["model"]["name"] == "fake"


def test_listing_pages_cover_archive_once(client, fake):
    seen = []
    offset = 0
    while True:
        page = client.get("/api/items", params={"offset": offset, "limit": 7}).json()
        assert page["total"] == len(fake.rows)
        if not page["items"]:
            break
        seen += [(r["id"], r["sensor"]) for r in page["items"]]
        offset += 7
    assert seen == fake.rows


@pytest.mark.parametrize("filters", [{"split": "val"}, {"sensor": "s1"}, {"label": "Arable land"},
                                     {"split": "test", "sensor": "s2"}])
def test_listing_filters(client, fake, filters):
    page = client.get("/api/items", params={**filters, "limit": 500}).json()
    expected = [
        (pid, s) for pid, s in fake.rows
        if fake.meta[pid]["split"] == filters.get("split", fake.meta[pid]["split"])
        and s == filters.get("sensor", s)
        and ("label" not in filters or filters["label"] in fake.meta[pid]["labels"])
    ]
    assert page["total"] == len(expected)
    assert [(r["id"], r["sensor"]) for r in page["items"]] == expected


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "ten"}, {"sensor": "s3"},
    {"split": "training"}, {"label": "Not a class"},
])
def test_listing_bad_params_are_422(client, params):
    r = client.get("/api/items", params=params)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_random_item_respects_filters(client, fake):
    for _ in range(5):
        item = client.get("/api/items/random", params={"sensor": "s1", "split": "val"}).json()
        assert item["sensor"] == "s1" and fake.meta[item["id"]]["split"] == "val"


def test_item_info(client, fake):
    pid = fake.ids[3]
    info = client.get(f"/api/items/{pid}").json()
    assert info == {"id": pid, "split": fake.meta[pid]["split"], "labels": fake.meta[pid]["labels"],
                    "sensors": ["s1", "s2"]}


# --- previews -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_preview_png_matches_display_rgb(client, fake, sensor):
    pid = fake.ids[2]
    r = client.get(f"/api/items/{pid}/preview/{sensor}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    expected = (display_rgb(fake.pixels[(pid, sensor)], SENSORS[sensor]) * 255).astype(np.uint8)
    np.testing.assert_array_equal(img, expected)


@pytest.mark.parametrize("path", [
    "/api/items/NOPE_1_2/preview/s2", "/api/items/{pid}/preview/s3", "/api/items/{pid}/preview/%2e%2e",
    "/api/items/..%2F..%2Fetc%2Fpasswd/preview/s2", "/api/items/%2e%2e/preview/s2",
])
def test_preview_unknown_is_404(client, fake, path):
    r = client.get(path.format(pid=fake.ids[0]))
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/json")


def test_preview_without_data_is_404_with_hint():
    app = create_app(FakeRetriever(n=4, with_data=False))
    with TestClient(app) as c:
        pid = c.get("/api/items").json()["items"][0]["id"]
        r = c.get(f"/api/items/{pid}/preview/s2")
    assert r.status_code == 404 and "--data" in r.json()["detail"]


# --- search by id -------------------------------------------------------------------------------
@pytest.mark.parametrize("sensor,target,k,exclude", [
    ("s1", "any", 10, True), ("s2", "s1", 5, True), ("s1", "s2", 1, False), ("s2", "any", 100, False),
])
def test_search_by_id_matches_brute_force(client, fake, sensor, target, k, exclude):
    pid = fake.ids[5]
    r = client.get("/api/search", params={"id": pid, "sensor": sensor, "target": target, "k": k,
                                          "exclude_self": str(exclude).lower()})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = brute_force(fake, pid, sensor, target, k, exclude)
    got = [(h["id"], h["sensor"], h["score"]) for h in body["results"]]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], rtol=1e-5)
    assert [h["rank"] for h in body["results"]] == list(range(1, len(expected) + 1))
    lq = fake.meta[pid]["labels"]
    assert body["query"] == {"id": pid, "sensor": sensor, "split": fake.meta[pid]["split"], "labels": lq,
                             "files": None, "preview": None, **fake.geo_of(pid, sensor),
                             "lon": None, "lat": None}
    for h in body["results"]:
        assert h["labels"] == fake.meta[h["id"]]["labels"]
        assert set(h["overlap"]) == set(lq) & set(h["labels"])
    assert body["precision_at_k"] == pytest.approx(p_at_k(lq, [h["labels"] for h in body["results"]]))


@pytest.mark.parametrize("params,status", [
    ({"id": "NOPE_1_2", "sensor": "s1"}, 404),
    ({"id": "../../etc/passwd", "sensor": "s1"}, 404),
    ({"id": "/etc/passwd", "sensor": "s2"}, 404),
    ({"id": "..\\..\\windows", "sensor": "s2"}, 404),
    ({"id": "{pid}", "sensor": "s3"}, 422),
    ({"id": "{pid}", "sensor": "s1", "target": "s9"}, 422),
    ({"id": "{pid}", "sensor": "s1", "k": 0}, 422),
    ({"id": "{pid}", "sensor": "s1", "k": 101}, 422),
    ({"id": "{pid}", "sensor": "s1", "k": "many"}, 422),
    ({"id": "{pid}", "sensor": "s1", "exclude_self": "maybe"}, 422),
    ({"sensor": "s1"}, 422),
    ({"id": "x" * 5000, "sensor": "s1"}, 422),
])
def test_search_bad_requests_are_4xx(client, fake, params, status):
    params = {k: (v.format(pid=fake.ids[0]) if isinstance(v, str) else v) for k, v in params.items()}
    r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and "Traceback" not in r.text


def test_unknown_route_and_method_are_json_4xx(client):
    assert client.get("/api/nothing").status_code == 404
    r = client.delete("/api/search")
    assert r.status_code == 405 and "detail" in r.json()


def test_internal_error_is_500_without_traceback():
    class Broken(FakeRetriever):
        def search_by_id(self, *a, **kw):
            raise ZeroDivisionError("secret internal state")

    with TestClient(create_app(Broken(n=4)), raise_server_exceptions=False) as c:
        pid = c.get("/api/items").json()["items"][0]["id"]
        r = c.get("/api/search", params={"id": pid, "sensor": "s1"})
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert "secret" not in r.text


def test_retriever_errors_map_to_4xx():
    class Picky(FakeRetriever):
        def search_by_id(self, patch_id, **kw):
            raise ValueError("index was built by another model")

    with TestClient(create_app(Picky(n=4))) as c:
        pid = c.get("/api/items").json()["items"][0]["id"]
        r = c.get("/api/search", params={"id": pid, "sensor": "s1"})
    assert r.status_code == 400 and "another model" in r.json()["detail"]


def test_k_is_clamped_to_archive_size():
    small = FakeRetriever(n=3)
    with TestClient(create_app(small, settings=ServiceSettings(max_k=50))) as c:
        params = {"id": small.ids[0], "sensor": "s1", "k": 50, "exclude_self": "false"}
        r = c.get("/api/search", params=params)
    assert r.status_code == 200 and len(r.json()["results"]) == 6


# --- page, static files, headers ----------------------------------------------------------------
def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text.replace("http://127.0.0.1", "") and "https://" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"])
def test_static_traversal_is_404(client, path):
    assert client.get(path).status_code == 404


def test_openapi_schema_lists_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/health", "/api/items", "/api/search", "/api/search/upload",
            "/api/items/{patch_id}/preview/{sensor}"} <= set(paths)


def test_catalog_accepts_only_exact_index_ids():
    from csmae.service.catalog import Catalog

    cat = Catalog([{"id": "A.1", "sensor": "s1", "split": None, "labels": []},
                   {"id": "B", "sensor": "s2", "split": float("nan"), "labels": ["x"]},
                   {"id": "B", "sensor": "s1", "split": float("nan"), "labels": ["x"]}])
    assert cat.get("A.1").sensors == ["s1"] and cat.get("B").sensors == ["s2", "s1"]
    assert cat.get("B").split is None and len(cat) == 2 and len(cat.rows) == 3
    for bad in ["../A.1", "A.1/", "a.1", " A.1", "", "B" * 201, None]:
        assert cat.get(bad) is None
