"""csmae verify, old artefacts without checksums, non-finite vectors, clear errors, stale temp folders."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from csmae.cli import main
from csmae.integrity import file_digest
from tests.integrity.conftest import copy_artefact

KINDS = ("store", "model", "embeddings", "index-exact", "index-hnsw", "checkpoint")


def _drop_checksums(art: Path) -> None:
    if art.is_file():
        art.with_name(art.name + ".checksum.json").unlink()
        return
    man = json.loads((art / "manifest.json").read_text())
    man.pop("checksums")
    (art / "manifest.json").write_text(json.dumps(man))


def test_manifests_record_the_real_digests(artefacts):
    """Recorded entries are the files' sizes and SHA-256 (checked with hashlib, independently)."""
    import hashlib

    for kind in KINDS:
        art = artefacts[kind]
        if art.is_file():
            sums = json.loads(art.with_name(art.name + ".checksum.json").read_text())["checksums"]
            folder = art.parent
        else:
            sums = json.loads((art / "manifest.json").read_text())["checksums"]
            folder = art
        assert sums, kind
        for name, entry in sums.items():
            data = (folder / name).read_bytes()
            assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, (kind, name)
    store_files = set(json.loads((artefacts["store"] / "manifest.json").read_text())["checksums"])
    assert store_files == {"s1.npy", "s2.npy", "pairs.parquet", "skipped.csv"}


