"""Search by place and GeoJSON answers of the API (fake retriever with known footprints)."""

from __future__ import annotations

import pytest

from tests.service.fake_retriever import FakeRetriever


def _inside(fake: FakeRetriever, pid: str) -> tuple[float, float]:
    x0, y0, x1, y1 = fake.meta[pid]["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def test_search_by_place_equals_search_by_id(client, fake):
    pid = fake.ids[7]
    lon, lat = _inside(fake, pid)
    place = {"lon": lon, "lat": lat, "sensor": "s2", "target": "s1", "k": 5}
    by_place = client.get("/api/search", params=place)
    by_id = client.get("/api/search", params={"id": pid, "sensor": "s2", "target": "s1", "k": 5})
    assert by_place.status_code == 200, by_place.text
    a, b = by_place.json(), by_id.json()
    assert a["query"]["id"] == pid and a["query"]["lon"] == lon and a["query"]["lat"] == lat
    assert a["results"] == b["results"]
    assert a["query"]["geometry"] == fake.geo_of(pid, "s2")["geometry"]
    for h in a["results"]:
        assert h["geometry"] == fake.geo_of(h["id"], h["sensor"])["geometry"]
        assert h["datetime"] == fake.geo_of(h["id"], h["sensor"])["datetime"]


def test_geojson_format(client, fake):
    pid = fake.ids[3]
    r = client.get("/api/search", params={"id": pid, "sensor": "s1", "k": 4, "format": "geojson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 5 and "crs" not in fc
    q, *hits = fc["features"]
    assert (q["properties"]["role"], q["properties"]["id"], q["properties"]["rank"]) == ("query", pid, 0)
    plain = client.get("/api/search", params={"id": pid, "sensor": "s1", "k": 4}).json()["results"]
    for f, h in zip(hits, plain, strict=True):
        p = f["properties"]
        assert p["role"] == "hit" and (p["rank"], p["id"], p["sensor"], p["labels"], p["datetime"]) == \
            (h["rank"], h["id"], h["sensor"], h["labels"], h["datetime"])
        assert p["score"] == pytest.approx(h["score"])
        assert f["geometry"] == h["geometry"] and f["geometry"]["type"] == "Polygon"


@pytest.mark.parametrize("params, status, words", [
    ({"lon": 10.0, "sensor": "s1"}, 422, "both lon and lat"),
    ({"id": "x", "lon": 10.0, "lat": 50.0, "sensor": "s1"}, 422, "either id"),
    ({"sensor": "s1"}, 422, "either id"),
    ({"lon": 100.0, "lat": 0.0, "sensor": "s1"}, 400, "no s1 patch"),
    ({"lon": 500.0, "lat": 0.0, "sensor": "s1"}, 422, ""),
    ({"id": "x", "sensor": "s1", "format": "kml"}, 422, ""),
])
def test_bad_place_queries(client, params, status, words):
    r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert words in r.text


def test_health_reports_footprints(client, fake):
    geo = client.get("/api/health").json()["geo"]
    assert geo["footprints"] == len(fake.rows) and geo["synthetic"] is True and geo["basemap"] is None
    assert geo["extent"] == pytest.approx(fake.geo_info["extent"])


def test_basemap_origin_allowed_in_csp(fake):
    from fastapi.testclient import TestClient

    from csmae.service import ServiceSettings, create_app

    app = create_app(fake, settings=ServiceSettings(basemap="https://{s}.tiles.example.org/{z}/{x}/{y}.png"))
    with TestClient(app) as c:
        r = c.get("/")
        assert "img-src 'self' https://*.tiles.example.org data:" in r.headers["content-security-policy"]
        assert c.get("/api/health").json()["geo"]["basemap"].startswith("https://{s}.tiles")
