"""A raw GRD across the antimeridian: the real product moved east until its swath straddles 180 deg
(:func:`tests.scenes.grd_fixtures.shift_xmls`: GCP longitudes jump from 179.x to -179.x as a product
writes them, the orbit rotated with them) is tiled under an S2 tile of UTM zone 60 and alone (zone 1).

Independent references: the *unmoved* product (longitudes 1.5..5.2 deg, which never meet the line)
tiled onto the same grid turned back by the same angle (a transverse Mercator whose central meridian
is the zone's minus the shift: the same pixels on the same ground of the unmoved product), and the
known backscatter field at each pixel's radar position by GDAL's warp of the unmoved product. Patches
west of, across and east of the line are checked alike; footprints against the UTM squares.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from tests.scenes.grd_fixtures import PRODUCT, make_product, sigma_at

#: degrees east the product is moved: the S2 mosaic's ground (1.94 E) lands on 180 deg
SHIFT = 178.06
#: the S2 mosaic (2 x 3 patches) in UTM zone 60 at 44.89 N: its middle column straddles 180 deg
S2_T = Affine(10.0, 0, 735100.0, 0, -10.0, 4976310.0)
#: the patches around the mosaic, across the line (W > E): S1 alone, on the place grid of zone 1
BBOX = (179.99, 44.88, -179.965, 44.895)


def turned_back(zone_meridian: float) -> object:
    """The CRS of a UTM zone turned west by SHIFT: the unmoved product's ground under the same x, y."""
    from rasterio.crs import CRS

    return CRS.from_proj4(f"+proj=tmerc +lat_0=0 +lon_0={zone_meridian - SHIFT} +k=0.9996 +x_0=500000 "
                          "+y_0=0 +datum=WGS84 +units=m +no_defs")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import rasterio
    from rasterio.crs import CRS

    from csmae.data.scenes.example import write_band_files
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.geo.tile_fixtures import load_real_mosaic
    from tests.scenes.test_grd_dem import write_dem

    root = tmp_path_factory.mktemp("grd_am")
    unmoved = make_product(root / "unmoved")
    moved = make_product(root / "moved", lon_shift=SHIFT, zipped=True)
    m = load_real_mosaic()
    s2 = write_band_files(root / "s2", m.s2, crs=CRS.from_epsg(32660), transform=S2_T, tile="60TXQ",
                          stamp="20210809T105031")
    s2_back = write_band_files(root / "s2_back", m.s2, crs=turned_back(177.0), transform=S2_T, tile="31TCJ",
                               stamp="20210809T105031")
    # DEMs with the same heights on the same ground: the unmoved one, and the moved one as a user may
    # have it across the line (lon/lat written past 180 deg; or split at +-180 deg in a VRT of two tiles)
    dem = root / "dem_unmoved.tif"
    write_dem(dem, open_grd_scene(str(unmoved.safe)).grid.points, bounds=(1.7, 44.7, 2.2, 45.1), res=0.002)
    with rasterio.open(dem) as ds:
        profile, z, t = ds.profile, ds.read(1), ds.transform
    past = root / "dem_past180.tif"
    with rasterio.open(past, "w", **{**profile, "transform": Affine(t.a, 0, t.c + SHIFT, 0, t.e, t.f)}) as ds:
        ds.write(z, 1)
    cut = int(round((180.0 - (t.c + SHIFT)) / t.a))  # columns west of the line
    tiles = []
    for name, cols, x0 in (("w", slice(0, cut), t.c + SHIFT), ("e", slice(cut, None), -180.0)):
        p = root / f"dem_{name}.tif"
        with rasterio.open(p, "w", **{**profile, "width": z[:, cols].shape[1],
                                       "transform": Affine(t.a, 0, x0, 0, t.e, t.f)}) as ds:
            ds.write(z[:, cols], 1)
        tiles.append(str(p))
    import subprocess

    split = root / "dem_split.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(split), *tiles], check=True)
    return {"root": root, "unmoved": str(unmoved.safe), "moved": str(moved.safe),
            "s2": [str(p) for p in s2], "s2_back": [str(p) for p in s2_back], "dem_unmoved": str(dem),
            "dems": {"past180": str(past), "split": str(split)}}