@pytest.mark.parametrize("kind", KINDS)
def test_verify_cli_ok_damaged_and_unverified(artefacts, tmp_path, capsys, kind):
    art = copy_artefact(artefacts[kind], tmp_path)
    assert main(["verify", str(art)]) == 0
    out = capsys.readouterr().out
    assert "verified: " in out and "FAIL" not in out and out.count("OK ") >= 1
    victim = art if art.is_file() else next(p for p in sorted(art.iterdir())
                                             if p.suffix in (".npy", ".parquet", ".faiss", ".safetensors"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    victim.write_bytes(bytes(data))
    assert main(["verify", str(art)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {victim.name}: sha256 mismatch" in out and "DAMAGED" in out
    _drop_checksums(art)
    assert main(["verify", str(art)]) == 3
    assert "no checksums recorded" in capsys.readouterr().out


def test_verify_run_folder_and_bad_paths(artefacts, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    copy_artefact(artefacts["checkpoint"], run / "checkpoints")
    copy_artefact(artefacts["model"], run)
    (run / "manifest.json").write_text(json.dumps({"kind": "csmae-run"}))
    assert main(["verify", str(run)]) == 0
    out = capsys.readouterr().out
    assert "OK   last.ckpt" in out and "OK   model.safetensors" in out
    (run / "checkpoints" / "last.ckpt").write_bytes(b"junk")
    assert main(["verify", str(run)]) == 1
    assert "FAIL last.ckpt: truncated" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "nope")]) == 1
    (tmp_path / "x.txt").write_text("hi")
    assert main(["verify", str(tmp_path / "x.txt")]) == 1
    assert "not a training checkpoint" in capsys.readouterr().err


def test_old_artefacts_without_checksums_load_with_one_warning(artefacts, tmp_path, caplog):
    from csmae.models import from_pretrained
    from csmae.retrieval.embeddings import load_embeddings
    from csmae.retrieval.index import SearchIndex
    from csmae.training.checkpoint import check_checkpoint

    arts = {k: copy_artefact(artefacts[k], tmp_path) for k in ("model", "embeddings", "index-exact",
                                                                 "checkpoint")}
    for a in arts.values():
        _drop_checksums(a)
    with caplog.at_level(logging.WARNING, logger="csmae.integrity"):
        for _ in range(2):
            from_pretrained(arts["model"])
            load_embeddings(arts["embeddings"])
            SearchIndex.load(arts["index-exact"])
            check_checkpoint(arts["checkpoint"])
    msgs = [r.getMessage() for r in caplog.records if "records no checksums" in r.getMessage()]
    assert len(msgs) == 4, msgs  # once per artefact, not per load


def test_checkpoint_killed_between_renames_still_verifies(artefacts, tmp_path):
    """The sidecar is renamed before the checkpoint: the old checkpoint matches ``previous``."""
    import torch

    from csmae.training.checkpoint import AtomicCheckpointIO, check_checkpoint, verify_checkpoint_file

    ck = copy_artefact(artefacts["checkpoint"], tmp_path)
    old_bytes = ck.read_bytes()
    state = torch.load(ck, weights_only=True)
    state["global_step"] = 99
    io = AtomicCheckpointIO()
    io.save_checkpoint(state, ck)
    side = json.loads(ck.with_name("last.ckpt.checksum.json").read_text())
    assert side["checksums"]["last.ckpt"]["sha256"] == file_digest(ck)
    ck.write_bytes(old_bytes)  # as if killed after the sidecar's rename, before the checkpoint's
    assert verify_checkpoint_file(ck)
    assert check_checkpoint(ck)["global_step"] == 0
    io.remove_checkpoint(ck)
    assert not ck.exists() and not ck.with_name("last.ckpt.checksum.json").exists()


# ------------------------------------------------------------------ non-finite vectors
def test_nonfinite_vectors_are_never_indexed(tmp_path, caplog):
    from csmae.retrieval.index import SearchIndex, build_index
    from tests.retrieval.conftest import random_embeddings

    emb = random_embeddings(n_pairs=30, d=16)
    emb.vectors[[3, 10]] = np.nan
    emb.vectors[17, 4] = np.inf
    bad = {f"{emb.ids[i]}/{emb.sensors[i]}" for i in (3, 10, 17)}
    with caplog.at_level(logging.WARNING):
        si = build_index(emb, "exact", tmp_path / "idx")
    assert "skipping 3 of 60 vectors with NaN/inf values" in caplog.text
    assert si.index.ntotal == 57 and si.manifest["count"] == 57
    assert si.manifest["skipped_nonfinite"] == {"count": 3, "items": sorted(bad, key=lambda s: int(s[1:5]))}
    loaded = SearchIndex.load(tmp_path / "idx")
    kept = {f"{i}/{s}" for i, s in zip(loaded.items["id"], loaded.items["sensor"])}
    assert not kept & bad and len(kept) == 57
    # every stored vector is finite and every item is reachable (brute force over reconstruct)
    vecs = loaded.index.reconstruct_n(0, loaded.index.ntotal)
    assert np.isfinite(vecs).all()
    scores, rows = loaded.search(vecs, 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(57))
    emb.vectors[:] = np.nan
    with pytest.raises(ValueError, match="every one of the 60 vectors has NaN/inf"):
        build_index(emb, "exact")


def test_nonfinite_descriptors_are_reported_at_embed_time(tmp_path, caplog):
    from csmae.retrieval.embed import _report_nonfinite

    vec = np.ones((6, 4), np.float32)
    vec[3, 1] = np.nan  # pair 1, second sensor (rows interleave pair by pair)
    with caplog.at_level(logging.WARNING):
        _report_nonfinite(tmp_path / "part-00000.parquet", vec, ["a", "b", "c"], ["s1", "s2"])
    assert "1 descriptor(s) with NaN/inf values (b/s2)" in caplog.text


# ------------------------------------------------------------------ clear errors (14.5)
def test_store_with_fewer_rows_or_truncated_names_the_file(artefacts, tmp_path):
    from csmae.data.base import DataError
    from csmae.data.store import StoreDataset

    art = copy_artefact(artefacts["store"], tmp_path)
    arr = np.load(art / "s2.npy")
    np.save(art / "s2.npy", arr[:5])  # fewer rows than the manifest and the table
    with pytest.raises(DataError, match=r"s2\.npy: record file holds shape \(5, "):
        StoreDataset(art)
    np.save(art / "s2.npy", arr)
    (art / "s1.npy").write_bytes((art / "s1.npy").read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"s1\.npy: record file is truncated"):
        StoreDataset(art, sensors=["s2"])  # checked even when that sensor is not read


def test_one_flipped_bit_in_the_store_table_is_refused_on_open(artefacts, tmp_path):
    """pairs.parquet (labels, splits) is hashed on every open: one bit is enough."""
    from csmae.data.store import StoreDataset

    art = copy_artefact(artefacts["store"], tmp_path)
    data = bytearray((art / "pairs.parquet").read_bytes())
    data[len(data) // 3] ^= 0x04
    (art / "pairs.parquet").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"store table .*pairs\.parquet is damaged \(sha256 mismatch"):
        StoreDataset(art)


def test_pickle_in_place_of_weights_without_a_manifest(artefacts, tmp_path):
    import pickle

    from csmae.models import from_pretrained

    art = copy_artefact(artefacts["model"], tmp_path)
    (art / "manifest.json").unlink()  # an old folder: nothing to verify against
    (art / "model.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        from_pretrained(art)


def test_complex_band_is_refused_naming_file_and_band(tmp_path):
    import tifffile

    from csmae.data.base import DataError, check_band
    from csmae.data.tiff import read_band

    path = tmp_path / "S2A_patch_B04.tif"
    tifffile.imwrite(path, (np.ones((120, 120)) + 1j).astype(np.complex64))
    with pytest.raises(DataError, match=r"S2A_patch_B04\.tif: patch p1: .*complex64"):
        read_band(path, band="B04", expected_side=120, patch="p1")  # the TIFF decoder refuses it
    # every other reader's bands (LMDB records, arrays) pass check_band
    with pytest.raises(DataError, match=r"rec\.lmdb: patch p1: band B04 is complex-valued \(complex64\)"):
        check_band(np.ones((120, 120), np.complex64), band="B04", expected_side=120, patch="p1",
                   path="rec.lmdb")
    with pytest.raises(DataError, match="band VV is of type bool"):
        check_band(np.ones((120, 120), bool), band="VV", expected_side=120, patch="p1", path="x")


# ------------------------------------------------------------------ stale temp folders
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _tmp_folder(parent: Path, name: str, *, owner: dict | None) -> Path:
    d = parent / name
    d.mkdir()
    (d / "index.faiss").write_bytes(b"partial")
    if owner is not None:
        (d / ".csmae-writer.json").write_text(json.dumps(owner))
    return d


def test_killed_index_temp_folders_are_cleaned_safely(tmp_path):
    from csmae.retrieval.index import build_index
    from tests.retrieval.conftest import random_embeddings

    host, dead, dead2, live = socket.gethostname(), _dead_pid(), _dead_pid(), os.getppid()
    stale = _tmp_folder(tmp_path, f"idx.tmp-{dead2}", owner={"host": host, "pid": dead2})
    alive = _tmp_folder(tmp_path, f"idx.tmp-{live}", owner={"host": host, "pid": live})
    dead3 = _dead_pid()
    elsewhere = _tmp_folder(tmp_path, f"idx.tmp-{dead3}", owner={"host": "other-node", "pid": dead3})
    nonmatching = _tmp_folder(tmp_path, f"idx.old-{dead}x", owner=None)
    young_legacy = _tmp_folder(tmp_path, f"idx.tmp-{dead}", owner=None)  # no owner file, < 1 h old
    legacy = _tmp_folder(tmp_path, f"idx.old-{dead}", owner=None)
    other = _tmp_folder(tmp_path, f"other.tmp-{dead}", owner={"host": host, "pid": dead})
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    build_index(random_embeddings(n_pairs=5), "exact", tmp_path / "idx")
    assert not stale.exists() and not legacy.exists()
    assert alive.exists() and elsewhere.exists() and young_legacy.exists() and other.exists()
    assert nonmatching.exists()
    assert (tmp_path / "idx" / "manifest.json").exists()
    assert not (tmp_path / "idx" / ".csmae-writer.json").exists()


def test_a_killed_csmae_index_leaves_a_folder_the_next_run_removes(tmp_path):
    """Kill -9 a real ``csmae index`` while it writes, then run it again."""
    from tests.retrieval.conftest import random_embeddings

    emb = random_embeddings(n_pairs=5)
    code = (
        "import os, signal, sys\n"
        "import csmae.retrieval.index as ix\n"
        "from tests.retrieval.conftest import random_embeddings\n"
        "ix.checksum_files = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # killed mid-save\n"
        "ix.build_index(random_embeddings(n_pairs=5), 'exact', sys.argv[1])\n"
    )
    out = tmp_path / "idx"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = list(tmp_path.glob("idx.tmp-*"))
    assert len(left) == 1 and not out.exists()
    from csmae.retrieval.index import build_index

    build_index(emb, "exact", out)
    assert not list(tmp_path.glob("idx.tmp-*")) and (out / "manifest.json").exists()


# ------------------------------------------------------------------ prepare resume
class _Killed(Exception):
    pass


def test_prepare_resume_rehashes_committed_chunks(tmp_path, monkeypatch, caplog):
    """Records of a committed chunk damaged while the run was down are redone, not trusted."""
    import csmae.data.prepare as prep
    from csmae.data.synth import write_synthetic

    src = [str(p) for p in write_synthetic(tmp_path / "v1", n=12, seed=5)]
    ref = prep.prepare(src, tmp_path / "ref", chunk_size=4)

    def fake_exit(code):
        raise _Killed(code)

    out = tmp_path / "store"
    with monkeypatch.context() as m:
        m.setenv(prep.EXIT_AFTER_ENV, "2")
        m.setattr(prep.os, "_exit", fake_exit)
        with pytest.raises(_Killed):
            prep.prepare(src, out, chunk_size=4)
    rec = np.load(tmp_path / "store.partial" / "s2.npy", mmap_mode="r+")
    rec[5, 0, 0, 0] += 1.0  # chunk 1 (pairs 4-7) damaged on disk
    rec.flush()
    del rec
    ran: list[int] = []
    real = prep._do_chunk
    monkeypatch.setattr(prep, "_do_chunk", lambda k, *a: (ran.append(k), real(k, *a))[1])
    with caplog.at_level(logging.WARNING):
        res = prep.prepare(src, out, chunk_size=4)
    assert ran == [1, 2] and res.chunks_resumed == 1
    assert "records of chunk 1 (pairs 4-7) changed since they were committed" in caplog.text
    for name in ("s1.npy", "s2.npy"):
        np.testing.assert_array_equal(np.load(out / name), np.load(ref.path / name))
    assert main(["verify", str(out)]) == 0


def test_preview_from_a_damaged_store_names_the_file(artefacts, tmp_path):
    """The issue's case: a store file with fewer rows than its manifest; previews said '--data?'."""
    from fastapi.testclient import TestClient

    from csmae.retrieval.retriever import Retriever
    from csmae.service import create_app

    store = copy_artefact(artefacts["store"], tmp_path)
    arr = np.load(store / "s2.npy")
    np.save(store / "s2.npy", arr[:3])
    r = Retriever.load(artefacts["index-exact"], model_dir=artefacts["model"], data=[store])
    pid = str(r.index.items["id"][0])
    with TestClient(create_app(r), raise_server_exceptions=False) as client:
        resp = client.get(f"/api/items/{pid}/preview/s2")
    assert resp.status_code == 404 and resp.headers["content-type"].startswith("application/json")
    assert "dataset is damaged (s2.npy: record file holds shape (3," in resp.text


def test_evaluation_report_records_checksums(artefacts, tmp_path, capsys):
    rep = tmp_path / "eval"
    assert main(["evaluate", "--embeddings", str(artefacts["embeddings"]), "--out", str(rep),
                 "--ks", "1,5", "--grids", "0", "--queries", "all", "--archive", "all"]) == 0
    capsys.readouterr()
    assert main(["verify", str(rep)]) == 0
    assert "OK   metrics.json" in capsys.readouterr().out
    (rep / "metrics.md").write_text((rep / "metrics.md").read_text().replace("0", "1", 1))
    assert main(["verify", str(rep)]) == 1
    assert "FAIL metrics.md: sha256 mismatch" in capsys.readouterr().out
