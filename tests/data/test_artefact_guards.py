"""Nothing that is not a csmae artefact of the same kind is deleted, written into or replaced (#21).

The attacks of the issue: a pre-existing ``OUT.partial`` that is a symlink to the user's folder or a
folder of the user's files; ``--overwrite`` onto a folder of user files or another kind of artefact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csmae.atomic import PARTIAL_MARKER, check_replaceable, replace_folder
from csmae.data.prepare import prepare
from csmae.data.synth import write_synthetic


@pytest.fixture(scope="module")
def synth_v1(tmp_path_factory) -> list[str]:
    return [str(p) for p in write_synthetic(tmp_path_factory.mktemp("syn") / "v1", n=12, seed=3)]


def _victim(root: Path) -> Path:
    v = root / "victim"
    (v / "sub").mkdir(parents=True)
    (v / "data.txt").write_text("d\n")
    (v / "sub" / "more.txt").write_text("m\n")
    return v


def _intact(v: Path) -> None:
    assert sorted(p.relative_to(v).as_posix() for p in v.rglob("*")) == ["data.txt", "sub", "sub/more.txt"]
    assert (v / "data.txt").read_text() == "d\n"


def test_prepare_refuses_a_symlinked_partial_and_touches_nothing(synth_v1, tmp_path):
    v = _victim(tmp_path)
    (tmp_path / "s.partial").symlink_to(v)
    with pytest.raises(FileExistsError, match=r"s\.partial is a symbolic link.*nothing was deleted"):
        prepare(synth_v1, tmp_path / "s", chunk_size=4)
    _intact(v)  # not even a .lock written into it
    assert not (tmp_path / "s").exists()


def test_prepare_refuses_a_partial_of_user_files(synth_v1, tmp_path):
    v = _victim(tmp_path)
    part = tmp_path / "s.partial"
    v.rename(part)
    with pytest.raises(FileExistsError, match=rf"s\.partial exists and has no {PARTIAL_MARKER}"):
        prepare(synth_v1, tmp_path / "s", chunk_size=4)
    _intact(part)


def test_a_partial_of_another_command_is_refused(synth_v1, tmp_path):
    part = tmp_path / "s.partial"
    part.mkdir()
    (part / PARTIAL_MARKER).write_text(json.dumps({"kind": "tile"}))
    (part / "keep.npy").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="unfinished csmae 'tile', not a prepare"):
        prepare(synth_v1, tmp_path / "s", chunk_size=4)
    assert (part / "keep.npy").exists()


def test_prepare_overwrite_replaces_only_a_store(synth_v1, tmp_path):
    v = _victim(tmp_path)
    with pytest.raises(FileExistsError, match=r"victim is not a csmae store \(it holds no csmae manifest\)"):
        prepare(synth_v1, v, chunk_size=4, overwrite=True)
    _intact(v)
    assert not (tmp_path / "victim.partial").exists()  # refused before any work
    out = tmp_path / "store"
    prepare(synth_v1, out, chunk_size=4)
    assert prepare(synth_v1, out, chunk_size=6, overwrite=True).pairs == 12  # a store is replaced
    assert not any(p.name.startswith("store.") for p in tmp_path.iterdir())


def test_synth_overwrite_replaces_only_its_kind(tmp_path):
    v = _victim(tmp_path)
    with pytest.raises(FileExistsError, match="not a csmae synth"):
        write_synthetic(v, n=4, seed=0, overwrite=True)
    _intact(v)
    out = tmp_path / "syn"
    write_synthetic(out, n=4, seed=0)
    write_synthetic(out, n=5, seed=1, overwrite=True)
    with pytest.raises(FileExistsError, match="its manifest says 'csmae-synth'"):
        write_synthetic(out, n=4, seed=0, format="store", overwrite=True)  # another kind


def test_replace_folder_refuses_user_folders_symlinks_and_other_kinds(tmp_path):
    src = tmp_path / "new"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps({"kind": "csmae-index"}))
    v = _victim(tmp_path)
    with pytest.raises(FileExistsError, match="not a csmae index"):
        replace_folder(src, v)
    _intact(v)
    link = tmp_path / "link"
    link.symlink_to(v)
    with pytest.raises(FileExistsError, match="symbolic link"):
        replace_folder(src, link)
    _intact(v)
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"kind": "csmae-store"}))
    with pytest.raises(FileExistsError, match="its manifest says 'csmae-store'"):
        check_replaceable(other, "csmae-index")
    empty = tmp_path / "empty"
    empty.mkdir()
    replace_folder(src, empty)  # an empty folder holds nothing to lose
    assert json.loads((empty / "manifest.json").read_text())["kind"] == "csmae-index"


def test_index_overwrite_replaces_only_an_index(tmp_path, capsys):
    from csmae.cli import main
    from tests.retrieval.test_index_grow import make_emb, write_emb

    emb = write_emb(make_emb([f"p{i}" for i in range(8)]), tmp_path / "emb")
    v = _victim(tmp_path)
    rc = main(["index", str(emb), "--out", str(v), "--overwrite"])
    assert rc == 1 and "victim is not a csmae index" in capsys.readouterr().err
    _intact(v)
    out = tmp_path / "idx"
    assert main(["index", str(emb), "--out", str(out)]) == 0
    assert main(["index", str(emb), "--out", str(out), "--overwrite"]) == 0  # an index is replaced
    rc = main(["index", str(emb), "--out", str(emb), "--overwrite"])  # embeddings are not an index
    assert rc == 1 and "its manifest says 'csmae-embeddings'" in capsys.readouterr().err
    assert (emb / "part-00000.parquet").exists()


def test_evaluate_refuses_a_symlinked_partial(tmp_path, capsys):
    from csmae.cli import main

    v = _victim(tmp_path)
    (tmp_path / "rep.partial").symlink_to(v)
    rc = main(["evaluate", "--embeddings", str(tmp_path / "none"), "--out", str(tmp_path / "rep")])
    assert rc == 1 and "rep.partial is a symbolic link" in capsys.readouterr().err
    _intact(v)


def test_index_updates_refuse_options_they_do_not_take(tmp_path, capsys):
    from csmae.cli import main
    from tests.retrieval.test_index_grow import make_emb, write_emb

    emb = write_emb(make_emb([f"p{i}" for i in range(8)]), tmp_path / "emb")
    idx = tmp_path / "idx"
    assert main(["index", str(emb), "--out", str(idx)]) == 0
    (tmp_path / "gone.txt").write_text("p1\n")
    before = (idx / "manifest.json").read_text()
    gone = str(tmp_path / "gone.txt")
    rc = main(["index", "remove", str(idx), "--ids", gone, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 1 and "csmae index remove does not take --out" in err, err
    assert "takes --ids, --missing-ok" in err
    assert (idx / "manifest.json").read_text() == before  # nothing removed from the wrong place
    more = write_emb(make_emb(["q1"]), tmp_path / "more")
    rc = main(["index", "add", str(idx), str(more), "--kind", "hnsw"])
    assert rc == 1 and "csmae index add does not take --kind" in capsys.readouterr().err
    rc = main(["index", "compact", str(idx), "--overwrite"])
    assert rc == 1 and "csmae index compact does not take --overwrite" in capsys.readouterr().err
    rc = main(["index", str(emb), "--out", str(tmp_path / "i2"), "--ids", str(tmp_path / "gone.txt")])
    assert rc == 1 and "building an index does not take --ids" in capsys.readouterr().err
    assert main(["index", "remove", str(idx), "--ids", str(tmp_path / "gone.txt")]) == 0


def test_evaluate_with_embeddings_refuses_the_embedding_options(tmp_path, capsys):
    from csmae.cli import main

    rc = main(["evaluate", "--embeddings", str(tmp_path / "e"), "--out", str(tmp_path / "r"),
               "--embeddings-out", str(tmp_path / "x"), "--batch-size", "8"])
    err = capsys.readouterr().err
    assert rc == 1 and "with --embeddings nothing is embedded: --embeddings-out, --batch-size" in err, err
    assert not (tmp_path / "r.partial").exists()  # refused before anything is written
