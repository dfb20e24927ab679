"""The running server attacked as in issue #21 (items 4-8): a cross-origin reload, a model swap, a
stripped-checksum or future-format index, a Milvus server that is down, passwords and server paths.

Every answer is JSON; nothing here may be a 5xx except the 503 of a database that does not answer.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from csmae.errors import RedactingFilter, redact_uri
from csmae.retrieval.index import build_index
from csmae.retrieval.retriever import Retriever
from csmae.service import ServiceSettings, create_app
from tests.retrieval.test_index_grow import make_emb

from .conftest import free_port

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = dict(private_depth=1, shared_depth=1, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=2)


def swap_link(link: Path, target: Path) -> None:
    """Point the symlink ``link`` at ``target`` atomically (what an operator's deploy does)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.resolve(), target_is_directory=True)
    tmp.replace(link)


@pytest.fixture()
def served(tmp_path):
    """A real retriever over a symlinked index folder, served with an admin token."""
    build_index(make_emb([f"a{i:03d}" for i in range(40)]), "exact", tmp_path / "idx-a")
    link = tmp_path / "live"
    swap_link(link, tmp_path / "idx-a")
    r = Retriever.load(link)
    app = create_app(r, settings=ServiceSettings(admin_token=TOKEN, thread_safe=True))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, r, link


# --- item 4: reload open to any web page ----------------------------------------------------------
@pytest.mark.parametrize("headers, status, words", [
    ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403, "cross-origin"),
    ({"Origin": "http://evil.example", "Content-Type": "application/json", **AUTH}, 403, "cross-origin"),
    ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json", **AUTH}, 403, "cross-origin"),
    ({"Origin": "null", "Content-Type": "application/json", **AUTH}, 403, "cross-origin"),
    ({"Content-Type": "text/plain", **AUTH}, 415, "application/json"),
    ({"Content-Type": "application/x-www-form-urlencoded", **AUTH}, 415, "application/json"),
    ({"Content-Type": "application/json"}, 401, "admin token"),
    ({"Content-Type": "application/json", "Authorization": "Bearer wrong-token"}, 401, "admin token"),
])
def test_reload_refuses_cross_origin_non_json_and_no_token(served, headers, status, words):
    c, r, _ = served
    before = r.index
    res = c.post("/api/reload", content=b"{}", headers=headers)
    assert res.status_code == status, res.text
    assert words in res.json()["detail"]
    assert r.index is before  # nothing was reloaded


def test_reload_same_origin_with_token_works(served):
    c, r, _ = served
    before = r.index
    headers = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin", **AUTH}
    res = c.post("/api/reload", json={}, headers=headers)
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "reloaded" and r.index is not before


def test_reload_is_disabled_without_a_configured_token(tmp_path):
    build_index(make_emb(["x1", "x2"]), "exact", tmp_path / "idx")
    with TestClient(create_app(Retriever.load(tmp_path / "idx"))) as c:
        res = c.post("/api/reload", json={}, headers=AUTH)
    assert res.status_code == 403
    assert "reload is disabled" in res.json()["detail"] and "--admin-token" in res.json()["detail"]


# --- item 6: stripped checksums + a flipped byte, format_version 999 ------------------------------
def _flip_and_strip(folder: Path) -> None:
    man = json.loads((folder / "manifest.json").read_text())
    victim = folder / man["backend"]["file"]
    data = bytearray(victim.read_bytes())
    data[-7] ^= 0x40
    victim.write_bytes(bytes(data))
    man.pop("checksums")
    (folder / "manifest.json").write_text(json.dumps(man))


def test_reload_refuses_an_index_without_checksums(served, tmp_path):
    c, r, link = served
    bad = tmp_path / "idx-stripped"
    shutil.copytree(tmp_path / "idx-a", bad)
    _flip_and_strip(bad)
    swap_link(link, bad)
    before = r.index
    res = c.post("/api/reload", json={}, headers=AUTH)
    assert res.status_code == 400, res.text
    assert "records no checksums" in res.json()["detail"] and "still serving" in res.json()["detail"]
    assert r.index is before
    assert c.get("/api/search", params={"id": "a001", "sensor": "s1"}).status_code == 200


def test_reload_of_an_unverified_index_only_when_opted_in(tmp_path):
    build_index(make_emb(["x1", "x2", "x3"]), "exact", tmp_path / "idx")
    r = Retriever.load(tmp_path / "idx")
    _flip_and_strip(tmp_path / "idx")
    app = create_app(r, settings=ServiceSettings(admin_token=TOKEN, allow_unverified_reload=True))
    with TestClient(app) as c:
        assert c.post("/api/reload", json={}, headers=AUTH).status_code == 200


