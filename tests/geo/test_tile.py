"""``csmae tile`` on small scenes built from real BigEarthNet pixels: pixels, footprints, S1 warps."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.geo.tile_fixtures import (
    COLS,
    ROWS,
    S1_NAME,
    S2_SCENE,
    V1,
    load_real_mosaic,
    open_v1,
    store_arrays,
    write_aligned,
)

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def mosaic():
    return load_real_mosaic()


@pytest.fixture(scope="module")
def aligned(tmp_path_factory, mosaic):
    from csmae.data.scenes import tile_scenes

    root = tmp_path_factory.mktemp("aligned")
    write_aligned(root, mosaic)
    res = tile_scenes(root / "store", s2=[str(root / "s2")], s1=[str(root / "s1")])
    return root, res


def _corners_lonlat(crs, x0: float, y0: float, size: float = 1200.0) -> np.ndarray:
    """Independent footprint: the 4 corners of a patch from its upper-left corner, through pyproj."""
    from pyproj import Transformer

    tr = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    xs = [x0, x0 + size, x0 + size, x0]
    ys = [y0 - size, y0 - size, y0, y0]
    return np.array(tr.transform(xs, ys)).T  # (4, 2) lon, lat


def test_aligned_scene_gives_back_the_real_patches(aligned, mosaic):
    root, res = aligned
    assert (res.patches, res.skipped) == (ROWS * COLS, 0)
    arrays, ids = store_arrays(root / "store")
    assert ids == [f"{S2_SCENE}_r{r:03d}_c{c:03d}" for r in range(ROWS) for c in range(COLS)]
    v1 = open_v1()  # the v1 reader: the same real patches through an independent path
    for i, name in enumerate(mosaic.names):
        ref = v1.get(name)
        # 10 m bands exactly; 20 m bands cut at 60x60 and upsampled exactly as for BigEarthNet
        np.testing.assert_array_equal(arrays["s2"][i], ref["s2"])
        # S1 went dB -> linear -> bilinear warp onto the same grid -> dB: equal up to float rounding
        np.testing.assert_allclose(arrays["s1"][i], ref["s1"], atol=2e-3)


def test_footprints_crs_transform_and_times(aligned, mosaic):
    root, _ = aligned
    import shapely

    table = pq.read_table(root / "store" / "pairs.parquet")
    assert str(table.schema.field("geometry").type) == "binary"
    assert str(table.schema.field("datetime_s2").type) == "timestamp[us, tz=UTC]"
    rows = table.to_pylist()
    t = mosaic.transform
    for row in rows:
        r, c = int(row["id"][-8:-5]), int(row["id"][-3:])
        x0, y0 = t.c + 1200.0 * c, t.f - 1200.0 * r
        assert row["transform"] == [10.0, 0.0, x0, 0.0, -10.0, y0]
        assert row["crs"] == f"EPSG:{mosaic.crs.to_epsg()}"
        poly = shapely.from_wkb(row["geometry"])
        ring = np.asarray(poly.exterior.coords)[:4]
        np.testing.assert_allclose(ring, _corners_lonlat(mosaic.crs, x0, y0), atol=1e-9)
        assert poly.exterior.is_ccw  # RFC 7946 orientation
        assert row["scene_s2"] == S2_SCENE and row["scene_s1"] == S1_NAME
        assert row["datetime_s2"].isoformat() == "2017-06-13T10:10:31+00:00"
        assert row["datetime_s1"].isoformat() == "2017-06-13T16:50:43+00:00"
    # patch (0, 0) keeps the real footprint of the first real patch (its v1 JSON coordinates)
    first_json = next((V1 / "BigEarthNet-v1.0" / mosaic.names[0]).glob("*_labels_metadata.json"))
    meta = json.loads(first_json.read_text())["coordinates"]
    first = shapely.from_wkb(rows[0]["geometry"])
    np.testing.assert_allclose(np.asarray(first.exterior.coords)[:4],
                               _corners_lonlat(mosaic.crs, meta["ulx"], meta["uly"],
                                               meta["lrx"] - meta["ulx"]), atol=1e-9)
    man = json.loads((root / "store" / "manifest.json").read_text())
    assert man["geo"] is True
    # the same footprints as csmae.geo's (the readers' seam), and the sample geo keys
    from csmae.data import open_dataset
    from csmae.geo import footprint_wkb

    s = open_dataset(root / "store")[0]
    assert s["geometry"] == rows[0]["geometry"] == footprint_wkb(s["crs"], s["transform"])
    assert s["datetime"] == {"s1": "2017-06-13T16:50:43Z", "s2": "2017-06-13T10:10:31Z"}
    assert s["scene"] == {"s1": S1_NAME, "s2": S2_SCENE}
    from csmae.cli import main

    assert main(["verify", str(root / "store")]) == 0  # checksums written by the shared store writer
    assert man["tiling"]["time_gaps_days"][0]["days"] == pytest.approx((6 * 3600 + 40 * 60 + 12) / 86400)


def test_shifted_s1_grid_lands_where_it_should(tmp_path, mosaic):
    """S1 on the same CRS and pixel, origin moved 30 m east and 50 m south: values move with it."""
    from affine import Affine

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_band_files, write_s1
    from csmae.data.scenes.radiometry import S1_DB_FLOOR

    write_band_files(tmp_path / "s2", mosaic.s2, crs=mosaic.crs, transform=mosaic.transform)
    shifted = mosaic.transform @ Affine.translation(3, 5)  # S1 pixel (i, j) sits at S2 pixel (i+5, j+3)
    write_s1(tmp_path / "s1", mosaic.s1[0], mosaic.s1[1], crs=mosaic.crs, transform=shifted, name=S1_NAME)
    res = tile_scenes(tmp_path / "store", s2=[str(tmp_path / "s2")], s1=[str(tmp_path / "s1")], min_valid=0.5)
    assert res.patches == ROWS * COLS
    arrays, _ = store_arrays(tmp_path / "store")
    s1 = arrays["s1"].reshape(ROWS, COLS, 2, 120, 120).transpose(2, 0, 3, 1, 4).reshape(2, 240, 360)
    expect = np.full_like(s1, S1_DB_FLOOR)  # outside the S1 scene: nodata -> the dB floor
    expect[:, 5:, 3:] = mosaic.s1[:, :-5, :-3]
    np.testing.assert_allclose(s1, expect, atol=2e-3)


def test_s1_on_another_crs_and_pixel_size(tmp_path, mosaic):
    """S1 in the neighbouring UTM zone at 20 m, linear power: a linear ramp in S1 pixel coordinates.

    Bilinear interpolation reproduces a linear field, so every patch pixel must hold the ramp's
    value at that pixel's centre transformed into the S1 grid (computed here with pyproj alone).
    """
    from affine import Affine
    from pyproj import Transformer
    from rasterio.crs import CRS

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import _write, write_band_files

    write_band_files(tmp_path / "s2", mosaic.s2, crs=mosaic.crs, transform=mosaic.transform)
    other = CRS.from_epsg(mosaic.crs.to_epsg() - 1)  # the zone to the west
    to_other = Transformer.from_crs(mosaic.crs.to_wkt(), other.to_wkt(), always_xy=True)
    t = mosaic.transform
    x0, y0 = to_other.transform(t.c, t.f)
    s1t = Affine(20.0, 0, np.floor(x0 / 20) * 20 - 400, 0, -20.0, np.ceil(y0 / 20) * 20 + 400)
    rr, cc = np.mgrid[0:300, 0:300].astype(np.float64)
    ramp_vv = (0.01 + 1e-3 * cc + 5e-4 * rr).astype(np.float32)
    ramp_vh = (0.002 + 2e-4 * cc + 1e-4 * rr).astype(np.float32)
    (tmp_path / "s1").mkdir()
    for p, a in (("VV", ramp_vv), ("VH", ramp_vh)):
        _write(tmp_path / "s1" / f"{S1_NAME}_{p}.tif", [a], crs=other, transform=s1t)
    res = tile_scenes(tmp_path / "store", s2=[str(tmp_path / "s2")], s1=[str(tmp_path / "s1")])
    assert res.patches == ROWS * COLS
    man = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert man["tiling"]["scenes"][0]["s1"][0]["units"] == "linear"  # detected: no negative value
    arrays, _ = store_arrays(tmp_path / "store")
    lin = 10 ** (arrays["s1"].astype(np.float64) / 10)  # (6, 2, 120, 120)
    lin = lin.reshape(ROWS, COLS, 2, 120, 120).transpose(2, 0, 3, 1, 4).reshape(2, 240, 360)
    yy, xx = np.mgrid[0:240, 0:360] + 0.5
    ex, ey = to_other.transform(t.c + 10 * xx, t.f - 10 * yy)
    col = (np.asarray(ex) - s1t.c) / 20 - 0.5
    row = (s1t.f - np.asarray(ey)) / 20 - 0.5
    np.testing.assert_allclose(lin[0], 0.01 + 1e-3 * col + 5e-4 * row, rtol=0, atol=2e-4)
    np.testing.assert_allclose(lin[1], 0.002 + 2e-4 * col + 1e-4 * row, rtol=0, atol=5e-5)
    # a grid misplaced by one 10 m pixel would be off by 5e-4 in VV: the tolerance can tell
    assert np.abs(lin[0] - (0.01 + 1e-3 * (col + 0.5) + 5e-4 * row)).mean() > 4e-4


def test_stride_overlapping_patches(tmp_path, mosaic):
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_band_files

    write_band_files(tmp_path / "s2", mosaic.s2, crs=mosaic.crs, transform=mosaic.transform)
    res = tile_scenes(tmp_path / "store", s2=[str(tmp_path / "s2")], stride=60)
    assert res.patches == 3 * 5
    arrays, ids = store_arrays(tmp_path / "store")
    i = ids.index(f"{S2_SCENE}_r001_c001")
    np.testing.assert_array_equal(arrays["s2"][i, 0], mosaic.s2["B02"][60:180, 60:180])
    from csmae.data.base import upsample_band

    np.testing.assert_array_equal(arrays["s2"][i, 4], upsample_band(mosaic.s2["B05"][30:90, 30:90]))


def test_native_layout_reads_the_same(tmp_path, aligned):
    from csmae.data.scenes import tile_scenes

    root, _ = aligned
    tile_scenes(tmp_path / "native", s2=[str(root / "s2")], s1=[str(root / "s1")], layout="native")
    man = json.loads((tmp_path / "native" / "manifest.json").read_text())
    assert [g["name"] for g in man["groups"]] == ["s1", "s2_10m", "s2_20m"]
    a, ids_a = store_arrays(tmp_path / "native")  # 20 m bands upsampled when read
    b, ids_b = store_arrays(root / "store")  # upsampled when tiled
    assert ids_a == ids_b
    for k in b:
        np.testing.assert_array_equal(a[k], b[k])


def test_two_s1_scenes_fill_each_other_nearest_in_time_first(tmp_path, mosaic):
    """S1 in two overlapping scenes (left and right part): every patch is covered, values unchanged."""
    from affine import Affine

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_band_files, write_s1

    write_band_files(tmp_path / "s2", mosaic.s2, crs=mosaic.crs, transform=mosaic.transform)
    left, right = mosaic.s1[:, :, :200], mosaic.s1[:, :, 160:]
    write_s1(tmp_path / "a", left[0], left[1], crs=mosaic.crs, transform=mosaic.transform,
             name="S1A_IW_GRDH_1SDV_20170614T165043_L")  # 1 day after S2
    write_s1(tmp_path / "b", right[0], right[1], crs=mosaic.crs,
             transform=mosaic.transform @ Affine.translation(160, 0),
             name="S1A_IW_GRDH_1SDV_20170613T165043_R")  # the same day: nearest, used first
    res = tile_scenes(tmp_path / "store", s2=[str(tmp_path / "s2")],
                      s1=[str(tmp_path / "a"), str(tmp_path / "b")])
    assert res.patches == ROWS * COLS and sorted(round(g["days"], 2) for g in res.gaps) == [0.28, 1.28]
    arrays, _ = store_arrays(tmp_path / "store")
    s1 = arrays["s1"].reshape(ROWS, COLS, 2, 120, 120).transpose(2, 0, 3, 1, 4).reshape(2, 240, 360)
    np.testing.assert_allclose(s1, mosaic.s1, atol=2e-3)
    import pyarrow.parquet as pq

    assert set(pq.read_table(tmp_path / "store" / "pairs.parquet").column("scene_s1").to_pylist()) == {
        "S1A_IW_GRDH_1SDV_20170613T165043_R"}
