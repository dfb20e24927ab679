"""GRD terrain correction through sarsen on the real product: the orbit geometry with a DEM made of
the grid's own heights puts every GCP back on its (line, pixel); DEM checks refuse bad DEMs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from csmae.data.scenes.grd_scene import open_grd_scene
from csmae.errors import DataError
from tests.scenes.grd_fixtures import make_product

pytest.importorskip("sarsen")


def write_dem(path: Path, points: np.ndarray, *, crs: str = "EPSG:4326", bounds=None,
              res: float = 0.01) -> None:
    """A DEM on a lon/lat grid whose heights interpolate the geolocation grid's (linear; nearest outside)."""
    import rasterio
    from scipy.interpolate import griddata

    w, s, e, n = bounds or (points[:, 3].min() - 0.2, points[:, 2].min() - 0.2, points[:, 3].max() + 0.2,
                            points[:, 2].max() + 0.2)
    lon = np.arange(w, e, res) + res / 2
    lat = np.arange(n, s, -res) - res / 2
    gx, gy = np.meshgrid(lon, lat)
    z = griddata(points[:, [3, 2]], points[:, 4], (gx, gy), method="linear")
    near = griddata(points[:, [3, 2]], points[:, 4], (gx, gy), method="nearest")
    z = np.where(np.isnan(z), near, z).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=len(lon), height=len(lat), count=1, dtype="float32",
                       crs=crs, transform=Affine(res, 0, w, 0, -res, n)) as dst:
        dst.write(z, 1)


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    return make_product(tmp_path_factory.mktemp("grd"))


def test_orbit_geometry_puts_gcps_on_their_samples(product, tmp_path: Path) -> None:
    """A flat DEM at each GCP's height around it: the orbit geometry maps the GCP's lon/lat onto the
    GCP's (line, pixel), independently of the grid (ESA's geolocation vs sarsen's zero-Doppler)."""
    import rasterio
    from pyproj import Transformer
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_dem import DemGeometry

    sc = open_grd_scene(str(product.safe))
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    pts = sc.grid.points
    errs = []
    geo = DemGeometry(dem_path="", product_path=str(product.safe))
    for k in range(0, len(pts), 5):  # GCPs over the whole image (the geometry needs no pixels)
        dem = tmp_path / f"flat{k}.tif"
        with rasterio.open(dem, "w", driver="GTiff", width=20, height=20, count=1, dtype="float32",
                           crs="EPSG:4326", transform=Affine(0.002, 0, pts[k, 3] - 0.02, 0, -0.002,
                                                             pts[k, 2] + 0.02)) as dst:
            dst.write(np.full((1, 20, 20), pts[k, 4], np.float32))
        geo.dem_path = str(dem)  # the product (and its orbit) opened once
        x, y = to_utm.transform(pts[k, 3], pts[k, 2])
        t = Affine(10.0, 0, x - 205, 0, -10.0, y + 205)
        c = geo.coords(dst_crs=CRS.from_epsg(32631), dst_transform=t, shape=(41, 41))
        errs.append((c[0, 20, 20] - pts[k, 0], c[1, 20, 20] - pts[k, 1]))
    e = np.abs(np.array(errs))
    # measured: range 0.03 px median (0.3 max), azimuth about 1 line (2.2 max): 10-20 m along track
    assert np.median(e[:, 1]) < 0.2 and e[:, 1].max() < 1.0
    assert np.median(e[:, 0]) < 1.5 and e[:, 0].max() < 3.0


def test_dem_checks(product, tmp_path: Path) -> None:
    from csmae.data.scenes.grd_dem import check_dem

    sc = open_grd_scene(str(product.safe))
    far = tmp_path / "far.tif"
    write_dem(far, sc.grid.points, bounds=(10.0, 50.0, 11.0, 51.0))
    with pytest.raises(DataError, match="does not cover any of the S1 product") as e:
        check_dem(str(far), sc.footprint())
    assert str(far) in str(e.value)
    other = tmp_path / "osgb.tif"
    write_dem(other, sc.grid.points, crs="EPSG:4277")  # OSGB 1936 lon/lat: another datum
    with pytest.raises(DataError, match="datum is not WGS 84"):
        check_dem(str(other), sc.footprint())
    good = tmp_path / "dem.tif"
    write_dem(good, sc.grid.points)
    info, _ = check_dem(str(good), sc.footprint())
    assert info["heights"].startswith("taken as ellipsoidal")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="not a DEM raster"):
        check_dem(str(junk), sc.footprint())