@pytest.mark.parametrize("version", [999, 3, "2b", 0])
def test_future_or_bad_format_version_is_refused_everywhere(served, tmp_path, version, capsys):
    from csmae.cli import main

    c, r, link = served
    bad = tmp_path / "idx-future"
    shutil.copytree(tmp_path / "idx-a", bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["format_version"] = version
    (bad / "manifest.json").write_text(json.dumps(man))
    swap_link(link, bad)
    res = c.post("/api/reload", json={}, headers=AUTH)
    assert res.status_code == 400, res.text
    assert "format_version" in res.json()["detail"]
    assert main(["search", str(bad), "--id", "a001", "--sensor", "s1"]) == 1
    assert "format_version" in capsys.readouterr().err


def test_future_format_embeddings_and_model_are_refused(tmp_path):
    import torch

    import csmae
    from csmae.data.store import open_store
    from csmae.data.synth import write_synthetic
    from csmae.integrity import IntegrityError
    from csmae.models import from_pretrained
    from csmae.retrieval.embeddings import load_embeddings
    from tests.retrieval.test_index_grow import write_emb

    emb = write_emb(make_emb(["x1"]), tmp_path / "emb")
    model = tmp_path / "model"
    torch.manual_seed(0)
    csmae.create_model("csmae_sesd_tiny", **TINY).save_pretrained(model)
    store = write_synthetic(tmp_path / "store", n=2, seed=0, format="store")[0]
    for f in (emb / "manifest.json", model / "manifest.json", store / "manifest.json"):
        d = json.loads(f.read_text())
        d["format_version"] = 999
        f.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="format_version 999"):
        load_embeddings(emb)
    with pytest.raises(IntegrityError, match="format_version 999"):
        from_pretrained(model)
    with pytest.raises(IntegrityError, match="format_version 999"):
        open_store(store)


# --- item 5: an index made by another model -------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two tiny models (other weights), each with its embeddings and exact index of one store."""
    import torch

    import csmae
    from csmae.data.synth import write_synthetic
    from csmae.retrieval.embed import embed_dataset

    root = tmp_path_factory.mktemp("two-models")
    store = write_synthetic(root / "store", n=6, seed=3, format="store")[0]
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        csmae.create_model("csmae_sesd_tiny", **TINY).save_pretrained(root / f"model-{name}")
        emb = embed_dataset(root / f"model-{name}", [store], root / f"emb-{name}", precision="fp32",
                            device="cpu", batch_size=8)
        build_index(emb, "exact", root / f"idx-{name}")
        out[name] = root / f"idx-{name}"
    return root, store, out


def _upload_hits(c: TestClient, raw: np.ndarray) -> list[tuple[str, str]]:
    import io

    buf = io.BytesIO()
    np.save(buf, raw)
    res = c.post("/api/search/upload", files={"files": ("q.npy", buf.getvalue())},
                 data={"sensor": "s2", "k": "5"})
    assert res.status_code == 200, res.text
    return [(h["id"], h["sensor"]) for h in res.json()["results"]]


def test_reload_to_another_models_index_loads_that_model(two_models, tmp_path):
    root, store, idx = two_models
    link = tmp_path / "live"
    swap_link(link, idx["a"])
    r = Retriever.load(link, model_dir=root / "model-a", data=[str(store)])
    raw = r.sample(r.index.items["id"][0])["s2"]
    app = create_app(r, settings=ServiceSettings(admin_token=TOKEN))
    sha = {k: json.loads((v / "manifest.json").read_text())["model"]["sha256"] for k, v in idx.items()}
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/api/health").json()["model"]["sha256"] == sha["a"]
        _upload_hits(c, raw)  # model a is loaded and used
        swap_link(link, idx["b"])
        res = c.post("/api/reload", json={}, headers=AUTH)
        assert res.status_code == 200, res.text
        model = c.get("/api/health").json()["model"]
        assert model["sha256"] == sha["b"] and model["model_dir"] == "model-b"
        want = Retriever.load(idx["b"], model_dir=root / "model-b").search_by_arrays(raw, sensor="s2", k=5)
        assert _upload_hits(c, raw) == [(h.id, h.sensor) for h in want]


