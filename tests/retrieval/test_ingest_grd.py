"""``csmae ingest`` of raw products: a zipped L2A + a zipped raw GRD (the real product's metadata) with
``--dem`` -> the index of ``tile --dem`` + ``embed`` + ``index`` by hand; the record keeps the GRD
processing (calibration, geocoding, DEM and its SHA-256); a re-ingest with another processing, or
a new scene calibrated otherwise, is refused with the index unchanged; the same processing is skipped.

Scenes: scripts/make_example_scene.py's raw example (2 x 2 patches on tile T31TDK, the GRD's DN
written from the same land cover, a DEM from the product's grid heights)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("sarsen")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    from tests.example_scene import example_scene_script
    from tests.retrieval.conftest import save_tiny
    from tests.scenes.grd_fixtures import _xml_safe

    tmp = tmp_path_factory.mktemp("ingest_grd")
    mod = example_scene_script()
    parts = mod.make_raw(tmp / "raw", _xml_safe(), rows=2, cols=2)
    return {"s2": parts["raw_s2"], "s1": parts["raw_s1"], "dem": parts["dem"],
            "model": save_tiny(tmp / "model"), "tmp": tmp}


def _ingest(raw: dict[str, Path], index: Path, *more: str, s2: Path | None = None) -> list[str]:
    return ["ingest", str(s2 or raw["s2"]), str(raw["s1"]), "--model", str(raw["model"]), "--index",
            str(index), "--precision", "fp32", "--device", "cpu", *more]


def _renamed_zip(src: Path, folder: Path, old_new: tuple[str, str]) -> Path:
    """A copy of a zipped product under another product name (its .SAFE inside names the product)."""
    import zipfile

    dest = folder / src.name.replace(*old_new)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename.replace(*old_new, 1), zin.read(info))
    return dest


def _files(index: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in index.iterdir()}


def test_cli_grd_choices_are_the_readers() -> None:
    """The one definition of the GRD options (csmae.cli.grd_options, light for the parser) names the
    readers' own choices; tile and ingest both take them from it."""
    import argparse

    from csmae.cli import grd_options, ingest, tile
    from csmae.data.scenes.grd_geocode import GEOCODINGS
    from csmae.data.scenes.grd_tables import CALIBRATIONS

    assert grd_options.CALIBRATIONS == CALIBRATIONS and grd_options.GEOCODINGS == GEOCODINGS
    for cmd in (tile, ingest):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        opts = {a.dest: a for a in p._actions}
        assert opts["s1_calibration"].choices == CALIBRATIONS and opts["s1_geocoding"].choices == GEOCODINGS
        assert opts["dem"].default is None and opts["s1_calibration"].default == "sigma0"


@pytest.fixture(scope="module")
def by_hand(raw) -> Path:
    """``tile --dem`` + ``embed`` + ``index`` of the raw example; asserts the DEM changed the S1 pixels."""
    from csmae.cli import main
    from tests.geo.tile_fixtures import store_arrays

    tmp = raw["tmp"]
    assert main(["tile", "--s2", str(raw["s2"]), "--s1", str(raw["s1"]), "--dem", str(raw["dem"]), "--out",
                 str(tmp / "store")]) == 0
    assert main(["embed", str(raw["model"]), str(tmp / "store"), "--out", str(tmp / "emb"),
                 "--precision", "fp32", "--device", "cpu"]) == 0
    assert main(["index", str(tmp / "emb"), "--out", str(tmp / "hand")]) == 0
    plain = tmp / "plain"  # without the DEM: other S1 pixels
    assert main(["tile", "--s2", str(raw["s2"]), "--s1", str(raw["s1"]), "--out", str(plain)]) == 0
    assert not np.array_equal(store_arrays(tmp / "store")[0]["s1"], store_arrays(plain)[0]["s1"])
    return tmp / "hand"


def _same_index(index: Path, hand: Path) -> None:
    from csmae.retrieval.index import SearchIndex

    got, want = SearchIndex.load(index), SearchIndex.load(hand)
    for col in ("id", "sensor"):
        assert list(got.items[col]) == list(want.items[col])
    rows = np.arange(want.backend.n_rows, dtype=np.int64)
    np.testing.assert_allclose(got.backend.reconstruct(rows), want.backend.reconstruct(rows), atol=1e-6)


