"""GRD geocoding on the real geolocation grid: agreement with ``gdalwarp`` (GDAL's CLI, an independent
run of the same transformers), positions at the GCPs, the footprint against the grid, and the scene
reader end to end (folder and zip) against the known backscatter field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from csmae.data.scenes.grd_geocode import GcpGrid, geocode_window, radar_window, terrain_error_m
from csmae.data.scenes.grd_scene import open_grd_scene
from tests.scenes.grd_fixtures import REGION, copy_xmls, make_product, sigma_field

UTM = "EPSG:32631"
#: a 20 m target grid well inside REGION (x 415-432 km, y 4958-4972 km in UTM 31N)
BOX_T = Affine(20.0, 0, 415000.0, 0, -20.0, 4972000.0)
BOX_SHAPE = (700, 850)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return open_grd_scene(str(copy_xmls(tmp_path_factory.mktemp("xml"))))


def _crs():
    from rasterio.crs import CRS

    return CRS.from_string(UTM)


def _coords(l0: int, l1: int, p0: int, p1: int) -> np.ndarray:
    """(2, h, w) float32: every pixel's own line and pixel (bilinear reproduces them exactly)."""
    ln, px = np.meshgrid(np.arange(l0, l1, dtype=np.float32), np.arange(p0, p1, dtype=np.float32),
                         indexing="ij")
    return np.stack([ln, px])


def _write_coords(path: Path, scene, region) -> None:
    import rasterio
    from rasterio.crs import CRS

    l0, l1, p0, p1 = region
    with rasterio.open(path, "w", driver="GTiff", width=scene.samples, height=scene.lines, count=2,
                       dtype="float32", tiled=True, blockxsize=256, blockysize=256, SPARSE_OK=True) as dst:
        dst.gcps = (scene.grid.gcps(), CRS.from_epsg(4326))
        dst.write(_coords(l0, l1, p0, p1), window=rasterio.windows.Window(p0, l0, p1 - p0, l1 - l0))


@pytest.mark.parametrize("method,flag,tol_max,tol_median", [
    # the polynomial agrees to the approximate transformer's threshold. The spline: GDAL 3.6 (Debian's
    # gdal-bin) and 3.10 (rasterio's wheel) agree at the GCPs (test below) but up to 2 px (20 m) between
    # them, median 0.8 px, measured on this grid; well inside the spline's own leave-one-out error
    # between grid points (83 m median, bench/bench_grd.py)
    ("tps", ["-tps"], 2.5, 1.0), ("poly3", ["-order", "3"], 0.1, 0.01)])
def test_geocoding_matches_gdalwarp(scene, tmp_path: Path, method: str, flag: list[str], tol_max: float,
                                    tol_median: float) -> None:
    gdalwarp = shutil.which("gdalwarp")
    if gdalwarp is None:
        pytest.skip("gdalwarp not installed (apt-get install gdal-bin)")
    import rasterio

    src = tmp_path / "coords.tif"
    _write_coords(src, scene, REGION)
    out = tmp_path / "gdal.tif"
    h, w = BOX_SHAPE
    left, top = BOX_T.c, BOX_T.f
    subprocess.run([gdalwarp, "-q", *flag, "-r", "bilinear", "-t_srs", UTM, "-tr", "20", "20", "-te",
                    str(left), str(top - 20 * h), str(left + 20 * w), str(top), "-ot", "Float32",
                    str(src), str(out)], check=True)
    with rasterio.open(out) as ds:
        want = ds.read()
    l0, l1, p0, p1 = REGION
    got = geocode_window(_coords(l0, l1, p0, p1), l0, p0, scene.grid, method=method, dst_crs=_crs(),
                         dst_transform=BOX_T, dst_shape=BOX_SHAPE)
    assert np.isfinite(got).all()  # the box lies inside the region
    err = np.abs(got - want)
    assert err.max() < tol_max and np.median(err) < tol_median, f"{method}: max {err.max():.3f} px"
    # the same GDAL as ours, warping the whole file with its own (unshifted) GCPs: identical
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    with rasterio.open(src) as ds:
        same = np.full_like(got, np.nan)
        from csmae.data.scenes.grd_geocode import warp_options

        reproject(rasterio.band(ds, [1, 2]), same, dst_transform=BOX_T, dst_crs=_crs(),
                  resampling=Resampling.bilinear, **warp_options(method))
    assert np.abs(same - got).max() < 0.01