def test_reload_to_another_models_index_without_that_model_is_refused(two_models, tmp_path):
    root, store, idx = two_models
    copy_b = tmp_path / "idx-b"
    shutil.copytree(idx["b"], copy_b)
    man = json.loads((copy_b / "manifest.json").read_text())
    man["model"]["dir"] = str(tmp_path / "gone" / "model-b")  # not on this machine
    (copy_b / "manifest.json").write_text(json.dumps(man))
    link = tmp_path / "live"
    swap_link(link, idx["a"])
    r = Retriever.load(link, model_dir=root / "model-a")
    with TestClient(create_app(r, settings=ServiceSettings(admin_token=TOKEN))) as c:
        sha_a = c.get("/api/health").json()["model"]["sha256"]
        swap_link(link, copy_b)
        res = c.post("/api/reload", json={}, headers=AUTH)
        assert res.status_code == 400, res.text
        detail = res.json()["detail"]
        assert "another model" in detail and "--model" in detail and "still serving" in detail
        assert c.get("/api/health").json()["model"]["sha256"] == sha_a
        assert str(tmp_path) not in detail


# --- items 7, 8: Milvus down, passwords, server paths ---------------------------------------------
def _milvus_pointer(src: Path, dst: Path, uri: str) -> Path:
    """An index folder whose backend entry names a Milvus server at ``uri``."""
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    man["backend"] = {"backend": "milvus", "uri": uri, "lite": False, "collection": "csmae_gone",
                      "dim": man["dim"], "metric": "IP", "index_type": "FLAT", "index_params": {},
                      "search_params": {}, "count": man["count"], "next_row": man["rows"],
                      "label_names": man["label_names"]}
    man["files"] = {"items": "items.parquet"}
    man["checksums"] = {"items.parquet": man["checksums"]["items.parquet"]}
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


def test_reload_to_a_milvus_server_that_is_down_is_a_503_without_the_password(served, tmp_path, caplog):
    pytest.importorskip("pymilvus")

    c, r, link = served
    uri = f"http://root:s3cretPW@127.0.0.1:{free_port()}"  # nothing listens there: refused at once
    swap_link(link, _milvus_pointer(tmp_path / "idx-a", tmp_path / "idx-milvus", uri))
    before = r.index
    with caplog.at_level(logging.INFO):
        res = c.post("/api/reload", json={}, headers=AUTH)
    assert res.status_code == 503, res.text
    detail = res.json()["detail"]
    assert "127.0.0.1" in detail and "root:***@" in detail and "s3cretPW" not in detail
    assert "still serving the previous index" in detail and r.index is before
    assert "s3cretPW" not in caplog.text
    assert c.get("/api/search", params={"id": "a001", "sensor": "s1"}).status_code == 200


def test_cli_error_with_a_milvus_uri_hides_the_password(tmp_path, capsys):
    pytest.importorskip("pymilvus")
    from csmae.cli import main

    build_index(make_emb(["x1", "x2"]), "exact", tmp_path / "idx")
    bad = _milvus_pointer(tmp_path / "idx", tmp_path / "idx-milvus", f"http://u:p4ssw0rd@127.0.0.1:{free_port()}")
    assert main(["search", str(bad), "--id", "x1", "--sensor", "s1"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1" in err and "p4ssw0rd" not in err


def test_redaction_helper_and_log_filter():
    assert redact_uri("at http://root:pw@h:19530 and https://tok@h2/x, file a.db") == (
        "at http://root:***@h:19530 and https://***@h2/x, file a.db")
    rec = logging.LogRecord("csmae", logging.WARNING, __file__, 1, "Milvus at %s is down", ("http://a:b@h",),
                            None)
    RedactingFilter().filter(rec)
    assert rec.getMessage() == "Milvus at http://a:***@h is down"


def test_health_shows_no_absolute_server_paths(two_models):
    root, store, idx = two_models
    r = Retriever.load(idx["a"], model_dir=root / "model-a", data=[str(store)])
    with TestClient(create_app(r)) as c:
        text = c.get("/api/health").text
    assert str(root) not in text and str(root.resolve()) not in text
    assert json.loads(text)["model"]["model_dir"] == "model-a"


def test_database_gone_mid_search_is_a_503_naming_the_uri_without_password():
    pytest.importorskip("pymilvus")
    from csmae.retrieval.backends.milvus import MilvusUnavailable

    from .fake_retriever import FakeRetriever

    class Gone(FakeRetriever):
        def search_by_id(self, *args, **kwargs):
            raise MilvusUnavailable("Milvus at http://root:hunter22@10.0.0.5:19530 did not answer")

    fake = Gone(n=4, seed=0)
    with TestClient(create_app(fake), raise_server_exceptions=False) as c:
        res = c.get("/api/search", params={"id": fake.ids[0], "sensor": "s1"})
    assert res.status_code == 503 and res.headers["content-type"] == "application/json"
    detail = res.json()["detail"]
    assert "http://root:***@10.0.0.5:19530" in detail and "hunter22" not in detail
