"""GRD terrain correction with a DEM: radar coordinates from the orbit, through sarsen.

sarsen (over xarray-sentinel, Apache-2.0) turns a point (x, y, h) into ECEF and solves the
zero-Doppler equation on the product's orbit (the state vectors of the annotation: no orbit file is
needed) for its azimuth time and slant range time; xarray-sentinel's slant-to-ground-range
polynomials give the ground range. Line and pixel follow from the measurement's azimuth times and
ground ranges. Nothing of the radar geometry is written here.

**How it is used** (:meth:`DemGeometry.coords`, one call per strip of the tiler):

1. DEM heights, bilinear, on every ``DEM_STEP``-th target pixel (30 m nodes for the 10 m grid:
   the resolution of Copernicus GLO-30).
2. The mapping (x, y, h) -> (line, pixel) is smooth in all three variables (the orbit is a
   5th-degree polynomial over minutes, the height moves a point by h / tan(incidence) in range
   with a curvature of ~1e-6 per metre), so sarsen solves it on a **lattice** only: every
   ``LATTICE_NODES``-th node (600 m) at height levels ``LEVEL_M`` (500 m) apart spanning the
   strip's heights, and every node's (line, pixel) is the trilinear interpolation of the lattice at
   its (x, y, h). Against sarsen solving every node (``method="points"``) the lattice is within
   0.01 px (tests/scenes/test_grd_dem.py, bench/README.md ``## raw S1 GRD``) at 1/100 to 1/200 of
   the points; the solve per node was 30 us of xarray work, 15M nodes for a full S2 tile.
3. Linear interpolation of the nodes' (line, pixel) to every target pixel; the data are then
   sampled as without a DEM (:func:`csmae.data.scenes.grd_geocode.sample`).

The ground-range polynomials are looked up at the azimuth time clipped to the span the annotation
gives them for (it ends ~60 lines after the last line here): they change by millimetres over that
span, and a target just past the product's end then still maps past the last line (outside the
image, nodata) instead of NaN.

**Heights** must be ellipsoidal (WGS 84), as sarsen takes them. A DEM whose CRS carries a
gravity-related vertical datum (a compound CRS such as EPSG:4326+3855, WGS 84 + EGM2008 height) is
converted with pyproj when PROJ has the geoid grid, and refused with the grid's name when it does
not (PROJ's fallback would silently leave the heights unchanged). A DEM without a vertical CRS is
taken as ellipsoidal and a warning says so: Copernicus GLO-30 is EGM2008 (~50 m in Europe, i.e.
50-85 m of horizontal error); declare it with ``gdal_edit.py -a_srs EPSG:4326+3855 DEM.tif``.

**Coverage**: the DEM must cover the part of the product a run uses (its footprint under the S2 patch
grid; for an S1-only store the whole product, or with ``--bbox`` / ``--aoi`` the patches that
intersect the area), checked before anything is written (:func:`check_covers`). A node without
height inside it (a void: the DEM's nodata) gets no geometry: its pixels are nodata, as in SNAP's
terrain correction, and its patches are skipped with the S1 reason.

A zipped product is read in place: xarray-sentinel opens the SAFE through an fsspec zip
filesystem (the XML members from the zip) and the measurement's header through GDAL's
``/vsizip/``; nothing is unpacked. Needs the optional extra ``csmae[sar]`` (sarsen).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.data.scenes.grd_geocode import upsample_nodes
from csmae.errors import DataError

log = logging.getLogger(__name__)

#: target pixels between DEM height nodes (3 x 10 m = the 30 m of GLO-30)
DEM_STEP = 3
#: height nodes between lattice points where sarsen solves the geometry (10 x 30 m = 300 m)
LATTICE_NODES = 10
#: metres between the lattice's height levels
LEVEL_M = 500.0
#: how the node coordinates are found: on the lattice (default) or by sarsen at every node (reference)
METHODS = ("lattice", "points")


def _sarsen() -> Any:
    try:
        import sarsen
    except ImportError:
        raise RuntimeError("--dem needs sarsen (terrain correction): pip install 'csmae[sar]'") from None
    return sarsen


def _zip_filesystem(zip_path: str) -> Any:
    """An fsspec zip filesystem whose members GDAL (rasterio) opens as ``/vsizip/`` paths.

    xarray-sentinel reads the XML members through the filesystem and hands the measurement to
    rasterio as ``fs.unstrip_protocol(member)``; for a zip that URL must be GDAL's."""
    from pathlib import Path

    from fsspec.implementations.zip import ZipFileSystem

    root = Path(zip_path).resolve()

    class GdalZipFileSystem(ZipFileSystem):  # type: ignore[misc]
        def unstrip_protocol(self, name: str) -> str:
            return f"/vsizip/{root}/{self._strip_protocol(name)}"

    return GdalZipFileSystem(fo=str(root), skip_instance_cache=True)