def test_missing_sarsen_is_a_clear_error(monkeypatch) -> None:
    from csmae.data.scenes import grd_dem

    monkeypatch.setitem(sys.modules, "sarsen", None)
    with pytest.raises(RuntimeError, match=r"pip install 'csmae\[sar\]'"):
        grd_dem.DemGeometry(dem_path="x.tif", product_path="y.SAFE").coords(dst_crs=None, dst_transform=None,
                                                                            shape=(1, 1))


def rugged_dem(path: Path, points: np.ndarray, *, crs: str = "EPSG:4326", res: float = 0.0005,
               bounds=None) -> None:
    """A DEM over a small area with 0-2,400 m of relief and 30 m-scale roughness (not the grid's smooth
    heights): the lattice must hold wherever the heights go."""
    import rasterio

    w, s, e, n = bounds
    lon = np.arange(w, e, res) + res / 2
    lat = np.arange(n, s, -res) - res / 2
    gx, gy = np.meshgrid(lon, lat)
    rng = np.random.default_rng(0)
    z = 1200 + 1100 * np.sin(gx * 90) * np.cos(gy * 70) + rng.normal(0, 40, gx.shape)
    with rasterio.open(path, "w", driver="GTiff", width=len(lon), height=len(lat), count=1, dtype="float32",
                       crs=crs, transform=Affine(res, 0, w, 0, -res, n)) as dst:
        dst.write(z.astype(np.float32)[None])


def test_lattice_matches_sarsen_at_every_pixel(product, tmp_path: Path) -> None:
    """The lattice geometry (sarsen on every 10th node at 500 m height levels, trilinear between) against
    sarsen solving every target pixel at its own height: within 0.05 px (measured 0.01-0.02)."""
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_dem import DemGeometry

    dem = tmp_path / "rugged.tif"
    rugged_dem(dem, product_points(product), bounds=(1.9, 44.6, 2.4, 45.0))
    crs = CRS.from_epsg(32631)
    t = Affine(10.0, 0, 420000.0, 0, -10.0, 4970000.0)
    shape = (90, 700)  # 0.9 x 7 km: 63,000 pixels, 0-2,400 m
    exact = DemGeometry(dem_path=str(dem), product_path=str(product.safe), method="points")
    lattice = DemGeometry(dem_path=str(dem), product_path=str(product.safe))
    want = exact.coords(dst_crs=crs, dst_transform=t, shape=shape, step=1)
    got = lattice.coords(dst_crs=crs, dst_transform=t, shape=shape, step=1)
    z = exact.heights(crs, t, shape)
    assert np.ptp(z) > 1500 and np.isfinite(want).all()
    err = np.abs(got - want)
    assert err.max() < 0.05, err.reshape(2, -1).max(axis=1)
    # and the default 30 m nodes, each against sarsen at the same node
    want = exact.coords(dst_crs=crs, dst_transform=t, shape=shape)
    got = lattice.coords(dst_crs=crs, dst_transform=t, shape=shape)
    assert np.abs(got - want).max() < 0.05
    # the terrain moved the pixels: a flat DEM at the mean height puts them elsewhere (> 10 px in range)
    flat = tmp_path / "flat.tif"
    write_flat(flat, float(z.mean()), (1.9, 44.6, 2.4, 45.0))
    other = DemGeometry(dem_path=str(flat), product_path=str(product.safe)).coords(
        dst_crs=crs, dst_transform=t, shape=shape)
    assert np.abs(other[1] - got[1]).max() > 10


def product_points(product) -> np.ndarray:
    return open_grd_scene(str(product.safe)).grid.points


def write_flat(path: Path, height: float, bounds, *, crs: str = "EPSG:4326") -> None:
    import rasterio

    w, s, e, n = bounds
    with rasterio.open(path, "w", driver="GTiff", width=50, height=50, count=1, dtype="float32", crs=crs,
                       transform=Affine((e - w) / 50, 0, w, 0, -(n - s) / 50, n)) as dst:
        dst.write(np.full((1, 50, 50), height, np.float32))


