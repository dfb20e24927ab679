"""Fused S1+S2 queries through the Retriever, ``csmae search`` and ``GET /api/search`` (real v1 samples),
against a brute-force ranking of the index's own vectors; place keys on every hit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient


def _brute(retriever, pid: str, k: int, target: str = "any") -> list[tuple[str, str]]:
    idx = retriever.index
    items = idx.items
    rows = np.arange(len(items))
    vecs = idx.backend.reconstruct(rows).astype(np.float64)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    own = [int(np.flatnonzero((items["id"] == pid).to_numpy() & (items["sensor"] == s).to_numpy())[0])
           for s in ("s1", "s2")]
    q = vecs[own[0]] + vecs[own[1]]
    q /= np.linalg.norm(q)
    scores = vecs @ q
    cand = [r for r in rows if r not in own and (target == "any" or items["sensor"][r] == target)]
    cand.sort(key=lambda r: (-scores[r], r))
    return [(str(items["id"][r]), str(items["sensor"][r])) for r in cand[:k]]


def test_fused_search_equals_brute_force_everywhere(real_retriever, tmp_path, capsys):
    from csmae.cli import main
    from csmae.geo.place import place_of
    from csmae.service import create_app

    ids = sorted(set(real_retriever.index.items["id"]))
    pid = ids[1]
    for target in ("any", "s1"):
        want = _brute(real_retriever, pid, 4, target)
        hits = real_retriever.search_by_id(pid, sensor="s1+s2", target=target, k=4)
        assert [(h.id, h.sensor) for h in hits] == want
    geoms = dict(zip(zip(real_retriever.index.items["id"], real_retriever.index.items["sensor"], strict=True),
                     real_retriever.index.items["geometry"], strict=True))
    for h in hits:
        assert h.place == place_of(geoms[(h.id, h.sensor)]) is not None
    with TestClient(create_app(real_retriever), raise_server_exceptions=False) as client:
        body = client.get("/api/search", params={"id": pid, "sensor": "s1+s2", "k": 4}).json()
        assert [(h["id"], h["sensor"]) for h in body["results"]] == _brute(real_retriever, pid, 4)
        assert all(h["place"] for h in body["results"]) and body["query"]["sensor"] == "s1+s2"
        bad = client.get("/api/search", params={"id": pid, "sensor": "s1+s3"})
        assert bad.status_code == 422
    index_dir = str(real_retriever.index.path)
    rc = main(["search", index_dir, "--id", pid, "--sensor", "s1+s2", "--k", "4", "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert [(h["id"], h["sensor"]) for h in got["hits"]] == _brute(real_retriever, pid, 4)
    rc = main(["search", index_dir, "--file", str(tmp_path / "q.npy"), "--sensor", "s1+s2"])
    assert rc == 1 and "not --file" in capsys.readouterr().err


def test_fused_query_without_both_sensors_is_an_error(tmp_path):
    from csmae.retrieval import Retriever, build_index
    from csmae.retrieval.embeddings import embeddings_from_arrays

    rng = np.random.default_rng(0)
    emb = embeddings_from_arrays(ids=["a", "a", "b", "c", "c"], sensors=["s1", "s2", "s1", "s1", "s2"],
                                 splits=["test"] * 5, labels=rng.random((5, 19)) < 0.3,
                                 vectors=rng.standard_normal((5, 8)).astype(np.float32),
                                 manifest={"sensors": {"s1": {}, "s2": {}}})
    r = Retriever(build_index(emb, kind="exact", out=tmp_path / "idx"))
    assert sorted(h.id for h in r.search_by_id("a", sensor="s1+s2", k=3)) == ["b", "c", "c"]  # not a
    with pytest.raises(ValueError, match="needs both the S1 and the S2 item of 'b'"):
        r.search_by_id("b", sensor="s1+s2")
    with pytest.raises(KeyError, match="no patch 'zz'"):
        r.search_by_id("zz", sensor="s1+s2")
