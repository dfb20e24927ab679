"""Names in a manifest never lead out of the artefact folder (issue #21 item 3).

The attack: an edited manifest whose ``checksums`` name ``../../../../etc/passwd``, an absolute
path, or a symlink pointing outside. ``csmae verify``, index loading, model loading and an HTTP
reload must refuse the artefact without opening, stat'ing or hashing that file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import csmae.integrity as integrity
from csmae.cli import main
from csmae.integrity import IntegrityError, outside_reason
from tests.integrity.conftest import copy_artefact


@pytest.fixture()
def victim(tmp_path) -> Path:
    """A file of the user's outside every artefact (stands for /etc/passwd)."""
    v = tmp_path / "outside" / "secret.txt"
    v.parent.mkdir()
    v.write_text("root:x:0:0:the secret of 37 bytes\n")
    return v


@pytest.fixture()
def touched(monkeypatch) -> list[Path]:
    """Every path csmae.integrity checks or hashes (spied on check_file and file_digest)."""
    seen: list[Path] = []
    check, digest = integrity.check_file, integrity.file_digest

    def spy_check(path, entry, *, full=True):
        seen.append(Path(path))
        return check(path, entry, full=full)

    def spy_digest(path, *, algorithm=integrity.ALGORITHM):
        seen.append(Path(path))
        return digest(path, algorithm=algorithm)

    monkeypatch.setattr(integrity, "check_file", spy_check)
    monkeypatch.setattr(integrity, "file_digest", spy_digest)
    return seen


def _names(art: Path, victim: Path) -> dict[str, str]:
    """The hostile names of one artefact: climbing out, absolute, and a symlink out."""
    (art / "innocent.bin").symlink_to(victim)
    depth = len(art.resolve().parts)
    return {"dotdot": "../" * depth + str(victim.resolve()).lstrip("/"), "absolute": str(victim.resolve()),
            "symlink": "innocent.bin"}


def _poison(art: Path, name: str) -> None:
    man = json.loads((art / "manifest.json").read_text())
    man["checksums"][name] = {"bytes": 1, "sha256": "0" * 64}
    (art / "manifest.json").write_text(json.dumps(man))


def _outside(paths: list[Path], art: Path) -> list[Path]:
    root = art.resolve()
    return [p for p in paths if not p.resolve().is_relative_to(root)]


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize("kind", ["index-exact", "model", "embeddings"])
def test_verify_refuses_names_outside_the_folder(artefacts, tmp_path, victim, touched, capsys, kind, how):
    art = copy_artefact(artefacts[kind], tmp_path)
    name = _names(art, victim)[how]
    _poison(art, name)
    assert main(["verify", str(art)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "refused" in out and "not opened" in out
    assert "37" not in out.replace(str(art), "") and "longer than recorded" not in out  # no size leaked
    assert _outside(touched, art) == []


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_index_load_refuses_names_outside_the_folder(artefacts, tmp_path, victim, touched, how):
    from csmae.retrieval.index import SearchIndex

    art = copy_artefact(artefacts["index-exact"], tmp_path)
    _poison(art, _names(art, victim)[how])
    with pytest.raises(IntegrityError, match="is refused: manifest.json \"checksums\" names the file"):
        SearchIndex.load(art)
    assert _outside(touched, art) == []


def test_index_load_refuses_an_items_file_outside(artefacts, tmp_path, victim):
    from csmae.retrieval.index import SearchIndex

    art = copy_artefact(artefacts["index-exact"], tmp_path)
    man = json.loads((art / "manifest.json").read_text())
    man["files"]["items"] = str(victim)
    (art / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IntegrityError, match="is an absolute path"):
        SearchIndex.load(art)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_model_load_refuses_names_outside_the_folder(artefacts, tmp_path, victim, touched, how):
    from csmae.models import from_pretrained

    art = copy_artefact(artefacts["model"], tmp_path)
    _poison(art, _names(art, victim)[how])
    with pytest.raises(IntegrityError, match="model folder .* is refused"):
        from_pretrained(art)
    assert _outside(touched, art) == []


def test_embeddings_shard_outside_the_folder_is_refused(artefacts, tmp_path, victim):
    from csmae.retrieval.embeddings import load_embeddings

    art = copy_artefact(artefacts["embeddings"], tmp_path)
    man = json.loads((art / "manifest.json").read_text())
    man["shards"][0]["file"] = "../outside/secret.txt"
    (art / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IntegrityError, match="climbs out of the folder"):
        load_embeddings(art)


def test_store_table_outside_the_folder_is_refused(artefacts, tmp_path, victim):
    from csmae.data.store import open_store

    art = copy_artefact(artefacts["store"], tmp_path)
    man = json.loads((art / "manifest.json").read_text())
    man["table"] = str(victim)
    (art / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IntegrityError, match="is an absolute path"):
        open_store(art)


def test_http_reload_refuses_names_outside_the_folder(artefacts, tmp_path, victim, touched):
    from fastapi.testclient import TestClient

    from csmae.retrieval import Retriever
    from csmae.service import ServiceSettings, create_app

    art = copy_artefact(artefacts["index-exact"], tmp_path)
    r = Retriever.load(art)
    app = create_app(r, settings=ServiceSettings(admin_token="t0ken"))
    _poison(art, _names(art, victim)["dotdot"])
    touched.clear()
    with TestClient(app, raise_server_exceptions=False) as c:
        res = c.post("/api/reload", json={}, headers={"Authorization": "Bearer t0ken"})
    assert res.status_code == 400, res.text
    assert "still serving the previous index" in res.json()["detail"]
    assert "climbs out of the folder" in res.json()["detail"]
    assert _outside(touched, art) == []


@pytest.mark.parametrize("name, ok", [
    ("items.parquet", True), ("sub/dir/x.npy", True), ("a..b", True),
    ("../x", False), ("sub/../../x", False), ("/etc/passwd", False), ("C:\\x", False), ("..\\x", False),
    ("", False), (3, False), ("a\x00b", False),
])
def test_outside_reason_table(tmp_path, name, ok):
    assert (outside_reason(tmp_path, name) is None) == ok