def test_zipped_product_geometry_equals_the_folder(product, tmp_path: Path) -> None:
    """sarsen reads a zipped product in place (fsspec zip + GDAL /vsizip/): the same geometry as the folder,
    and nothing is unpacked next to the zip."""
    import zipfile

    from rasterio.crs import CRS

    from csmae.data.scenes.grd_dem import DemGeometry
    from tests.scenes.grd_fixtures import PRODUCT

    z = tmp_path / "zip" / f"{PRODUCT}.SAFE.zip"
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(product.safe.rglob("*")):
            if p.is_file():
                zf.write(p, f"{PRODUCT}.SAFE/{p.relative_to(product.safe).as_posix()}")
    dem = tmp_path / "flat.tif"
    write_flat(dem, 600.0, (1.9, 44.6, 2.4, 45.0))
    crs = CRS.from_epsg(32631)
    t = Affine(10.0, 0, 420000.0, 0, -10.0, 4970000.0)
    a = DemGeometry(dem_path=str(dem), product_path=str(product.safe)).coords(dst_crs=crs, dst_transform=t,
                                                                              shape=(60, 300))
    b = DemGeometry(dem_path=str(dem), product_path=str(z), zip_inner=f"{PRODUCT}.SAFE").coords(
        dst_crs=crs, dst_transform=t, shape=(60, 300))
    np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in z.parent.iterdir()) == [z.name]


def _geoid_grid(folder: Path, undulation: float) -> None:
    """A PROJ geoid grid (GeoTIFF, PROJ's format) of constant undulation, named as PROJ's EGM96 grid."""
    import rasterio

    with rasterio.open(folder / "us_nga_egm96_15.tif", "w", driver="GTiff", width=361, height=181, count=1,
                       dtype="float32", crs="EPSG:4326", transform=Affine(1, 0, -180.5, 0, -1, 90.5)) as dst:
        dst.write(np.full((1, 181, 361), undulation, np.float32))
        dst.update_tags(TYPE="VERTICAL_OFFSET_GEOGRAPHIC_TO_VERTICAL", area_or_point="Point")
        dst.set_band_description(1, "geoid_undulation")


def test_geoid_dem_converted_or_refused(product, tmp_path: Path) -> None:
    """A DEM whose CRS says EGM96 heights: refused, naming PROJ's grid, when PROJ does not have the geoid
    grid; with the grid, its heights are raised by the undulation before sarsen sees them (the same
    geometry as an ellipsoidal DEM of H + N)."""
    import pyproj
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_dem import DemGeometry, check_dem

    sc = open_grd_scene(str(product.safe))
    box = (sc.footprint().bounds[0] - 0.1, sc.footprint().bounds[1] - 0.1, sc.footprint().bounds[2] + 0.1,
           sc.footprint().bounds[3] + 0.1)
    geoid_dem = tmp_path / "egm96.tif"
    write_flat(geoid_dem, 500.0, box, crs="EPSG:4326+5773")
    before = pyproj.datadir.get_data_dir()
    from pyproj.transformer import TransformerGroup

    if not TransformerGroup("EPSG:4326+5773", "EPSG:4979").best_available:  # PROJ without the EGM96 grid
        with pytest.raises(DataError, match="lacks the geoid grid us_nga_egm96_15.tif") as e:
            check_dem(str(geoid_dem), sc.footprint())
        assert str(geoid_dem) in str(e.value) and "pyproj sync" in str(e.value)
    grids = tmp_path / "proj"
    grids.mkdir()
    _geoid_grid(grids, 47.0)
    pyproj.datadir.append_data_dir(str(grids))
    try:
        info, geoid = check_dem(str(geoid_dem), sc.footprint())
        assert "EGM96" in info["heights"] and "converted" in info["heights"]
        crs = CRS.from_epsg(32631)
        t = Affine(10.0, 0, 420000.0, 0, -10.0, 4970000.0)
        geo = DemGeometry(dem_path=str(geoid_dem), product_path=str(product.safe), geoid=geoid)
        np.testing.assert_allclose(geo.heights(crs, t, (4, 4)), 547.0, atol=1e-3)
        ell = tmp_path / "ellipsoid.tif"
        write_flat(ell, 547.0, box)
        want = DemGeometry(dem_path=str(ell), product_path=str(product.safe)).coords(
            dst_crs=crs, dst_transform=t, shape=(30, 30))
        np.testing.assert_allclose(geo.coords(dst_crs=crs, dst_transform=t, shape=(30, 30)), want, atol=1e-3)
    finally:
        pyproj.datadir.set_data_dir(before)