def _table(store: Path):
    import pyarrow.parquet as pq

    return pq.read_table(store / "pairs.parquet").to_pandas()


def _truth_db(unmoved: str, crs: object, transforms: list) -> np.ndarray:
    """(N, 2, 120, 120) dB of the known field at each pixel's radar position in the *unmoved* product,
    by GDAL's GCP warp (thin-plate spline) of a coordinate raster onto each patch's grid in ``crs``."""
    from csmae.data.scenes.grd_geocode import geocode_window, radar_window
    from csmae.data.scenes.grd_scene import open_grd_scene

    sc = open_grd_scene(unmoved)
    assert not sc.grid.crosses_antimeridian
    out = []
    for t in transforms:
        l0, l1, p0, p1 = radar_window(sc.grid, crs, t, 120, 120, lines=sc.lines, samples=sc.samples, pad=16)
        ln, px = np.meshgrid(np.arange(l0, l1, dtype=np.float32), np.arange(p0, p1, dtype=np.float32),
                             indexing="ij")
        c = geocode_window(np.stack([ln, px]), l0, p0, sc.grid, method="tps", dst_crs=crs, dst_transform=t,
                           dst_shape=(120, 120))
        li, pi = np.rint(c[0]).astype(int), np.rint(c[1]).astype(int)
        out.append(np.stack([10 * np.log10(sigma_at(p, li, pi)) for p in ("VV", "VH")]))
    return np.stack(out)


def _sides(table) -> dict[str, list[int]]:
    """Rows of the store west of, across and east of the line (by their footprints)."""
    import shapely

    from csmae.geo.antimeridian import crosses_antimeridian

    out: dict[str, list[int]] = {"west": [], "across": [], "east": []}
    for k, wkb in enumerate(table["geometry"]):
        g = shapely.from_wkb(wkb)
        side = "across" if crosses_antimeridian(g) else "west" if g.bounds[0] > 0 else "east"
        out[side].append(k)
    return out


def _check_footprints(table) -> None:
    """Each footprint (split where it crosses) is its patch's UTM square: valid, within [-180, 180],
    unwrapped and projected back to the patch's zone by pyproj within 0.1 m of the square."""
    import shapely
    from pyproj import Transformer

    from csmae.geo.antimeridian import unwrap

    for wkb, crs, t in zip(table["geometry"], table["crs"], table["transform"], strict=True):
        g = shapely.from_wkb(wkb)
        assert g.is_valid and np.abs(shapely.get_coordinates(g)[:, 0]).max() <= 180.0
        to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        back = shapely.transform(unwrap(g), lambda xy, tr=to_utm: np.column_stack(tr.transform(*xy.T)))
        a = Affine(*t)
        square = shapely.box(a.c, a.f + 120 * a.e, a.c + 120 * a.a, a.f)
        assert back.area == pytest.approx(square.area, rel=1e-5)
        assert shapely.hausdorff_distance(back, square) < 0.1


def test_moved_product_crosses_and_keeps_one_continuous_box(world) -> None:
    from csmae.data.scenes.grd_reader import check_grd
    from csmae.data.scenes.grd_scene import open_grd_scene

    sc = open_grd_scene(world["moved"])
    assert sc.grid.crosses_antimeridian and sc.footprint().geom_type == "MultiPolygon"
    g = check_grd(sc).grid  # the S1-only grid's box: 179.57 .. 183.25 deg, not -180 .. 180
    w, e = g.transform.c, g.transform.c + g.transform.a * g.width
    assert 179 < w < 180 < e < 184 and g.width < 40_000


