"""Milvus end to end, on Milvus Lite and on a real Milvus server (``milvus_deploy``): embed -> index
--backend milvus -> search (Python, CLI) -> serve, against the FAISS index of the same embeddings
(the exact reference)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'csmae[milvus]')")

from csmae.cli import main  # noqa: E402
from csmae.retrieval import Retriever  # noqa: E402
from csmae.retrieval.embeddings import load_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory, v1_emb_dir, milvus_deploy):
    """The session's embeddings of the real v1 samples (tiny model, `csmae embed`'s code path)
    indexed by the CLI with both backends."""
    tmp = tmp_path_factory.mktemp("milvus-e2e")
    emb = v1_emb_dir
    assert main(["index", str(emb), "--out", str(tmp / "faiss")]) == 0
    uri = Path(milvus_deploy.uri("archive")) if milvus_deploy.lite else milvus_deploy.uri("archive")
    argv = ["index", str(emb), "--out", str(tmp / "milvus"), "--backend", "milvus", "--uri", str(uri)]
    assert main(argv) == 0
    return tmp, emb, uri


def test_manifest_and_folder(built):
    tmp, _, uri = built
    man = json.loads((tmp / "milvus" / "manifest.json").read_text())
    entry = man["backend"]
    if isinstance(uri, Path):  # Lite
        assert entry["backend"] == "milvus" and entry["uri"] == str(uri.resolve()) and entry["lite"]
    else:
        assert entry["backend"] == "milvus" and entry["uri"] == uri and not entry["lite"]
    faiss_man = json.loads((tmp / "faiss" / "manifest.json").read_text())
    assert entry["collection"].startswith("csmae_milvus_")
    assert entry["count"] == man["count"] == faiss_man["count"] > 0
    for key in ("model", "label_names", "sensor_counts", "dim"):
        assert man[key] == faiss_man[key], key
    # the collection is the archive (#20): the index folder is a pointer, no local items table
    assert sorted(p.name for p in (tmp / "milvus").iterdir()) == ["manifest.json"]
    assert man["files"] == {"items": None} and entry["archive"]


def test_retriever_over_milvus_equals_faiss(built):
    tmp, emb_dir, _ = built
    rf, rm = Retriever.load(tmp / "faiss"), Retriever.load(tmp / "milvus")
    e = load_embeddings(emb_dir)
    names = rf.label_names
    common = names[int(np.argmax(e.labels.sum(axis=0)))]
    wheres = [None, {"split": ["test", "val"]}, {"labels_any": [common]}, {"labels_none": [common]}]
    items = rf.index.items
    if "geometry" in items and items["geometry"].notna().any():  # real footprints (geo readers)
        import shapely

        b = shapely.bounds(shapely.from_wkb(items["geometry"].dropna().tolist()))
        mid_x, mid_y = float(np.median(b[:, 0])), float(np.median(b[:, 1]))
        wheres.append({"bbox": [mid_x - 0.05, mid_y - 0.05, float(b[:, 2].max()), float(b[:, 3].max())]})
    if "datetime" in items and items["datetime"].notna().any():
        days = pd.to_datetime(items["datetime"].dropna(), utc=True).sort_values()
        day = str(days.iloc[len(days) // 4].date())
        wheres += [{"start": day}, {"end": day, "labels_any": [common]}]
    checked = 0
    for pid in sorted(set(e.ids.tolist()))[:6]:
        for sensor, target in (("s1", "s2"), ("s2", "any"), ("s2", "s2")):
            for where in wheres:
                a = rf.search_by_id(pid, sensor=sensor, target=target, k=5, where=where)
                b = rm.search_by_id(pid, sensor=sensor, target=target, k=5, where=where)
                assert [(h.id, h.sensor) for h in a] == [(h.id, h.sensor) for h in b], (pid, target, where)
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
                checked += len(a)
    assert checked > 200
    q = e.vectors[:4]
    fa, fb = rf.search_by_vectors(q, k=7), rm.search_by_vectors(q, k=7)
    assert [[h.id for h in hits] for hits in fa] == [[h.id for h in hits] for hits in fb]


def test_cli_search_and_serve_over_milvus(built, capsys):
    from fastapi.testclient import TestClient

    from csmae.service import create_app

    tmp, emb_dir, _ = built
    pid = load_embeddings(emb_dir).ids[3]
    capsys.readouterr()
    for idx in ("faiss", "milvus"):
        argv = ["search", str(tmp / idx), "--id", pid, "--sensor", "s1", "--target", "s2", "--k", "4"]
        assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out.strip().split("\n{")
    faiss_hits, milvus_hits = json.loads(out[0])["hits"], json.loads("{" + out[1])["hits"]
    assert [h["id"] for h in faiss_hits] == [h["id"] for h in milvus_hits] and len(milvus_hits) == 4
    rm = Retriever.load(tmp / "milvus")
    with TestClient(create_app(rm), raise_server_exceptions=False) as client:
        r = client.get("/api/search", params={"id": pid, "sensor": "s2", "target": "s1", "k": 5})
        assert r.status_code == 200, r.text
        want = rm.search_by_id(pid, sensor="s2", target="s1", k=5)
        assert [x["id"] for x in r.json()["results"]] == [h.id for h in want]
        n_pairs = len(set(load_embeddings(emb_dir).ids.tolist()))
        assert client.get("/api/health").json()["counts"]["pairs"] == n_pairs


def test_index_remove_and_add_keep_backends_equal(built, tmp_path, milvus_deploy):
    """`csmae index remove` then `csmae index add` (re-adding replaces) on both backends."""
    import shutil

    tmp, emb_dir, _ = built
    e = load_embeddings(emb_dir)
    pids = sorted(set(e.ids.tolist()))
    # grow a copy of the FAISS index and a second Milvus index (the module's one stays as built)
    shutil.copytree(tmp / "faiss", tmp_path / "faiss")
    uri = milvus_deploy.uri("grow")
    argv = ["index", str(emb_dir), "--out", str(tmp_path / "milvus"), "--backend", "milvus", "--uri", uri]
    assert main(argv) == 0
    gone = tmp_path / "gone.txt"
    gone.write_text(f"{pids[0]}\n{pids[1]} s2\n")
    for idx in ("faiss", "milvus"):
        assert main(["index", "remove", str(tmp_path / idx), "--ids", str(gone)]) == 0
    rf, rm = Retriever.load(tmp_path / "faiss"), Retriever.load(tmp_path / "milvus")
    for r in (rf, rm):
        assert len(r.index.backend) == len(e) - 3
    for pid in pids[2:6]:
        a = rf.search_by_id(pid, sensor="s1", k=6)
        b = rm.search_by_id(pid, sensor="s1", k=6)
        assert [(h.id, h.sensor) for h in a] == [(h.id, h.sensor) for h in b]
        assert not {(h.id, h.sensor) for h in b} & {(pids[0], "s1"), (pids[0], "s2"), (pids[1], "s2")}
    for idx in ("faiss", "milvus"):
        assert main(["index", "add", str(tmp_path / idx), str(emb_dir)]) == 0
    rf, rm = Retriever.load(tmp_path / "faiss"), Retriever.load(tmp_path / "milvus")
    # re-adding replaces by (id, sensor) key in the collection: row ids are the archive's positions
    assert len(rm.index.backend) == len(e) and rm.index.backend.n_rows == len(e)
    for pid in pids[:6]:
        a = rf.search_by_id(pid, sensor="s2", k=6, where={"split": ["train", "val", "test"]})
        b = rm.search_by_id(pid, sensor="s2", k=6, where={"split": ["train", "val", "test"]})
        assert [(h.id, h.sensor) for h in a] == [(h.id, h.sensor) for h in b]
    assert sorted(p.name for p in (tmp_path / "milvus").iterdir()) == ["manifest.json"]  # a pointer


def test_cli_errors_leave_nothing_behind(built, capsys):
    tmp, emb_dir, _ = built
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    out = tmp / "never"
    assert main(["index", str(emb_dir), "--out", str(out), "--backend", "milvus", "--uri", uri]) == 1
    assert f"Milvus at {uri} did not answer" in capsys.readouterr().err
    assert not out.exists()
    assert main(["index", str(emb_dir), "--out", str(out), "--backend", "milvus"]) == 1
    assert "needs --uri" in capsys.readouterr().err
    # an existing index is untouched by a failed --overwrite
    before = (tmp / "milvus" / "manifest.json").read_text()
    argv = ["index", str(emb_dir), "--out", str(tmp / "milvus"), "--backend", "milvus", "--uri", uri]
    assert main([*argv, "--overwrite"]) == 1
    assert (tmp / "milvus" / "manifest.json").read_text() == before
    hits = Retriever.load(tmp / "milvus").search_by_id(load_embeddings(emb_dir).ids[0], sensor="s1", k=3)
    assert len(hits) == 3
