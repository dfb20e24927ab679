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
    small = tmp_path / "small.tif"
    write_dem(small, sc.grid.points, bounds=(2.0, 45.0, 3.0, 46.0))
    with pytest.raises(DataError, match="does not cover the S1 product") as e:
        check_dem(str(small), sc.footprint())
    assert str(small) in str(e.value)
    other = tmp_path / "osgb.tif"
    write_dem(other, sc.grid.points, crs="EPSG:4277")  # OSGB 1936 lon/lat: another datum
    with pytest.raises(DataError, match="datum is not WGS 84"):
        check_dem(str(other), sc.footprint())
    good = tmp_path / "dem.tif"
    write_dem(good, sc.grid.points)
    info = check_dem(str(good), sc.footprint())
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