def test_s2_tile_across_the_line_gets_the_unmoved_products_values(world) -> None:
    """S2 in zone 60 + the moved GRD: every patch (west of, across and east of 180 deg) has the S1 of the
    unmoved product on the turned-back grid (to float noise), which is the known field at each pixel's
    radar position; footprints split at the line, each its UTM square."""
    from csmae.cli import main
    from tests.geo.tile_fixtures import store_arrays

    root = world["root"] / "stores"
    assert main(["tile", "--s2", *world["s2"], "--s1", world["moved"], "--out", str(root / "moved")]) == 0
    assert main(["tile", "--s2", *world["s2_back"], "--s1", world["unmoved"], "--out",
                 str(root / "unmoved")]) == 0
    got, ids = store_arrays(root / "moved")
    ref, _ = store_arrays(root / "unmoved")
    assert len(ids) == 6
    table = _table(root / "moved")
    sides = _sides(table)
    assert [len(v) for v in sides.values()] == [2, 2, 2]  # columns 0, 1, 2 of the mosaic
    np.testing.assert_allclose(got["s1"], ref["s1"], atol=1e-3)  # measured 6e-6 dB
    truth = _truth_db(world["unmoved"], turned_back(177.0), [Affine(*t) for t in table["transform"]])
    for side, rows in sides.items():
        err = np.abs(got["s1"][rows] - truth[rows])
        assert np.median(err) < 0.1 and np.quantile(err, 0.99) < 0.5, side  # DN rounding + resampling
    _check_footprints(table)
    man = json.loads((root / "moved" / "manifest.json").read_text())
    assert man["tiling"]["scenes"][0]["s1"][0]["product"] == PRODUCT


@pytest.mark.parametrize("layout", ["past180", "split"])
def test_dem_across_the_line(world, layout: str) -> None:
    """``--dem`` across the line, the DEM written past 180 deg or split at +-180 deg (a VRT of the tiles on
    either side): the terrain-corrected store of the unmoved product on the turned-back grid."""
    pytest.importorskip("sarsen")
    from csmae.cli import main
    from tests.geo.tile_fixtures import store_arrays

    root = world["root"] / "stores"
    out = root / f"moved_dem_{layout}"
    assert main(["tile", "--s2", *world["s2"], "--s1", world["moved"], "--dem", world["dems"][layout],
                 "--out", str(out)]) == 0
    ref = root / "unmoved_dem"
    if not ref.exists():
        assert main(["tile", "--s2", *world["s2_back"], "--s1", world["unmoved"], "--dem",
                     world["dem_unmoved"], "--out", str(ref)]) == 0
    got, ids = store_arrays(out)
    want, _ = store_arrays(ref)
    assert len(ids) == 6 and [len(v) for v in _sides(_table(out)).values()] == [2, 2, 2]
    # a DEM split at the line: within a DEM pixel of it GDAL's bilinear kernel reads one side only
    # (heights there up to 0.4 m off the continuous DEM's: measured 0.008 dB, 0 dB past 600 m)
    np.testing.assert_allclose(got["s1"], want["s1"], atol=1e-3 if layout == "past180" else 0.05)
    s1 = json.loads((out / "manifest.json").read_text())["tiling"]["scenes"][0]["s1"][0]
    assert s1["geocoding"]["method"].startswith("terrain (DEM)")
    w, s, e, n = s1["geocoding"]["dem"]["lonlat_bounds"]
    assert layout == "split" or (w > e and 179.7 < w < 180 and -179.8 < e < -179.7)  # W > E: across


def test_s1_alone_across_the_line_with_bbox_and_dem(world) -> None:
    """S1 alone (the place grid of zone 1) with ``--bbox`` across the line (W > E) and a DEM that covers
    the patches cut but not the 250 km product: patches on both sides, each the known field, each
    footprint its zone-1 square on the 1200 m cells."""
    pytest.importorskip("sarsen")
    from csmae.cli import main
    from tests.geo.tile_fixtures import store_arrays

    out = world["root"] / "stores" / "moved_s1only"
    assert main(["tile", "--s1", world["moved"], "--bbox", *map(str, BBOX), "--dem", world["dems"]["past180"],
                 "--out", str(out)]) == 0
    got, ids = store_arrays(out)
    table = _table(out)
    assert set(table["crs"]) == {"EPSG:32601"}
    sides = _sides(table)
    assert all(len(v) >= 2 for v in sides.values()), {k: len(v) for k, v in sides.items()}
    for t in table["transform"]:  # place cells: corners on multiples of 1200 m
        assert t[2] % 1200 == 0 and t[5] % 1200 == 0
    truth = _truth_db(world["unmoved"], turned_back(-177.0), [Affine(*t) for t in table["transform"]])
    for side, rows in sides.items():  # the DEM is the grid's heights: terrain ~ ellipsoid geocoding here
        err = np.abs(got["s1"][rows] - truth[rows])
        assert np.median(err) < 0.1 and np.quantile(err, 0.99) < 0.5, side
    _check_footprints(table)
