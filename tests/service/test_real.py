"""The service over the real retrieval core: a tiny model, embeddings and an exact index of the real
BigEarthNet v1 samples in ../shared/data; uploads are the genuine GeoTIFF band files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

URL = "/api/search/upload"


@pytest.fixture(scope="module")
def real(real_retriever, v1_roots):
    from csmae.service import create_app

    with TestClient(create_app(real_retriever), raise_server_exceptions=False) as client:
        yield client, real_retriever, Path(v1_roots[0]), Path(v1_roots[1])


def test_health_and_listing(real):
    client, retriever, s2_root, _ = real
    h = client.get("/api/health").json()
    pairs = sorted(p.name for p in s2_root.iterdir() if p.is_dir())
    assert h["counts"]["pairs"] == len(pairs)
    assert h["counts"]["by_sensor"] == {"s1": len(pairs), "s2": len(pairs)}
    page = client.get("/api/items", params={"sensor": "s2", "limit": 100}).json()
    assert sorted(r["id"] for r in page["items"]) == pairs


def test_real_preview(real):
    client, retriever, s2_root, _ = real
    pid = sorted(p.name for p in s2_root.iterdir() if p.is_dir())[0]
    for sensor in ("s1", "s2"):
        r = client.get(f"/api/items/{pid}/preview/{sensor}")
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(r.content))
        assert img.size == (120, 120)


def test_search_by_id_equals_retriever(real):
    client, retriever, s2_root, _ = real
    pid = sorted(p.name for p in s2_root.iterdir() if p.is_dir())[1]
    body = client.get("/api/search", params={"id": pid, "sensor": "s2", "target": "s1", "k": 5}).json()
    hits = retriever.search_by_id(pid, sensor="s2", target="s1", k=5)
    assert [(h["id"], h["sensor"]) for h in body["results"]] == [(h.id, h.sensor) for h in hits]
    assert all(h["sensor"] == "s1" for h in body["results"])


def test_upload_real_geotiffs_finds_itself(real):
    client, retriever, s2_root, _ = real
    folder = sorted(p for p in s2_root.iterdir() if p.is_dir())[2]
    files = [("files", (f.name, f.read_bytes(), "image/tiff")) for f in sorted(folder.glob("*.tif"))]
    assert len(files) == 12  # all L2A bands; B01/B09 are ignored by a 10-band model
    r = client.post(URL, files=files, data={"sensor": "s2", "target": "s2", "k": "3"})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["id"] == folder.name and top["score"] == pytest.approx(1.0, abs=1e-4)
    by_files = retriever.search_by_files(sorted(folder.glob("*.tif")), sensor="s2", target="s2", k=3)
    assert [h["id"] for h in r.json()["results"]] == [h.id for h in by_files]


def test_upload_real_s1_npy(real):
    client, retriever, _, _ = real
    pid = client.get("/api/items", params={"sensor": "s1", "limit": 1}).json()["items"][0]["id"]
    raw = retriever.sample(pid)["s1"]
    buf = io.BytesIO()
    np.save(buf, raw)
    r = client.post(URL, files=[("files", ("q.npy", buf.getvalue(), "application/octet-stream"))],
                    data={"sensor": "s1", "target": "any", "k": "4"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == pid and r.json()["results"][0]["sensor"] == "s1"


def test_real_bad_inputs(real):
    client, *_ = real
    assert client.get("/api/search", params={"id": "../../etc/passwd", "sensor": "s1"}).status_code == 404
    assert client.get("/api/items/..%2F..%2Fetc%2Fpasswd/preview/s2").status_code == 404
    r = client.post(URL, files=[("files", ("q.npy", b"\x93NUMPY", "application/octet-stream"))],
                    data={"sensor": "s2"})
    assert r.status_code == 400
