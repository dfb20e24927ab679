"""``csmae tile`` input forms: SAFE (pre/post-2022 radiometry), STAC items, a stack, SCL, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.geo.tile_fixtures import COLS, ROWS, S1_NAME, load_real_mosaic, store_arrays, write_aligned

REPO = Path(__file__).resolve().parents[2]
PRODUCT_OLD = "S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_20170613T101032"
PRODUCT_NEW = "S2A_MSIL2A_20170613T101031_N0509_R022_T33UUP_20230417T141227"  # reprocessed: offset


@pytest.fixture(scope="module")
def mosaic():
    return load_real_mosaic()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mosaic):
    """The aligned per-band COG scene, tiled: what every other encoding must give back."""
    from csmae.data.scenes import tile_scenes

    root = tmp_path_factory.mktemp("ref")
    write_aligned(root, mosaic)
    tile_scenes(root / "store", s2=[str(root / "s2")], s1=[str(root / "s1")])
    return store_arrays(root / "store")


def _scl(mosaic) -> np.ndarray:
    scl = np.full((ROWS * 60, COLS * 60), 4, dtype=np.uint8)  # vegetation
    scl[0:60, 60:120] = 9  # patch (0, 1): cloud, high probability
    scl[60:90, 120:180] = 11  # half of patch (1, 2): snow
    return scl


def test_safe_pre_and_post_2022_give_the_same_patches(tmp_path, mosaic, reference):
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import post_2022, write_safe

    old = write_safe(tmp_path, mosaic.s2, crs=mosaic.crs, transform=mosaic.transform, product=PRODUCT_OLD)
    new_bands = {b: post_2022(a) for b, a in mosaic.s2.items()}
    assert not np.array_equal(new_bands["B02"], mosaic.s2["B02"])
    new = write_safe(tmp_path / "new", new_bands, crs=mosaic.crs, transform=mosaic.transform,
                     product=PRODUCT_NEW, baseline="05.09", offset=-1000)
    got = {}
    for tag, safe in (("old", old), ("new", new)):
        tile_scenes(tmp_path / f"store_{tag}", s2=[str(safe)])
        got[tag] = store_arrays(tmp_path / f"store_{tag}")
    ids_old, ids_new = got["old"][1], got["new"][1]
    assert ids_old[0] == "S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_r000_c000"
    assert [i.replace("N0204", "N0509") for i in ids_old] == ids_new
    np.testing.assert_array_equal(got["old"][0]["s2"], got["new"][0]["s2"])
    np.testing.assert_array_equal(got["old"][0]["s2"], reference[0]["s2"])  # JP2 in SAFE == COG files
    man = json.loads((tmp_path / "store_new" / "manifest.json").read_text())
    rad = man["tiling"]["scenes"][0]["s2"]["radiometry"]["B02"]
    assert rad["offset"] == pytest.approx(-0.1) and "05.09" in rad["source"]
    # without the metadata the same post-2022 bytes are read as pre-2022 DN: 1000 too high
    (new / "MTD_MSIL2A.xml").unlink()
    tile_scenes(tmp_path / "store_nomtd", s2=[str(new)])
    raw = store_arrays(tmp_path / "store_nomtd")[0]["s2"]
    assert np.median(raw[:, 0] - reference[0]["s2"][:, 0]) == 1000


def test_stac_items_post_2022_scale_offset(tmp_path, mosaic, reference):
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import post_2022, write_band_files, write_s1, write_stac_item
    from csmae.data.scenes.stac import COMMON_NAMES

    files = write_band_files(tmp_path / "data" / "s2", {b: post_2022(a) for b, a in mosaic.s2.items()},
                             crs=mosaic.crs, transform=mosaic.transform)
    by_band = {f.name.split("_")[2]: f for f in files}
    common = {v: k for k, v in COMMON_NAMES.items()}
    rb = {"raster:bands": [{"data_type": "uint16", "nodata": 0, "scale": 0.0001, "offset": -0.1}]}
    s2_item = write_stac_item(
        tmp_path / "items" / "s2.json", item_id="S2A_33UUP_20170613_0_L2A",
        when=datetime(2017, 6, 13, 10, 10, 31, tzinfo=UTC), bbox=[12.7, 48.2, 12.8, 48.3],
        assets={common[b]: p for b, p in by_band.items()}, extra={common[b]: rb for b in by_band},
        properties={"s2:processing_baseline": "05.09"})
    s1f = write_s1(tmp_path / "data" / "s1", mosaic.s1[0], mosaic.s1[1], crs=mosaic.crs,
                   transform=mosaic.transform, name="s1", say_units=False)
    s1_item = write_stac_item(
        tmp_path / "items" / "s1.json", item_id=S1_NAME, when=datetime(2017, 6, 13, 16, 50, 43, tzinfo=UTC),
        bbox=[12.7, 48.2, 12.8, 48.3], assets={"vv": s1f[0], "vh": s1f[1]})
    res = tile_scenes(tmp_path / "store", stac=[str(s2_item), str(s1_item)], max_days=1)
    assert res.gaps[0]["days"] == pytest.approx((6 * 3600 + 40 * 60 + 12) / 86400)
    arrays, ids = store_arrays(tmp_path / "store")
    assert ids[0] == "S2A_33UUP_20170613_0_L2A_r000_c000"
    np.testing.assert_array_equal(arrays["s2"], reference[0]["s2"])
    np.testing.assert_allclose(arrays["s1"], reference[0]["s1"], atol=1e-4)
    man = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert man["tiling"]["scenes"][0]["s1"][0]["units_from"].startswith("values")


def test_multiband_stack_and_two_band_s1(tmp_path, mosaic, reference):
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_s1, write_stack

    stack = write_stack(tmp_path / "T33UUP_20170613T101031_stack.tif", mosaic.s2, crs=mosaic.crs,
                        transform=mosaic.transform)
    (s1,) = write_s1(tmp_path / "s1", mosaic.s1[0], mosaic.s1[1], crs=mosaic.crs, transform=mosaic.transform,
                     name="S1A_IW_GRDH_1SDV_20170613T165043", units="linear", two_band=True)
    res = tile_scenes(tmp_path / "store", s2=[str(stack)], s1=[str(s1)])
    assert res.patches == ROWS * COLS
    arrays, _ = store_arrays(tmp_path / "store")
    np.testing.assert_array_equal(arrays["s2"], reference[0]["s2"])
    np.testing.assert_allclose(arrays["s1"], reference[0]["s1"], atol=2e-3)  # linear power -> dB


def test_scl_and_nodata_patches_are_skipped_with_reasons(tmp_path, mosaic):
    import csv

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_safe

    bands = {b: a.copy() for b, a in mosaic.s2.items()}
    bands["B03"][120:240, 0:20] = 0  # patch (1, 0): 1/6 of it is nodata
    safe = write_safe(tmp_path, bands, crs=mosaic.crs, transform=mosaic.transform, product=PRODUCT_OLD,
                      scl=_scl(mosaic))
    res = tile_scenes(tmp_path / "all", s2=[str(safe)])  # no --scl: clouds kept; 83% valid < 90%
    assert (res.patches, res.skipped) == (5, 1)
    # --scl: (0, 1) is all cloud (0% valid), (1, 2) half snow (50%), (1, 0) 83% valid
    tile_scenes(tmp_path / "scl", s2=[str(safe)], scl=(), min_valid=0.8)
    rows = {r["patch"][-9:]: r["reason"] for r in csv.DictReader(open(tmp_path / "scl" / "skipped.csv"))}
    assert set(rows) == {"r000_c001", "r001_c002"}
    assert "S2 valid pixels 0.0%" in rows["r000_c001"]
    assert "SCL cloud/snow/invalid 100.0%" in rows["r000_c001"]
    assert "S2 valid pixels 50.0%" in rows["r001_c002"]
    res = tile_scenes(tmp_path / "scl2", s2=[str(safe)], scl=(), min_valid=0.9)
    rows = {r["patch"][-9:]: r["reason"] for r in csv.DictReader(open(tmp_path / "scl2" / "skipped.csv"))}
    assert set(rows) == {"r000_c001", "r001_c000", "r001_c002"}
    assert "S2 valid pixels 83.3%" in rows["r001_c000"] and "SCL" not in rows["r001_c000"]
    assert res.patches == 3


def test_resume_after_a_kill_gives_the_same_store(tmp_path, mosaic):
    """A run killed after its first strip leaves no store; the re-run does only the second strip."""
    write_aligned(tmp_path, mosaic)
    cmd = [sys.executable, "-m", "csmae", "tile", "--s2", str(tmp_path / "s2"), "--s1", str(tmp_path / "s1"),
           "--out", str(tmp_path / "store")]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    killed = subprocess.run(cmd, env={**env, "CSMAE_TILE_EXIT_AFTER_CHUNKS": "1"}, capture_output=True,
                            text=True)
    assert killed.returncode == 17, killed.stderr
    assert not (tmp_path / "store").exists()
    assert len(list((tmp_path / "store.partial" / "journal").glob("chunk-*.json"))) == 1
    from csmae.data.scenes import tile_scenes

    again = tile_scenes(tmp_path / "store", s2=[str(tmp_path / "s2")], s1=[str(tmp_path / "s1")])
    assert (again.chunks, again.chunks_resumed) == (2, 1)
    assert not (tmp_path / "store.partial").exists()
    tile_scenes(tmp_path / "fresh", s2=[str(tmp_path / "s2")], s1=[str(tmp_path / "s1")], workers=2)
    a, ids_a = store_arrays(tmp_path / "store")
    b, ids_b = store_arrays(tmp_path / "fresh")
    assert ids_a == ids_b
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # (the fresh run cut its strips in 2 threads: same bytes)
    # a finished store is not rewritten unless asked
    with pytest.raises(FileExistsError):
        tile_scenes(tmp_path / "store", s2=[str(tmp_path / "s2")], s1=[str(tmp_path / "s1")])
