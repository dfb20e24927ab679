"""GRD terrain correction with a DEM: radar coordinates from the orbit, through sarsen.

For every target pixel the DEM gives a height; sarsen (over xarray-sentinel, Apache-2.0) turns the
point (x, y, h) into ECEF and solves the zero-Doppler equation on the product's orbit (the state
vectors of the annotation: no orbit file is needed) for its azimuth time and slant range time;
xarray-sentinel's slant-to-ground-range polynomials give the ground range. Line and pixel follow
from the measurement's azimuth times and ground ranges. Nothing of the radar geometry is written
here. The mapping is computed on every ``step``-th target pixel (30 m for the 10 m grid, the
resolution of Copernicus GLO-30) and interpolated linearly; the data are then sampled as without a
DEM (:func:`csmae.data.scenes.grd_geocode.sample`).

Heights must be ellipsoidal (WGS 84) unless the DEM's CRS says otherwise (a compound CRS with a
geoid vertical datum is converted by PROJ); Copernicus GLO-30 is EGM2008: about 50 m in Europe, i.e.
50-85 m of horizontal error if taken as ellipsoidal (logged). Needs the optional extra
``csmae[sar]`` (sarsen) and the product as a folder (sarsen opens the SAFE itself).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.data.scenes.grd_geocode import upsample_nodes
from csmae.errors import DataError

log = logging.getLogger(__name__)

#: target pixels between DEM geocoding nodes (3 x 10 m = the 30 m of GLO-30)
DEM_STEP = 3


def _sarsen() -> Any:
    try:
        import sarsen
    except ImportError:
        raise RuntimeError("--dem needs sarsen (terrain correction): pip install 'csmae[sar]'") from None
    return sarsen


@dataclass
class DemGeometry:
    """Radar coordinates of target pixels from a DEM and the orbit of one GRD product."""

    dem_path: str
    product_path: str
    _product: Any = None
    _orbit: Any = None
    _az0: Any = None
    _daz: Any = None
    _gr0: float = 0.0
    _dgr: float = 1.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _open(self) -> None:
        if self._product is not None:
            return
        sarsen = _sarsen()
        from sarsen import orbit

        try:
            product = sarsen.Sentinel1SarProduct(self.product_path, measurement_group="IW/VV")
            m = product.measurement
            az = m.azimuth_time.values
            gr = m.ground_range.values
            self._orbit = orbit.OrbitPolyfitInterpolator.from_position(product.state_vectors())
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"sarsen cannot open the product for terrain correction ({str(e)[:200]})",
                            path=self.product_path) from None
        self._az0, self._daz = az[0], (az[-1] - az[0]) / (len(az) - 1)
        self._gr0, self._dgr = float(gr[0]), float((gr[-1] - gr[0]) / (len(gr) - 1))
        self._product = product

    def heights(self, dst_crs: Any, node_t: Any, shape: tuple[int, int]) -> np.ndarray:
        """DEM heights (bilinear) at the nodes of a grid; NaN where the DEM has no data."""
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        out = np.full(shape, np.nan, dtype=np.float32)
        with rasterio.open(self.dem_path) as dem:
            reproject(rasterio.band(dem, 1), out, dst_transform=node_t, dst_crs=dst_crs,
                      dst_nodata=np.nan, resampling=Resampling.bilinear)
        return out

    def coords(self, *, dst_crs: Any, dst_transform: Any, shape: tuple[int, int], step: int = DEM_STEP
               ) -> np.ndarray:
        """(2, *shape) float32 radar (line, pixel) of a target grid's pixels, terrain-corrected."""
        with self._lock:  # one xarray/sarsen solve at a time (the other stages run in parallel)
            return self._coords(dst_crs=dst_crs, dst_transform=dst_transform, shape=shape, step=step)

    def _coords(self, *, dst_crs: Any, dst_transform: Any, shape: tuple[int, int], step: int) -> np.ndarray:
        self._open()
        import xarray as xr
        from affine import Affine
        from sarsen import apps, scene

        h, w = shape
        hc, wc = (h - 1) // step + 2, (w - 1) // step + 2
        node_t = dst_transform * Affine.translation(0.5 - step / 2, 0.5 - step / 2) * Affine.scale(step)
        z = self.heights(dst_crs, node_t, (hc, wc)).astype(np.float64)
        if np.isnan(z).any():
            raise DataError(f"the DEM does not cover the target ({int(np.isnan(z).sum())} of {z.size} points "
                            "without height): give a DEM over the whole S1 / S2 overlap", path=self.dem_path)
        xs = node_t.c + node_t.a * (np.arange(wc) + 0.5)
        ys = node_t.f + node_t.e * (np.arange(hc) + 0.5)
        dem = xr.DataArray(z, coords={"y": ys, "x": xs}, dims=("y", "x")).rio.write_crs(dst_crs.to_wkt())
        acq = apps.simulate_acquisition(scene.convert_to_dem_ecef(dem), self._orbit)
        gr = self._product.slant_range_time_to_ground_range(acq.azimuth_time, acq.slant_range_time)
        line = ((acq.azimuth_time.values - self._az0) / self._daz).astype(np.float32)
        pixel = ((np.asarray(gr.values, dtype=np.float64) - self._gr0) / self._dgr).astype(np.float32)
        return upsample_nodes(np.stack([line, pixel]), step, (h, w))


def check_dem(dem_path: str, footprint_lonlat: Any) -> dict[str, Any]:
    """Check a DEM file before any work: readable, georeferenced, WGS 84-compatible, covering the
    product's footprint. Returns what the manifest records about it."""
    import rasterio
    import shapely
    from rasterio.warp import transform_bounds

    try:
        ds = rasterio.open(dem_path)
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"not a DEM raster GDAL can read ({str(e).splitlines()[0][:200]})",
                        path=dem_path) from None
    with ds:
        if ds.crs is None:
            raise DataError("the DEM has no CRS", path=dem_path)
        datum = (ds.crs.to_dict().get("datum") or "").upper()
        wkt = ds.crs.to_wkt()
        if not any(k in wkt for k in ("WGS 84", "WGS_1984", "WGS84")) and datum != "WGS84":
            raise DataError("the DEM's horizontal datum is not WGS 84 (its CRS: "
                            f"{ds.crs.to_string()[:120]}): reproject it first (gdalwarp -t_srs EPSG:4326)",
                            path=dem_path)
        vertical = "VERTCRS" in wkt or "VERT_CS" in wkt
        if not vertical:
            log.warning("%s: no vertical datum in the DEM's CRS: heights are taken as ellipsoidal (WGS 84); "
                        "a geoid DEM (e.g. Copernicus GLO-30, EGM2008) is then tens of metres off", dem_path)
        box = shapely.box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))
        miss = footprint_lonlat.difference(box)
        if miss.area > 1e-6 * footprint_lonlat.area:
            have = tuple(round(v, 3) for v in box.bounds)
            need = tuple(round(v, 3) for v in footprint_lonlat.bounds)
            raise DataError(f"the DEM (lon/lat bounds {have}) does not cover the S1 product (footprint "
                            f"{need}): {miss.area / footprint_lonlat.area:.0%} of it lies outside",
                            path=dem_path)
        return {"path": dem_path, "crs": ds.crs.to_string(), "resolution": list(ds.res),
                "heights": ("as the DEM's vertical datum" if vertical
                            else "taken as ellipsoidal (no vertical CRS)")}
