"""A Milvus server that goes away mid-service (#20 item 4): the API answers JSON 503s naming the URI
within a bounded time, and searches succeed again once the server is back (same folder, same port)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
milvus = pytest.importorskip("milvus", reason="the server tests need the `milvus` package (dev extra)")

from csmae.retrieval import Retriever  # noqa: E402
from csmae.retrieval.embeddings import load_embeddings  # noqa: E402
from csmae.retrieval.index import build_index  # noqa: E402

from .milvus_server import milvus_server  # noqa: E402

#: bound on one request while the server is down (connect timeout 10 s + margin)
DOWN_S = 30.0
BACK_S = 120.0


def test_a_server_gone_mid_service_gives_503_and_recovers(tmp_path, v1_emb_dir):
    from fastapi.testclient import TestClient

    from csmae.service import create_app

    pid = str(load_embeddings(v1_emb_dir).ids[2])
    params = {"id": pid, "sensor": "s1", "target": "s2", "k": 4}
    ports: dict[str, int] = {}
    data = tmp_path / "server"
    with milvus_server(data, ports=ports) as uri:
        build_index(v1_emb_dir, "exact", tmp_path / "idx", backend="milvus", uri=uri)
        retriever = Retriever.load(tmp_path / "idx")
        client = TestClient(create_app(retriever), raise_server_exceptions=False)
        want = client.get("/api/search", params=params)
        assert want.status_code == 200, want.text
    # the server is gone (stopped): 503 naming the URI, in bounded time, every time
    for _ in range(2):
        t0 = time.monotonic()
        r = client.get("/api/search", params=params)
        assert time.monotonic() - t0 < DOWN_S
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert uri in r.json()["detail"] and "unavailable" in r.json()["detail"]
    with milvus_server(data, ports=ports) as again:  # back on the same folder and port
        assert again == uri
        t0 = time.monotonic()
        while True:
            r = client.get("/api/search", params=params)
            if r.status_code == 200 or time.monotonic() - t0 > BACK_S:
                break
            assert r.status_code == 503, r.text
            time.sleep(1)
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == [h["id"] for h in want.json()["results"]]
        retriever.index.backend.drop()
    client.close()
