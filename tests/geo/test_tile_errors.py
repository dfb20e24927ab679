"""``csmae tile`` on bad input: a clear error naming the file, and no store left behind."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tests.geo.tile_fixtures import S1_NAME


def _tile(capsys, *args: str) -> tuple[int, str, str]:
    from csmae.cli import main

    rc = main(["tile", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _band(scene: Path, band: str) -> Path:
    return next((scene / "s2").glob(f"*_{band}_*.tif"))


def _fails(capsys, scene: Path, *extra: str, names: Path | str, says: str) -> None:
    out = scene.parent / "store"
    rc, _, err = _tile(capsys, "--s2", str(scene / "s2"), "--s1", str(scene / "s1"), "--out", str(out),
                       *extra)
    assert rc == 1
    assert str(names) in err, err
    assert says in err, err
    assert not out.exists()


def test_the_good_scene_works_and_reports_the_time_gap(capsys, scene):
    rc, out, err = _tile(capsys, "--s2", str(scene / "s2"), "--s1", str(scene / "s1"),
                         "--out", str(scene.parent / "store"), "--max-days", "1")
    assert rc == 0, err
    assert "acquired 0.28 days apart" in out and "wrote" in out and "6 patches" in out


def test_s1_and_s2_that_do_not_overlap(capsys, scene, mosaic):
    from affine import Affine

    from csmae.data.scenes.example import write_s1

    shutil.rmtree(scene / "s1")
    far = mosaic.transform @ Affine.translation(20000, 0)  # 200 km east
    write_s1(scene / "s1", mosaic.s1[0], mosaic.s1[1], crs=mosaic.crs, transform=far, name=S1_NAME)
    _fails(capsys, scene, names=scene / "s2", says="S1 and S2 do not overlap")


def test_a_missing_band(capsys, scene):
    _band(scene, "B05").unlink()
    _fails(capsys, scene, names=scene / "s2", says="band(s) ['B05'] are missing")


def test_mismatched_band_sizes(capsys, scene, mosaic):
    from csmae.data.scenes.example import _write

    p = _band(scene, "B03")
    _write(p, [mosaic.s2["B03"][:-1]], crs=mosaic.crs, transform=mosaic.transform)
    _fails(capsys, scene, names=p, says="mismatched band sizes")


def test_a_file_that_is_not_a_raster(capsys, scene):
    p = _band(scene, "B04")
    p.write_text("this is not an image\n")
    _fails(capsys, scene, names=p, says="not a raster")


def test_a_raster_without_crs(capsys, scene, mosaic):
    import rasterio

    p = _band(scene, "B02")
    a = mosaic.s2["B02"]
    with rasterio.open(p, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=1,
                       dtype=a.dtype) as dst:
        dst.write(a, 1)
    _fails(capsys, scene, names=p, says="no CRS")


def test_a_stac_item_whose_assets_are_missing(capsys, tmp_path, scene):
    from csmae.data.scenes.example import write_stac_item
    from csmae.sensors import S2_BANDS_10

    assets = {b: _band(scene, b) for b in S2_BANDS_10}
    item = write_stac_item(tmp_path / "item.json", item_id="x", when=datetime(2017, 6, 13, tzinfo=UTC),
                           bbox=[0, 0, 1, 1], assets=assets)
    assets["B11"].unlink()
    rc, _, err = _tile(capsys, "--stac", str(item), "--out", str(tmp_path / "store"))
    assert rc == 1 and str(item) in err and "asset 'B11'" in err and "does not exist" in err, err
    rc, _, err = _tile(capsys, "--stac", str(tmp_path / "nope.json"), "--out", str(tmp_path / "store"))
    assert rc == 1 and "STAC item not found" in err


def test_scenes_too_far_apart_in_time(capsys, scene):
    for p in (scene / "s1").iterdir():
        p.rename(p.with_name(p.name.replace("20170613T165043", "20170901T165043")))
    _fails(capsys, scene, "--max-days", "10", names=scene / "s2", says="acquired 80.3 days from this S2")
    rc, out, _ = _tile(capsys, "--s2", str(scene / "s2"), "--s1", str(scene / "s1"),
                       "--out", str(scene.parent / "store"))  # no --max-days: the gap is reported
    assert rc == 0 and "acquired 80.28 days apart" in out


def test_unknown_times_with_max_days(capsys, scene):
    for p in (scene / "s1").iterdir():
        p.rename(p.with_name(p.name.replace("_20170613T165043", "")))
    _fails(capsys, scene, "--max-days", "3", names=scene / "s1", says="acquisition time is unknown")


def test_uncalibrated_s1_and_bad_options(capsys, scene, mosaic):
    from csmae.data.scenes.example import _write

    for p in list((scene / "s1").iterdir()):
        p.unlink()
        _write(p.with_name(p.name.replace(".tif", "_x.tif")), [np.full((240, 360), 300, np.uint16)],
               crs=mosaic.crs, transform=mosaic.transform)
    _fails(capsys, scene, names=scene / "s1", says="uncalibrated DN")
    rc, _, err = _tile(capsys, "--s2", str(scene / "s2"), "--out", str(scene.parent / "o"), "--stride", "7")
    assert rc == 1 and "--stride" in err
    rc, _, err = _tile(capsys, "--out", str(scene.parent / "o"))
    assert rc == 1 and "no scene given" in err