@pytest.mark.parametrize("method", ["tps", "poly3"])
def test_window_shift_does_not_move_the_geometry(scene, method: str) -> None:
    l0, l1, p0, p1 = REGION
    full = geocode_window(_coords(l0, l1, p0, p1), l0, p0, scene.grid, method=method, dst_crs=_crs(),
                          dst_transform=BOX_T, dst_shape=BOX_SHAPE)
    win = radar_window(scene.grid, _crs(), BOX_T, BOX_SHAPE[1], BOX_SHAPE[0], lines=scene.lines,
                       samples=scene.samples)
    assert win is not None
    a0, a1, b0, b1 = win
    assert l0 <= a0 and a1 <= l1 and p0 <= b0 and b1 <= p1  # the box's window is inside the region
    part = geocode_window(_coords(a0, a1, b0, b1), a0, b0, scene.grid, method=method, dst_crs=_crs(),
                          dst_transform=BOX_T, dst_shape=BOX_SHAPE)
    assert np.isfinite(part).all()  # the window found covers the whole target
    assert np.abs(part - full).max() < 0.25


def test_tps_puts_gcps_where_the_grid_says(scene) -> None:
    """At each GCP inside the region, the geocoded (line, pixel) is the GCP's."""
    from pyproj import Transformer

    l0, l1, p0, p1 = REGION
    src = _coords(l0, l1, p0, p1)
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    pts = scene.grid.points
    inside = (pts[:, 0] > l0 + 50) & (pts[:, 0] < l1 - 50) & (pts[:, 1] > p0 + 50) & (pts[:, 1] < p1 - 50)
    assert inside.sum() == 4
    for k in np.flatnonzero(inside):
        x, y = to_utm.transform(pts[k, 3], pts[k, 2])
        t = Affine(10.0, 0, x - 205, 0, -10.0, y + 205)  # 41 x 41 pixels, the GCP at the centre of (20, 20)
        got = geocode_window(src, l0, p0, scene.grid, method="tps", dst_crs=_crs(), dst_transform=t,
                             dst_shape=(41, 41))
        assert abs(got[0, 20, 20] - pts[k, 0]) < 0.05 and abs(got[1, 20, 20] - pts[k, 1]) < 0.05


def test_footprint_matches_the_geolocation_grid(scene) -> None:
    """The whole image, decimated 16x (the grid scaled alike), geocoded onto a 200 m UTM grid: its
    valid area against the polygon of the grid's outer points (lon/lat)."""
    import shapely
    from pyproj import Transformer
    from rasterio.features import shapes

    f = 16
    pts = scene.grid.points.copy()
    pts[:, :2] = (pts[:, :2] + 0.5) / f - 0.5  # sample centres in the decimated raster
    small = GcpGrid(pts)
    h, w = scene.lines // f + 1, scene.samples // f + 1
    t = Affine(200.0, 0, 380000.0, 0, -200.0, 5160000.0)
    out = geocode_window(np.ones((1, h, w), np.float32), 0, 0, small, method="tps", dst_crs=_crs(),
                         dst_transform=t, dst_shape=(1300, 1700))
    valid = np.isfinite(out[0])
    assert valid.any() and not (valid[0].any() or valid[-1].any() or valid[:, 0].any() or valid[:, -1].any())
    poly = shapely.union_all([shapely.geometry.shape(g)
                              for g, v in shapes(valid.astype(np.uint8), transform=t) if v == 1])
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    ring = np.asarray(scene.footprint().exterior.coords)
    grid_poly = shapely.Polygon(np.stack(to_utm.transform(ring[:, 0], ring[:, 1]), axis=1))
    dist = shapely.hausdorff_distance(poly, grid_poly)
    assert dist < 600, dist  # 3 cells of 200 m, decimation included
    assert abs(poly.area / grid_poly.area - 1) < 0.01


def test_terrain_error_from_the_grid(scene) -> None:
    e = terrain_error_m(scene.grid)
    inc = scene.grid.points[:, 5]
    assert e["near_range_m"] == pytest.approx(100 / np.tan(np.deg2rad(inc.min())))
    assert 160 < e["near_range_m"] < 180 and 90 < e["far_range_m"] < 100  # 30.4 and 46.2 deg


