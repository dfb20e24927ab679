"""``csmae tile`` with a raw GRD product (folder and zip): S2 + raw S1 into a store, against the known
backscatter field; the manifest's records; the printed terrain error; refusals before any write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from csmae.errors import DataError
from tests.scenes.grd_fixtures import PRODUCT, make_product, sigma_at

#: the S2 mosaic (2 x 3 real BigEarthNet patches) placed inside the GRD fixture's data region
S2_T = Affine(10.0, 0, 415000.0, 0, -10.0, 4972000.0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from rasterio.crs import CRS

    from csmae.data.scenes.example import write_band_files
    from tests.geo.tile_fixtures import load_real_mosaic

    root = tmp_path_factory.mktemp("grdtile")
    m = load_real_mosaic()
    s2 = write_band_files(root / "s2", m.s2, crs=CRS.from_epsg(32631), transform=S2_T, tile="31TCJ",
                          stamp="20210809T105031")
    folder = make_product(root / "folder")
    zipped = make_product(root / "zip", zipped=True)
    return {"root": root, "s2": [str(p) for p in s2], "safe": str(folder.safe), "zip": str(zipped.safe)}


def _truth_db(store: Path, ids: list[str]) -> np.ndarray:
    """The field's dB at each stored pixel's radar position (GDAL's GCP warp of a coordinate raster)."""
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_geocode import geocode_window
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.scenes.grd_fixtures import REGION

    sc = open_grd_scene(str(next((store.parent / "folder").glob("*.SAFE"))))
    l0, l1, p0, p1 = REGION
    ln, px = np.meshgrid(np.arange(l0, l1, dtype=np.float32), np.arange(p0, p1, dtype=np.float32),
                         indexing="ij")
    coords = geocode_window(np.stack([ln, px]), l0, p0, sc.grid, method="tps", dst_crs=CRS.from_epsg(32631),
                            dst_transform=S2_T, dst_shape=(240, 360))
    out = []
    for pid in ids:
        r, c = (int(t[1:]) for t in pid.split("_")[-2:])
        sub = coords[:, r * 120:(r + 1) * 120, c * 120:(c + 1) * 120]
        li, pi = np.rint(sub[0]).astype(int), np.rint(sub[1]).astype(int)
        out.append(np.stack([10 * np.log10(sigma_at(p, li, pi)) for p in ("VV", "VH")]))
    return np.stack(out)


@pytest.mark.parametrize("kind", ["safe", "zip"])
def test_tile_s2_with_raw_grd(inputs, kind: str, capsys) -> None:
    from csmae.cli import main
    from tests.geo.tile_fixtures import store_arrays

    out = inputs["root"] / f"store_{kind}"
    assert main(["tile", "--s2", *inputs["s2"], "--s1", inputs[kind], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"S1 {PRODUCT}: ellipsoid geocoding (no --dem)" in printed and "per 100 m" in printed
    arrays, ids = store_arrays(out)
    assert arrays["s1"].shape == (6, 2, 120, 120) and len(ids) == 6
    want = _truth_db(out, ids)
    err = np.abs(arrays["s1"] - want)
    assert np.median(err) < 0.1 and np.quantile(err, 0.99) < 0.5  # DN rounding + resampling, dB
    man = json.loads((out / "manifest.json").read_text())
    tiling = man["tiling"]
    s1 = tiling["scenes"][0]["s1"][0]
    assert s1["product"] == PRODUCT and s1["ipf_version"] == "003.31" and s1["kind"] == "S1 GRD (raw)"
    assert s1["radiometry"] == {"calibration": "sigma0", "thermal_noise": "range+azimuth",
                                "border_noise": "removed by the IPF (>= 2.90): DN 0 = nodata"}
    assert s1["geocoding"]["method"].startswith("ellipsoid (no DEM)")
    assert 160 < s1["geocoding"]["expected_terrain_error"]["near_range_m"] < 180
    assert tiling["s1_calibration"] == "sigma0" and tiling["dem"] is None


def test_gamma0_store_differs_by_incidence(inputs) -> None:
    from csmae.cli import main
    from tests.geo.tile_fixtures import store_arrays

    out = inputs["root"] / "store_gamma"
    assert main(["tile", "--s2", *inputs["s2"], "--s1", inputs["safe"], "--s1-calibration", "gamma0",
                 "--out", str(out)]) == 0
    g, _ = store_arrays(out)
    sigma = inputs["root"] / "store_safe"
    if not sigma.exists():
        assert main(["tile", "--s2", *inputs["s2"], "--s1", inputs["safe"], "--out", str(sigma)]) == 0
    s, _ = store_arrays(sigma)
    diff = float(np.median(g["s1"] - s["s1"]))  # 10 log10(1 / cos(theta)), theta ~ 31 deg here
    assert diff == pytest.approx(-10 * np.log10(np.cos(np.deg2rad(31.0))), abs=0.15)
    man = json.loads((out / "manifest.json").read_text())
    assert man["tiling"]["scenes"][0]["s1"][0]["radiometry"]["calibration"] == "gamma0"


def test_grd_not_over_the_s2_tile_refused_before_writing(inputs, tmp_path: Path) -> None:
    from rasterio.crs import CRS

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_band_files
    from tests.geo.tile_fixtures import load_real_mosaic

    m = load_real_mosaic()
    far = write_band_files(tmp_path / "far", m.s2, crs=CRS.from_epsg(32631),
                           transform=Affine(10.0, 0, 800000.0, 0, -10.0, 4000000.0), tile="31SGA",
                           stamp="20210809T105031")
    out = tmp_path / "store"
    with pytest.raises(DataError, match="S1 and S2 do not overlap") as e:
        tile_scenes(out, s2=[str(p) for p in far], s1=[inputs["safe"]])
    assert inputs["safe"] in str(e.value)
    assert not out.exists() and not (tmp_path / "store.partial").exists()


def test_dem_needs_a_raw_product_and_a_dem_raster(inputs, tmp_path: Path) -> None:
    from csmae.data.scenes import tile_scenes

    dem = tmp_path / "dem.tif"
    dem.write_bytes(b"x")
    for name, s1 in (("a", inputs["zip"]), ("b", inputs["safe"])):
        with pytest.raises(DataError, match="not a DEM raster") as e:
            tile_scenes(tmp_path / name, s2=inputs["s2"], s1=[s1], dem=str(dem))
        assert str(dem) in str(e.value)
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()
    with pytest.raises(ValueError, match="terrain-corrects raw S1 GRD products"):
        tile_scenes(tmp_path / "c", s2=inputs["s2"], dem=str(dem))


def test_zipped_grd_with_dem_as_the_folder(inputs, tmp_path: Path) -> None:
    """``--dem`` with a zipped GRD (read in place, nothing unpacked): the store of the folder, byte for byte;
    terrain correction moved the pixels against the ellipsoid geocoding of the same product."""
    from csmae.cli import main
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.geo.tile_fixtures import store_arrays
    from tests.scenes.test_grd_dem import write_dem

    dem = tmp_path / "dem.tif"
    write_dem(dem, open_grd_scene(inputs["safe"]).grid.points)
    zip_dir = Path(inputs["zip"]).parent
    before = sorted(p.name for p in zip_dir.iterdir())
    stores = {}
    for kind in ("safe", "zip"):
        out = tmp_path / f"store_{kind}"
        assert main(["tile", "--s2", *inputs["s2"], "--s1", inputs[kind], "--dem", str(dem), "--out",
                     str(out)]) == 0
        stores[kind] = store_arrays(out)
        man = json.loads((out / "manifest.json").read_text())
        s1 = man["tiling"]["scenes"][0]["s1"][0]
        assert s1["geocoding"]["method"].startswith("terrain (DEM)")
        assert s1["geocoding"]["dem"]["path"] == str(dem)
    assert stores["safe"][1] == stores["zip"][1]
    np.testing.assert_array_equal(stores["safe"][0]["s1"], stores["zip"][0]["s1"])
    assert sorted(p.name for p in zip_dir.iterdir()) == before
    plain = tmp_path / "store_no_dem"
    assert main(["tile", "--s2", *inputs["s2"], "--s1", inputs["zip"], "--out", str(plain)]) == 0
    ellipsoid, _ = store_arrays(plain)
    assert not np.array_equal(ellipsoid["s1"], stores["zip"][0]["s1"])


def test_dem_must_cover_the_product_under_the_tile(inputs, tmp_path: Path) -> None:
    """A DEM over the S2 tile's part of the GRD is enough; one that misses it is refused before any write,
    naming the DEM, the product and the S2 scene; an S1-only store (the product's own grid) needs the
    DEM over the whole product."""
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.scenes.test_grd_dem import write_dem

    points = open_grd_scene(inputs["safe"]).grid.points
    local = tmp_path / "local.tif"  # the S2 mosaic lies at ~1.94E 44.89N
    write_dem(local, points, bounds=(1.85, 44.8, 2.05, 44.95), res=0.001)
    tile_scenes(tmp_path / "ok", s2=inputs["s2"], s1=[inputs["zip"]], dem=str(local))
    elsewhere = tmp_path / "elsewhere.tif"  # over the product, not under the tile
    write_dem(elsewhere, points, bounds=(3.0, 45.5, 4.0, 46.0), res=0.005)
    with pytest.raises(DataError, match="does not cover the part of S1 product") as e:
        tile_scenes(tmp_path / "bad", s2=inputs["s2"], s1=[inputs["zip"]], dem=str(elsewhere))
    msg = str(e.value)
    assert str(elsewhere) in msg and PRODUCT in msg and "100% of it lies outside" in msg
    assert "under S2 scene" in msg and "T31TCJ_20210809T105031" in msg
    with pytest.raises(DataError, match=f"does not cover the S1 product {PRODUCT}") as e:
        tile_scenes(tmp_path / "s1only", s1=[inputs["zip"]], dem=str(local))
    assert str(local) in str(e.value)
    assert not any((tmp_path / n).exists() for n in ("bad", "bad.partial", "s1only", "s1only.partial"))


def test_s1_only_dem_must_cover_the_patches_cut_in_the_area(inputs, tmp_path: Path) -> None:
    """S1 alone with ``--bbox`` / ``--aoi`` and ``--dem``: the DEM must cover the patches cut (those that
    intersect the area), not the whole 250 km product; one that misses part of them is refused before
    any write, naming the DEM, the product and the area."""
    import shapely

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.aoi import bbox_area
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.geo.tile_fixtures import store_arrays
    from tests.scenes.test_grd_dem import write_dem

    points = open_grd_scene(inputs["safe"]).grid.points
    local = tmp_path / "local.tif"  # 1.85..2.05 E, 44.8..44.95 N: a corner of the product
    write_dem(local, points, bounds=(1.85, 44.8, 2.05, 44.95), res=0.001)
    inside = bbox_area((1.935, 44.88, 1.975, 44.895))
    tile_scenes(tmp_path / "ok", s1=[inputs["zip"]], dem=str(local), aoi=inside)
    arrays, ids = store_arrays(tmp_path / "ok")
    assert len(ids) >= 6 and np.isfinite(arrays["s1"]).all()
    aoi = tmp_path / "area.geojson"  # a triangle inside the DEM whose patches reach 1.2 km past it
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[1.95, 44.86], [2.0495, 44.86],
                                                                    [1.95, 44.94], [1.95, 44.86]]]}))
    from csmae.data.scenes.aoi import read_aoi

    area = read_aoi(aoi)
    assert shapely.box(1.85, 44.8, 2.05, 44.95).contains(area)
    with pytest.raises(DataError, match="under the patches cut in the --bbox / --aoi area") as e:
        tile_scenes(tmp_path / "bad", s1=[inputs["zip"]], dem=str(local), aoi=area)
    assert str(local) in str(e.value) and PRODUCT in str(e.value)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_dem_void_gives_nodata_patches(inputs, tmp_path: Path) -> None:
    """DEM nodata (a void) under part of the tile: those S1 pixels are nodata (no height, no geometry, as
    SNAP's terrain correction), their patches skipped with the S1 reason; the others are kept."""
    import csv

    import rasterio

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.geo.tile_fixtures import store_arrays
    from tests.scenes.test_grd_dem import write_dem

    dem = tmp_path / "void.tif"
    write_dem(dem, open_grd_scene(inputs["safe"]).grid.points, bounds=(1.85, 44.8, 2.05, 44.95), res=0.001)
    from pyproj import Transformer

    # the void: west of the middle of the mosaic's first column (S2_T + 60 px = 415,600 m E)
    lon = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(415600.0, 4971000.0)[0]
    with rasterio.open(dem, "r+") as ds:
        z = ds.read(1)
        col = int((lon - ds.transform.c) / ds.transform.a)
        z[:, :col] = -32768
        ds.nodata = -32768
        ds.write(z, 1)
    tile_scenes(tmp_path / "store", s2=inputs["s2"], s1=[inputs["safe"]], dem=str(dem))
    _, ids = store_arrays(tmp_path / "store")
    with open(tmp_path / "store" / "skipped.csv") as f:
        skipped = list(csv.DictReader(f))
    assert sorted(i[-4:] for i in ids) == ["c001", "c001", "c002", "c002"]
    assert len(skipped) == 2 and all(r["patch"].endswith("c000") and "S1" in r["reason"] for r in skipped)