@dataclass
class DemGeometry:
    """Radar coordinates of target pixels from a DEM and the orbit of one GRD product.

    ``product_path`` is the ``.SAFE`` folder, or the ``.zip`` with ``zip_inner`` the ``X.SAFE``
    folder inside it ("" when the zip's root is the product)."""

    dem_path: str
    product_path: str
    zip_inner: str | None = None
    method: str = "lattice"
    geoid: Any = None  # pyproj Transformer (lon, lat, geoid height) -> ellipsoid height; None: as is
    _product: Any = None
    _orbit: Any = None
    _az0: Any = None
    _daz: Any = None
    _gr0: float = 0.0
    _dgr: float = 1.0
    _cc_span: Any = None  # azimuth times of the first and last ground-range polynomial
    #: seconds spent per step, summed over calls: dem (heights), sarsen (solve), interp (lattice), upsample
    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stats: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _add(self, step: str, t0: float) -> None:
        dt = time.perf_counter() - t0
        with self._stats:
            self.seconds[step] = self.seconds.get(step, 0.0) + dt

    def __getstate__(self) -> dict[str, Any]:  # picklable: the opened product and the lock stay behind
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_stats")}
        for k in ("_product", "_orbit", "_az0", "_daz", "_cc_span"):
            state[k] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._stats = threading.Lock(), threading.Lock()

    def _open(self) -> None:
        if self._product is not None:
            return
        sarsen = _sarsen()
        from sarsen import orbit

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        where = self.product_path if self.zip_inner is None else f"{self.product_path}!{self.zip_inner}"
        try:
            if self.zip_inner is None:
                product = sarsen.Sentinel1SarProduct(self.product_path, measurement_group="IW/VV")
            else:
                product = sarsen.Sentinel1SarProduct(f"zip://{self.zip_inner}", measurement_group="IW/VV",
                                                     kwargs={"fs": _zip_filesystem(self.product_path)})
            m = product.measurement
            az = m.azimuth_time.values
            gr = m.ground_range.values
            self._orbit = orbit.OrbitPolyfitInterpolator.from_position(product.state_vectors())
            cc = product.coordinate_conversion.azimuth_time.values
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"sarsen cannot open the product for terrain correction ({str(e)[:200]})",
                            path=where) from None
        self._az0, self._daz = az[0], (az[-1] - az[0]) / (len(az) - 1)
        self._gr0, self._dgr = float(gr[0]), float((gr[-1] - gr[0]) / (len(gr) - 1))
        self._cc_span = (cc.min(), cc.max())
        self._product = product

    def heights(self, dst_crs: Any, node_t: Any, shape: tuple[int, int]) -> np.ndarray:
        """Ellipsoidal DEM heights (bilinear) at the nodes of a grid; NaN where the DEM has no data."""
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        out = np.full(shape, np.nan, dtype=np.float32)
        with rasterio.open(self.dem_path) as dem:
            reproject(rasterio.band(dem, 1), out, src_crs=horizontal_crs(dem.crs), dst_transform=node_t,
                      dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
        if self.geoid is not None:
            out = self._to_ellipsoid(out, dst_crs, node_t)
        return out

    def _to_ellipsoid(self, z: np.ndarray, dst_crs: Any, node_t: Any) -> np.ndarray:
        from pyproj import Transformer

        rows, cols = np.indices(z.shape)
        xs = node_t.c + node_t.a * (cols + 0.5)
        ys = node_t.f + node_t.e * (rows + 0.5)
        lon, lat = Transformer.from_crs(dst_crs.to_wkt(), "EPSG:4326", always_xy=True).transform(xs, ys)
        ok = np.isfinite(z)
        out = np.full(z.shape, np.nan, dtype=np.float32)
        out[ok] = np.asarray(self.geoid.transform(lon[ok], lat[ok], z[ok].astype(np.float64))[2], np.float32)
        return out

    def solve(self, dst_crs: Any, xs: np.ndarray, ys: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(2, ...) float64 radar (line, pixel) of points ``(xs[j], ys[i], z[..., i, j])`` (target CRS,
        ellipsoidal heights), solved by sarsen: ``z`` is (ny, nx) or (levels, ny, nx)."""
        with self._lock:
            self._open()
        import xarray as xr
        from sarsen import apps, scene

        flat = z.reshape(-1, len(ys), len(xs))
        crs = dst_crs.to_wkt()
        ecef = [scene.convert_to_dem_ecef(xr.DataArray(lvl, coords={"y": ys, "x": xs}, dims=("y", "x"))
                                          .rio.write_crs(crs)) for lvl in flat]
        with self._lock:  # one xarray/sarsen solve at a time (the other stages run in parallel)
            t0 = time.perf_counter()
            acq = apps.simulate_acquisition(xr.concat(ecef, dim="level"), self._orbit)
            az = acq.azimuth_time
            lo, hi = self._cc_span
            gr = self._product.slant_range_time_to_ground_range(az.clip(lo, hi), acq.slant_range_time)
            self._add("sarsen", t0)
        line = (az.values - self._az0) / self._daz
        pixel = (np.asarray(gr.values, dtype=np.float64) - self._gr0) / self._dgr
        return np.stack([line, pixel]).reshape(2, *z.shape)

    def coords(self, *, dst_crs: Any, dst_transform: Any, shape: tuple[int, int], step: int = DEM_STEP
               ) -> np.ndarray:
        """(2, *shape) float32 radar (line, pixel) of a target grid's pixels, terrain-corrected; NaN
        where the DEM has no height."""
        from affine import Affine

        _sarsen()
        h, w = shape
        hc, wc = (h - 1) // step + 2, (w - 1) // step + 2
        node_t = dst_transform @ Affine.translation(0.5 - step / 2, 0.5 - step / 2) @ Affine.scale(step)
        t0 = time.perf_counter()
        z = self.heights(dst_crs, node_t, (hc, wc)).astype(np.float64)
        self._add("dem", t0)
        xs = node_t.c + node_t.a * (np.arange(wc) + 0.5)
        ys = node_t.f + node_t.e * (np.arange(hc) + 0.5)
        node = np.full((2, hc, wc), np.nan)
        ok = np.isfinite(z)
        if ok.any():
            if self.method == "points":
                node = self.solve(dst_crs, xs, ys, np.where(ok, z, 0.0))
            else:
                node = self._lattice(dst_crs, xs, ys, z)
            node[:, ~ok] = np.nan
        t0 = time.perf_counter()
        out = upsample_nodes(node.astype(np.float32), step, (h, w))
        self._add("upsample", t0)
        return out

    def _lattice(self, dst_crs: Any, xs: np.ndarray, ys: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(2, *z.shape) (line, pixel) at the nodes, interpolated from sarsen's on a coarse lattice."""
        from scipy.ndimage import map_coordinates

        m = LATTICE_NODES
        hc, wc = z.shape
        ny, nx = max(2, -(-(hc - 1) // m) + 1), max(2, -(-(wc - 1) // m) + 1)
        lat_x = xs[0] + (xs[1] - xs[0] if wc > 1 else 1.0) * m * np.arange(nx)
        lat_y = ys[0] + (ys[1] - ys[0] if hc > 1 else -1.0) * m * np.arange(ny)
        zf = z[np.isfinite(z)]
        lo = np.floor(zf.min() / LEVEL_M) * LEVEL_M
        k = max(2, int(np.ceil((zf.max() - lo) / LEVEL_M)) + 1)
        levels = lo + LEVEL_M * np.arange(k)
        lattice = self.solve(dst_crs, lat_x, lat_y, np.broadcast_to(levels[:, None, None], (k, ny, nx)))
        t0 = time.perf_counter()
        rows, cols = np.indices(z.shape, dtype=np.float64)
        where = [np.where(np.isfinite(z), (z - lo) / LEVEL_M, 0.0), rows / m, cols / m]
        out = np.stack([map_coordinates(lattice[b], where, order=1, mode="nearest") for b in range(2)])
        self._add("interp", t0)
        return out


def horizontal_crs(crs: Any) -> Any:
    """The horizontal part of a CRS (a compound CRS's first component), as rasterio's CRS."""
    from pyproj import CRS as ProjCRS
    from rasterio.crs import CRS

    p = ProjCRS.from_wkt(crs.to_wkt())
    return CRS.from_wkt(p.sub_crs_list[0].to_wkt()) if p.is_compound else crs


def vertical_datum(crs: Any) -> Any | None:
    """The vertical (gravity-related) CRS of a compound CRS, else None (pyproj)."""
    from pyproj import CRS as ProjCRS

    p = ProjCRS.from_wkt(crs.to_wkt())
    if not p.is_compound:
        return None
    return next((c for c in p.sub_crs_list if c.is_vertical), None)


def geoid_transformer(vertical: Any, dem_path: str) -> Any:
    """A pyproj Transformer (lon, lat, height above the geoid) -> WGS 84 ellipsoidal height; a DataError
    naming the geoid grid when PROJ does not have it (its fallback would leave heights unchanged)."""
    from pyproj import CRS as ProjCRS
    from pyproj.crs import CompoundCRS
    from pyproj.transformer import TransformerGroup

    src = CompoundCRS(name=f"WGS 84 + {vertical.name}", components=[ProjCRS("EPSG:4326"), vertical])
    group = TransformerGroup(src, "EPSG:4979", always_xy=True)
    if not group.best_available or not group.transformers:
        grids = sorted({g.short_name for op in group.unavailable_operations for g in op.grids
                        if not g.available})
        need = ", ".join(grids) or "a geoid grid"
        raise DataError(f"the DEM's heights are {vertical.name} (above the geoid) and sarsen needs heights "
                        f"above the WGS 84 ellipsoid, but PROJ lacks the geoid grid {need} to convert them: "
                        f"install it (pyproj sync --file {grids[0] if grids else 'GRID'}, or "
                        "PROJ_NETWORK=ON) "
                        "or give a DEM in ellipsoidal heights", path=dem_path)
    return group.transformers[0]


def check_dem(dem_path: str, footprint_lonlat: Any) -> tuple[dict[str, Any], Any]:
    """Check a DEM file before any work: readable, georeferenced, WGS 84-compatible, over the product's
    footprint, heights convertible to the ellipsoid. Returns what the manifest records about it (with
    its lon/lat bounds, for :func:`check_covers`), and the geoid -> ellipsoid transformer (None: heights
    are used as they are). Whether it covers the part of the product a run uses is checked once the
    patch grid is known (:func:`check_covers`)."""
    import rasterio
    from rasterio.warp import transform_bounds

    from csmae.geo.antimeridian import lonlat_bounds

    try:
        ds = rasterio.open(dem_path)
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"not a DEM raster GDAL can read ({str(e).splitlines()[0][:200]})",
                        path=dem_path) from None
    with ds:
        if ds.crs is None:
            raise DataError("the DEM has no CRS", path=dem_path)
        horizontal = horizontal_crs(ds.crs)
        datum = (horizontal.to_dict().get("datum") or "").upper()
        wkt = horizontal.to_wkt()
        if not any(k in wkt for k in ("WGS 84", "WGS_1984", "WGS84")) and datum != "WGS84":
            raise DataError("the DEM's horizontal datum is not WGS 84 (its CRS: "
                            f"{ds.crs.to_string()[:120]}): reproject it first (gdalwarp -t_srs EPSG:4326)",
                            path=dem_path)
        vertical = vertical_datum(ds.crs)
        geoid = None
        if vertical is not None:
            geoid = geoid_transformer(vertical, dem_path)
            heights = (f"{vertical.name}, converted to WGS 84 ellipsoidal heights by PROJ "
                       f"({geoid.description})")
        elif ds.crs.to_epsg() == 4979 or "ellipsoidal height" in ds.crs.to_wkt().lower():
            heights = "WGS 84 ellipsoidal (the DEM's CRS says so)"
        else:
            heights = "taken as ellipsoidal (no vertical CRS)"
            log.warning("%s: no vertical datum in the DEM's CRS: heights are taken as ellipsoidal (WGS 84); "
                        "a geoid DEM (e.g. Copernicus GLO-30, EGM2008) is then tens of metres off: declare "
                        "it with gdal_edit.py -a_srs EPSG:4326+3855", dem_path)
        box = lonlat_box(transform_bounds(horizontal, "EPSG:4326", *ds.bounds, densify_pts=21))
        info = {"path": dem_path, "crs": ds.crs.to_string(), "resolution": list(ds.res), "heights": heights,
                "lonlat_bounds": [round(v, 6) for v in lonlat_bounds(box)]}
        if not box.intersects(footprint_lonlat):
            raise DataError(f"the DEM (lon/lat bounds {_rounded(box)}) does not cover any of the S1 product "
                            f"(footprint {_rounded(footprint_lonlat)})", path=dem_path)
        return info, geoid


def lonlat_box(bounds: Any) -> Any:
    """A DEM's lon/lat bounds ``(W, S, E, N)`` as shapely ground, across the antimeridian too: ``W > E``
    (what ``transform_bounds`` gives for a projected DEM over the line) is the box from W east to E,
    and longitudes past +-180 (a lon/lat DEM written e.g. 179..181) are split at the line, as the
    footprints it is compared with."""
    import shapely

    from csmae.geo.antimeridian import box_geometry, split_at_antimeridian

    w, s, e, n = (float(v) for v in bounds)
    if w > e:
        return box_geometry((w, s, e, n))
    return split_at_antimeridian(shapely.box(w, s, e, n))


def _rounded(geom: Any) -> tuple[float, ...]:
    """(W, S, E, N) rounded to 3 decimals; W > E for a geometry split at the antimeridian."""
    from csmae.geo.antimeridian import lonlat_bounds

    return tuple(round(v, 3) for v in lonlat_bounds(geom))


def check_covers(info: dict[str, Any], area_lonlat: Any, what: str) -> None:
    """DataError naming the DEM when it does not cover ``area_lonlat`` (the part of the S1 product a run
    uses: its footprint over the patch grid), ``what`` saying which part that is."""
    if area_lonlat.is_empty:
        return
    box = lonlat_box(info["lonlat_bounds"])
    miss = area_lonlat.difference(box)
    if miss.area > 1e-6 * area_lonlat.area:
        raise DataError(f"the DEM (lon/lat bounds {_rounded(box)}) does not cover {what} (lon/lat bounds "
                        f"{_rounded(area_lonlat)}): {miss.area / area_lonlat.area:.0%} of it lies outside; "
                        "give a DEM over it (e.g. gdalbuildvrt of the Copernicus GLO-30 tiles)",
                        path=info["path"])