@pytest.mark.parametrize("zipped", [False, True])
def test_scene_warp_gives_the_field_on_the_map(tmp_path: Path, zipped: bool) -> None:
    from csmae.data.scenes.rasters import open_raster

    fx = make_product(tmp_path, zipped=zipped)
    opened: dict[str, object] = {}

    def open_dataset(p: str):
        if p not in opened:
            opened[p] = open_raster(p) if not p.startswith("/vsizip/") else __import__("rasterio").open(p)
        return opened[p]

    sc = open_grd_scene(str(fx.safe))
    sc.check_measurements(open_dataset)
    t = Affine(10.0, 0, 415000.0, 0, -10.0, 4972000.0)
    sec: dict[str, float] = {}
    lin = sc.warp(dst_crs=_crs(), dst_transform=t, shape=(300, 1600), open_dataset=open_dataset, seconds=sec)
    assert set(sec) >= {"decode", "noise", "calibration", "warp"}
    coords = geocode_window(_coords(*REGION), REGION[0], REGION[2], sc.grid, method="tps", dst_crs=_crs(),
                            dst_transform=t, dst_shape=(300, 1600))
    ok = np.isfinite(lin).all(axis=0)
    assert ok.mean() > 0.9
    ln, px = coords[0][ok], coords[1][ok]
    for k, pol in enumerate(("VV", "VH")):
        truth = np.array([sigma_field(pol, np.array([a]), np.array([b]))[0, 0] for a, b in
                          zip(np.rint(ln[::97]).astype(int), np.rint(px[::97]).astype(int))])
        rel = np.abs(lin[k][ok][::97] / truth - 1)
        assert np.median(rel) < 0.02 and np.quantile(rel, 0.95) < 0.06
    g0 = open_grd_scene(str(fx.safe), calibration="gamma0").warp(
        dst_crs=_crs(), dst_transform=t, shape=(300, 1600), open_dataset=open_dataset)
    # gamma0 = sigma0 / cos(incidence): the LUTs agree with the grid's incidence angles
    pts = sc.grid.points
    inc = np.interp(np.nanmean(coords[1]), np.unique(pts[:, 1]), pts[pts[:, 0] == pts[0, 0], 5])
    ratio = np.nanmedian(g0[0] / lin[0])
    assert ratio == pytest.approx(1 / np.cos(np.deg2rad(inc)), rel=0.02)


@pytest.mark.parametrize("method", ["tps", "poly3"])
def test_radar_coords_equal_the_gdal_warp_of_the_coordinates(scene, method: str) -> None:
    """The tiler's mapping (decimated coordinate raster on a coarse grid, linearly interpolated)
    against GDAL warping the full-resolution coordinate raster pixel by pixel."""
    from csmae.data.scenes.grd_geocode import radar_coords, sample

    l0, l1, p0, p1 = REGION
    want = geocode_window(_coords(l0, l1, p0, p1), l0, p0, scene.grid, method=method, dst_crs=_crs(),
                          dst_transform=BOX_T, dst_shape=BOX_SHAPE)
    got = radar_coords(scene.grid, method=method, dst_crs=_crs(), dst_transform=BOX_T, shape=BOX_SHAPE,
                       lines=scene.lines, samples=scene.samples)
    err = np.abs(got - want)
    # GDAL's own answers move by up to ~0.6 px at rare points with the source window and target
    # spacing (its approximate transformer; measured), hence a median and a max
    assert np.median(err) < 0.05 and np.quantile(err, 0.99) < 0.25 and err.max() < 1.0
    # sampling a smooth field at those coordinates = GDAL warping the field
    field = np.sin(_coords(l0, l1, p0, p1)[0:1] / 50.0) * np.cos(_coords(l0, l1, p0, p1)[1:2] / 70.0)
    field = field.astype(np.float32)
    by_gdal = geocode_window(field, l0, p0, scene.grid, method=method, dst_crs=_crs(), dst_transform=BOX_T,
                             dst_shape=BOX_SHAPE)
    assert np.quantile(np.abs(sample(field, l0, p0, got) - by_gdal), 0.999) < 5e-3
    # a NaN in the source is NaN where the stencil touches it, in both (GDAL's bilinear widens its
    # kernel when the target is coarser, as here at 20 m: more NaN there)
    field[0, 700:702, 900:902] = np.nan
    a = sample(field, l0, p0, got)[0]
    b = geocode_window(field, l0, p0, scene.grid, method=method, dst_crs=_crs(), dst_transform=BOX_T,
                       dst_shape=BOX_SHAPE)[0]
    assert 0 < np.isnan(a).sum() <= np.isnan(b).sum() and (np.isnan(a) <= np.isnan(b)).all()
