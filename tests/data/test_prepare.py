"""csmae prepare: resume after a kill without redoing chunks, skip report, workers, CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import csmae.data.prepare as prep
from csmae.data.base import DataError
from csmae.data.prepare import EXIT_AFTER_ENV, prepare
from csmae.data.store import StoreDataset
from csmae.data.synth import write_synthetic


@pytest.fixture(scope="module")
def synth_v1(tmp_path_factory) -> list[str]:
    return [str(p) for p in write_synthetic(tmp_path_factory.mktemp("syn") / "v1", n=40, seed=5)]


def _same_store(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.npy"))
    assert names == sorted(p.name for p in b.glob("*.npy")) and names
    for name in names:
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    assert pq.read_table(a / "pairs.parquet").equals(pq.read_table(b / "pairs.parquet"))
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    ma.pop("created"), mb.pop("created")
    assert ma == mb
    assert (a / "skipped.csv").read_text() == (b / "skipped.csv").read_text()


def test_resume_after_kill(synth_v1, tmp_path, monkeypatch):
    ref = prepare(synth_v1, tmp_path / "ref", chunk_size=8)
    assert ref.chunks == 5 and ref.pairs == 40
    out = tmp_path / "store"
    code = ("import sys; from csmae.data.prepare import prepare; "
            f"prepare(sys.argv[1:], {str(out)!r}, chunk_size=8)")
    env = {**os.environ, EXIT_AFTER_ENV: "2"}
    proc = subprocess.run([sys.executable, "-c", code, *synth_v1], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    partial = tmp_path / "store.partial"
    assert not out.exists() and partial.is_dir()
    assert sorted(p.name for p in (partial / "journal").glob("chunk-*.json")) == [
        "chunk-00000.json", "chunk-00001.json"]

    ran: list[int] = []
    real = prep._do_chunk

    def spy(k, *a):
        ran.append(k)
        return real(k, *a)

    monkeypatch.setattr(prep, "_do_chunk", spy)
    res = prepare(synth_v1, out, chunk_size=8)
    assert ran == [2, 3, 4]  # committed chunks were not redone
    assert res.chunks_resumed == 2 and res.chunks_done_now == 3
    assert not partial.exists()
    _same_store(out, ref.path)


class _Killed(Exception):
    pass


def test_changed_inputs_restart(synth_v1, tmp_path, monkeypatch):
    out = tmp_path / "s"

    def fake_exit(code):
        raise _Killed(code)

    with monkeypatch.context() as m:  # in-process "kill" after one committed chunk
        m.setenv(EXIT_AFTER_ENV, "1")
        m.setattr(prep.os, "_exit", fake_exit)
        with pytest.raises(_Killed):
            prepare(synth_v1, out, chunk_size=8, sensors=["s1"])
    assert len(list((tmp_path / "s.partial" / "journal").glob("chunk-*.json"))) == 1
    res = prepare(synth_v1, out, chunk_size=8)  # other sensors: the partial run is not reused
    assert res.chunks_resumed == 0 and set(StoreDataset(out).sensors) == {"s1", "s2"}


def test_bad_patches_are_skipped_and_reported(tmp_path):
    roots = write_synthetic(tmp_path / "bad", n=12, seed=1)
    s2_root, s1_root = roots[0], roots[1]
    s2_names = sorted(p.name for p in s2_root.iterdir())
    # 1. truncated band file  2. S2 patch whose S1 partner folder is gone  3. NaN in an S1 band
    trunc = s2_root / s2_names[0] / f"{s2_names[0]}_B05.tif"
    trunc.write_bytes(trunc.read_bytes()[:100])
    s1_dirs = {json.loads(next(d.glob("*.json")).read_text())["corresponding_s2_patch"]: d
               for d in s1_root.iterdir()}
    import shutil

    import tifffile

    shutil.rmtree(s1_dirs[s2_names[1]])
    vv = next(s1_dirs[s2_names[2]].glob("*_VV.tif"))
    arr = tifffile.imread(vv)
    arr[5, 5] = np.nan
    tifffile.imwrite(vv, arr)

    with pytest.raises(DataError):
        prepare([str(p) for p in roots], tmp_path / "stop", on_error="stop", chunk_size=4)

    res = prepare([str(p) for p in roots], tmp_path / "store", on_error="skip", chunk_size=4)
    assert res.pairs == 9 and res.skipped == 3
    rows = list(csv.DictReader(open(tmp_path / "store" / "skipped.csv")))
    by = {r["patch"]: r for r in rows}
    assert set(by) == set(s2_names[:3])
    assert "B05" in by[s2_names[0]]["file"] + by[s2_names[0]]["reason"]
    assert "S1 partner" in by[s2_names[1]]["reason"]
    assert "NaN" in by[s2_names[2]]["reason"]
    st = StoreDataset(tmp_path / "store")
    assert st.manifest["counts"]["skipped"] == 3 and sorted(st.ids) == s2_names[3:]


def test_workers_and_cli(synth_v1, tmp_path, capsys):
    from csmae.cli import main

    one = prepare(synth_v1, tmp_path / "one", chunk_size=8)
    two = prepare(synth_v1, tmp_path / "two", chunk_size=8, workers=2)
    _same_store(two.path, one.path)
    assert main(["prepare", *synth_v1, "--out", str(tmp_path / "cli"), "--chunk-size", "8"]) == 0
    assert "40 pairs, 0 skipped" in capsys.readouterr().out
    _same_store(tmp_path / "cli", one.path)
    assert main(["prepare", *synth_v1, "--out", str(tmp_path / "cli")]) == 1  # exists


def test_subset_names_file(synth_v1, tmp_path):
    names = sorted(p.name for p in Path(synth_v1[0]).iterdir())[::5]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    res = prepare(synth_v1, tmp_path / "sub", subset=tmp_path / "names.txt")
    assert res.pairs == len(names) and sorted(StoreDataset(res.path).ids) == names


def test_concurrent_prepare_is_refused(synth_v1, tmp_path):
    import fcntl

    partial = tmp_path / "s.partial"
    partial.mkdir()
    with open(partial / ".lock", "a+") as f:  # another prepare holds the lock
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another csmae prepare"):
            prepare(synth_v1, tmp_path / "s")
    assert prepare(synth_v1, tmp_path / "s", chunk_size=16).pairs == 40