def test_ingest_zipped_raw_grd_with_dem(raw, by_hand, tmp_path, capsys) -> None:
    from csmae.cli import main
    from csmae.retrieval.index import SearchIndex
    from csmae.retrieval.ingest import work_folder

    index = tmp_path / "index"
    assert main(_ingest(raw, index, "--dem", str(raw["dem"]))) == 0
    assert "ingested 4 patches" in capsys.readouterr().out  # 2 x 2 pairs: 4 S2 + 4 S1 items
    _same_index(index, by_hand)  # the index of tile --dem + embed + index by hand
    got = SearchIndex.load(index)
    rec = got.manifest["ingested"][0]
    assert rec["tiling"]["s1_calibration"] == "sigma0" and rec["tiling"]["dem"] == str(raw["dem"].resolve())
    assert rec["tiling"]["dem_sha256"] == hashlib.sha256(raw["dem"].read_bytes()).hexdigest()
    assert any(name.endswith(".SAFE.zip") for name in rec["files"]["s1"])
    before = _files(index)
    capsys.readouterr()
    # the same processing: skipped (--s1-geocoding does nothing with a DEM: not a different processing)
    for more in (["--dem", str(raw["dem"])], ["--dem", str(raw["dem"]), "--s1-geocoding", "poly3"]):
        assert main(_ingest(raw, index, *more)) == 0
        assert "already ingested (4 patches), skipped" in capsys.readouterr().out
    assert _files(index) == before
    # another processing of the same scene: refused before anything is done, index unchanged
    moved = tmp_path / "dem_copy.tif"  # the same DEM bytes elsewhere: the same processing
    shutil.copy(raw["dem"], moved)
    assert main(_ingest(raw, index, "--dem", str(moved))) == 0
    capsys.readouterr()
    other_dem = tmp_path / "dem_other.tif"
    import rasterio

    with rasterio.open(raw["dem"]) as ds:
        profile, z = ds.profile, ds.read(1)
    with rasterio.open(other_dem, "w", **profile) as ds:
        ds.write(z + 50, 1)
    scene = rec["scene"]
    dem = str(raw["dem"])
    for more, said in (([], "tps GCP geocoding, no DEM"),
                       (["--dem", dem, "--s1-calibration", "gamma0"], "gamma0, terrain-corrected"),
                       (["--dem", str(other_dem)], str(other_dem))):
        assert main(_ingest(raw, index, *more)) == 1, more
        err = capsys.readouterr().err
        assert "clash with the S1 GRD processing recorded" in err and "nothing was changed" in err, err
        assert f"{scene}: ingested as sigma0, terrain-corrected with the DEM {raw['dem'].resolve()}" in err
        assert said in err
        assert _files(index) == before and not work_folder(index).exists()
    # a new scene (a later L2A of the tile) calibrated otherwise than the index's raw GRD scenes: refused
    later = _renamed_zip(raw["s2"], tmp_path, ("20210809T105031", "20210819T105031"))
    assert main(_ingest(raw, index, "--dem", str(raw["dem"]), "--s1-calibration", "beta0", s2=later)) == 1
    err = capsys.readouterr().err
    assert "this run calibrates to beta0, the index's raw GRD scenes are sigma0" in err
    assert _files(index) == before
    # the same calibration: the new scene goes in (its S1 repeats the first scene's: not added again)
    assert main(_ingest(raw, index, "--dem", str(raw["dem"]), s2=later)) == 0
    man = json.loads((index / "manifest.json").read_text())
    assert [r["scene"][:26] for r in man["ingested"]] == ["S2B_MSIL2A_20210809T105031",
                                                           "S2B_MSIL2A_20210819T105031"]
    assert man["ingested"][1]["duplicates"]["count"] == 4


def test_killed_run_without_dem_then_rerun_with_dem(raw, by_hand, tmp_path) -> None:
    """A run killed (kill -9) once its scene is tiled without a DEM, then the command with ``--dem``: the
    store tiled by the killed run is not reused (work folders are keyed by the processing); the index
    is that of ``--dem`` by hand."""
    import os
    import signal
    import subprocess
    import sys

    from csmae.cli import main
    from csmae.retrieval.ingest import PAUSE_ENV, work_folder

    index = tmp_path / "index"
    env = {**os.environ, PAUSE_ENV: "tiled", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "csmae", *_ingest(raw, index)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("ingest: at tiled"):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    stores = list(work_folder(index).glob("*/store/manifest.json"))
    assert len(stores) == 1 and json.loads(stores[0].read_text())["tiling"]["dem"] is None
    assert main(_ingest(raw, index, "--dem", str(raw["dem"]))) == 0
    _same_index(index, by_hand)
    assert not work_folder(index).exists()
