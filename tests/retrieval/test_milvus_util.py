"""Milvus Lite housekeeping (#21): no grpc traceback on a command, an existing x.db that is not a
Milvus Lite database is refused untouched; passwords never leave in an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'csmae[milvus]')")

from csmae.cli import main  # noqa: E402
from csmae.retrieval.backends import milvus as M  # noqa: E402
from csmae.retrieval.backends.milvus_util import redact  # noqa: E402

from .test_index_grow import make_emb, write_emb  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from csmae.cli import main; sys.exit(main(sys.argv[1:]))"


def test_a_lite_command_prints_no_grpc_traceback(tmp_path):
    emb = write_emb(make_emb([f"a{i}" for i in range(6)]), tmp_path / "emb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for argv in (
        ["index", str(emb), "--out", str(tmp_path / "idx"), "--backend", "milvus", "--uri", "x.db"],
        ["search", str(tmp_path / "idx"), "--id", "a1", "--sensor", "s1", "--k", "3"],
    ):
        r = subprocess.run([sys.executable, "-c", CLI, *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Method not implemented" not in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("what", ["folder", "sqlite", "file", "symlink"])
def test_an_existing_non_milvus_db_is_refused_untouched(tmp_path, capsys, what):
    emb = write_emb(make_emb(["a1", "a2"]), tmp_path / "emb")
    db = tmp_path / "x.db"
    if what == "folder":
        db.mkdir()
        (db / "thesis.tex").write_text("mine")
    elif what == "sqlite":
        db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    elif what == "file":
        db.write_text("notes")
    else:
        (tmp_path / "elsewhere").mkdir()
        db.symlink_to(tmp_path / "elsewhere")
    snapshot = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file())
    argv = ["index", str(emb), "--out", str(tmp_path / "idx"), "--backend", "milvus", "--uri", str(db)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{db} exists and is" in err and "not a Milvus Lite database" in err and "will not touch it" in err
    if what == "sqlite":
        assert "SQLite database file" in err
    assert not (tmp_path / "idx").exists()
    assert (
        sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file())
        == snapshot
    )


def test_a_fresh_or_real_lite_folder_is_used(tmp_path):
    empty = tmp_path / "empty.db"
    empty.mkdir()
    be = M.create(str(empty), dim=4, label_names=[], archive=True)
    assert be.client.has_collection(be.collection)
    be.close()
    again = M.connect(str(empty))  # a folder Milvus Lite wrote is a Milvus Lite database
    assert be.collection in again.list_collections()
    again.close()


def test_passwords_are_redacted():
    assert redact("http://root:s3cret@host:19530") == "http://root:***@host:19530"
    assert redact("https://u:p%40ss@h/x") == "https://u:***@h/x"
    assert redact("http://host:19530") == "http://host:19530"
    with pytest.raises(M.MilvusUnavailable) as e:
        M.connect("http://root:s3cret@127.0.0.1:1", timeout=1)
    assert "s3cret" not in str(e.value) and "root:***@" in str(e.value)
