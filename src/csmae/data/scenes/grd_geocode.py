"""GRD geocoding without a DEM: GDAL's GCP transformers over the product's geolocation grid.

The annotation's geolocation grid (line, pixel -> latitude, longitude at the grid's terrain
heights) is handed to GDAL's warper as GCPs with a thin-plate spline (``GCP_TPS``, default) or a
3rd-order polynomial (``GCP_POLYNOMIAL``, ``MAX_GCP_ORDER=3``). A single affine from the GCPs (what
``rasterio.transform.from_gcps`` gives) is kilometres off on a 250 km swath and is never used.
This is ellipsoid geocoding: between grid points (10-25 km apart) the terrain is not modelled, so a
point whose height departs by ``dh`` from the grid's lands about ``dh / tan(incidence)`` off
(:func:`terrain_error_m`); a DEM removes it (``--dem``, :mod:`csmae.data.scenes.grd_dem`).

How the tiler uses it (:func:`radar_coords` + :func:`sample`): GDAL warps a *coordinate raster*
(each pixel of the target's radar window holding its own line and pixel, padded past the image
edges) onto a coarse version of the target grid (every ``step``-th pixel) with the chosen
transformer; as the coordinates are linear, GDAL's bilinear resampling reproduces the
transformer's mapping exactly. (Decimating the coordinate raster would be cheaper but GDAL's
spline is not invariant to scaling pixel coordinates: up to 3 px off, measured.)
Linear interpolation of that mapping gives every target pixel its radar (line, pixel), and the
calibrated radar window is sampled there bilinearly (``scipy.ndimage.map_coordinates``; a target
pixel whose 2x2 source stencil touches nodata is nodata, as GDAL's kernel with NaN). 5x cheaper in
CPU than warping the data with the spline per pixel, and the same sampler serves the DEM path,
whose coordinates come from the orbit instead (:mod:`csmae.data.scenes.grd_dem`).
:func:`geocode_window` is the plain GDAL warp of a window (the reference in the tests).

Across the antimeridian: a product whose geolocation grid crosses +-180 deg has GCP longitudes that
jump from 179.x to -179.x, over which neither the spline nor the polynomial can be fitted. Its grid
is made continuous first (:meth:`GcpGrid.continuous`: longitudes in [0, 360), where a product
narrower than 180 deg cannot jump), and handed to GDAL in the geographic CRS
``+proj=longlat +datum=WGS84 +lon_wrap=180`` (:data:`LON_WRAP_180`): PROJ takes the target's
positions to longitudes in [0, 360) in that CRS, so the transformer sees one continuous field on
both sides of the line. Products that do not cross keep EPSG:4326 and their longitudes as written.

Windows: only a window ``[l0, l1) x [p0, p1)`` of the radar image is warped at a time; its GCPs are
shifted by the window's origin, which leaves both transformers unchanged (the spline's kernel
depends on distances only, and the affine / polynomial terms absorb the shift; checked against
gdalwarp on the whole file in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

GEOCODINGS = ("tps", "poly3")
#: the GCPs' CRS of a product across the antimeridian: WGS 84 lon/lat with longitudes in [0, 360)
LON_WRAP_180 = "+proj=longlat +datum=WGS84 +lon_wrap=180 +no_defs"


@dataclass(frozen=True)
class GcpGrid:
    """The geolocation grid: (k, 6) line, pixel, latitude, longitude, height, incidence (deg)."""

    points: np.ndarray

    def gcps(self, l0: float = 0.0, p0: float = 0.0, *, centre: bool = True) -> list[Any]:
        """rasterio GCPs (row = line, col = pixel, x = lon, y = lat, z = height), shifted by a window.

        The annotation's (line, pixel) name a sample, whose centre is at ``+ 0.5`` in GDAL's pixel
        space (checked: the orbit geometry puts each GCP's lon/lat on that sample, -0.03 px median
        in range); ``centre=False`` gives the numbers as written (what a GRD TIFF carries)."""
        from rasterio.control import GroundControlPoint

        h = 0.5 if centre else 0.0
        return [GroundControlPoint(row=float(r[0]) + h - l0, col=float(r[1]) + h - p0, x=float(r[3]),
                                   y=float(r[2]), z=float(r[4]), id=str(i))
                for i, r in enumerate(self.points)]

    @property
    def crosses_antimeridian(self) -> bool:
        """Whether the grid's longitudes jump across +-180 deg (a swath is far narrower than 180 deg)."""
        lon = self.points[:, 3]
        return bool(lon.max() - lon.min() > 180.0)

    def continuous(self) -> GcpGrid:
        """This grid with continuous longitudes: in [0, 360) where it crosses the antimeridian (then
        past 180 east of the line), else itself unchanged."""
        if not self.crosses_antimeridian:
            return self
        pts = self.points.copy()
        pts[:, 3] = np.mod(pts[:, 3], 360.0)
        return GcpGrid(pts)

    def lonlat_crs(self) -> Any:
        """The CRS of the GCPs' (lon, lat): EPSG:4326, or :data:`LON_WRAP_180` where the longitudes
        pass 180 (a :meth:`continuous` grid across the antimeridian)."""
        from rasterio.crs import CRS

        if self.points[:, 3].max() > 180.0:
            return CRS.from_proj4(LON_WRAP_180)
        return CRS.from_epsg(4326)

    def wrap_lon(self, lon: np.ndarray) -> np.ndarray:
        """Longitudes in [-180, 180] (as pyproj gives them) in this grid's range: into [0, 360) where the
        grid's pass 180 (a :meth:`continuous` grid across the antimeridian), else unchanged."""
        if self.points[:, 3].max() > 180.0:
            return np.mod(np.asarray(lon, dtype=np.float64), 360.0)
        return lon

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        return (float(self.points[:, 3].min()), float(self.points[:, 2].min()),
                float(self.points[:, 3].max()), float(self.points[:, 2].max()))

    def outline(self) -> Any:
        """The grid's outer ring as a shapely polygon (lon, lat): the product's footprint (split at
        +-180 deg into a MultiPolygon where it crosses the antimeridian)."""
        import shapely

        from csmae.geo.antimeridian import split_at_antimeridian, unwrap_lon

        lines = np.unique(self.points[:, 0])
        pixels = np.unique(self.points[:, 1])
        by = {(r[0], r[1]): (r[3], r[2]) for r in self.points}
        ring = [by[(lines[0], p)] for p in pixels] + [by[(ln, pixels[-1])] for ln in lines[1:]] + \
            [by[(lines[-1], p)] for p in pixels[::-1][1:]] + [by[(ln, pixels[0])] for ln in lines[::-1][1:]]
        lonlat = np.asarray(ring, dtype=np.float64)
        lonlat[:, 0] = unwrap_lon(lonlat[:, 0])  # continuous across +-180 deg, then split there
        return split_at_antimeridian(shapely.Polygon(lonlat).buffer(0))


def warp_options(method: str) -> dict[str, Any]:
    """GDAL transformer options of a geocoding method."""
    if method == "tps":
        return {"SRC_METHOD": "GCP_TPS"}
    if method == "poly3":
        return {"SRC_METHOD": "GCP_POLYNOMIAL", "MAX_GCP_ORDER": 3}
    raise ValueError(f"geocoding must be one of {GEOCODINGS}, got {method!r}")


@lru_cache(maxsize=8)
def _inverse(points_key: bytes, shape: tuple[int, int]) -> Any:
    from rasterio.transform import GCPTransformer

    pts = np.frombuffer(points_key, dtype=np.float64).reshape(shape)
    return GCPTransformer(GcpGrid(pts).gcps(), tps=True)


@lru_cache(maxsize=16)
def _to_lonlat(wkt: str) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(wkt, "EPSG:4326", always_xy=True)


def radar_window(grid: GcpGrid, dst_crs: Any, dst_transform: Any, width: int, height: int, *,
                 lines: int, samples: int, pad: int = 8, clip: bool = True
                 ) -> tuple[int, int, int, int] | None:
    """The radar window ``(l0, l1, p0, p1)`` that covers a target grid; None if it misses the image.

    Points along the target's edges and inside are taken to lon/lat, then to (line, pixel) by the
    thin-plate spline's inverse; the bounding box is padded by ``pad`` pixels (the resampling
    stencil and the polynomial's departure from the spline) and clipped to the image (``clip``; else
    to the image grown by ``pad``).
    """
    n = 17
    fx = np.linspace(0, width, max(n, width // 200 + 2))
    fy = np.linspace(0, height, max(n, height // 200 + 2))
    gx, gy = np.meshgrid(fx, fy)
    xs = dst_transform.c + dst_transform.a * gx + dst_transform.b * gy
    ys = dst_transform.f + dst_transform.d * gx + dst_transform.e * gy
    lon, lat = _to_lonlat(dst_crs.to_wkt()).transform(xs.ravel(), ys.ravel())
    grid = grid.continuous()  # across the antimeridian: GCPs and target in one continuous lon range
    inv = _inverse(np.ascontiguousarray(grid.points).tobytes(), grid.points.shape)
    rows, cols = inv.rowcol(grid.wrap_lon(np.asarray(lon)), np.asarray(lat), op=lambda v: v)
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    ok = np.isfinite(rows) & np.isfinite(cols)
    if not ok.any():
        return None
    l0 = int(np.floor(rows[ok].min())) - pad
    l1 = int(np.ceil(rows[ok].max())) + pad + 1
    p0 = int(np.floor(cols[ok].min())) - pad
    p1 = int(np.ceil(cols[ok].max())) + pad + 1
    m = 0 if clip else pad
    l0, p0, l1, p1 = max(l0, -m), max(p0, -m), min(l1, lines + m), min(p1, samples + m)
    if l1 <= l0 or p1 <= p0:
        return None
    return l0, l1, p0, p1


def geocode_window(src: np.ndarray, l0: int, p0: int, grid: GcpGrid, *, method: str, dst_crs: Any,
                   dst_transform: Any, dst_shape: tuple[int, int], resampling: str = "bilinear"
                   ) -> np.ndarray:
    """Warp a radar window (bands, h, w) float32 (NaN = nodata) onto a target grid.

    Returns (bands, *dst_shape) float32, NaN where the target is outside the window or its
    resampling stencil touches nodata (GDAL's bilinear kernel propagates NaN).
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    src = np.ascontiguousarray(src, dtype=np.float32)
    if src.ndim == 2:
        src = src[None]
    out = np.full((src.shape[0], *dst_shape), np.nan, dtype=np.float32)
    grid = grid.continuous()  # across the antimeridian: longitudes in [0, 360), CRS LON_WRAP_180
    reproject(src, out, gcps=grid.gcps(l0, p0), src_crs=grid.lonlat_crs(), dst_transform=dst_transform,
              dst_crs=dst_crs, resampling=getattr(Resampling, resampling), init_dest_nodata=False,
              **warp_options(method))
    return out


#: radar pixels added around the window of a target (GDAL's mapping vs the spline inverse used to find it)
_COORD_PAD = 64


def radar_coords(grid: GcpGrid, *, method: str, dst_crs: Any, dst_transform: Any, shape: tuple[int, int],
                 lines: int, samples: int, step: int = 8) -> np.ndarray:
    """(2, H, W) float32 radar (line, pixel) of every target pixel centre (index convention: ``k`` is
    the centre of pixel ``k``); NaN where the target is far outside the image.

    A coordinate raster over the target's radar window (padded past the image edges: coordinates are
    linear) is warped by GDAL onto every ``step``-th target pixel, then interpolated linearly.
    """
    from affine import Affine

    h, w = shape
    out = np.full((2, h, w), np.nan, dtype=np.float32)
    win = radar_window(grid, dst_crs, dst_transform, w, h, lines=lines, samples=samples, pad=_COORD_PAD,
                       clip=False)
    if win is None:
        return out
    l0, l1, p0, p1 = win
    hc, wc = (h - 1) // step + 2, (w - 1) // step + 2
    coarse_t = dst_transform @ Affine.translation(0.5 - step / 2, 0.5 - step / 2) @ Affine.scale(step)
    ln = np.arange(l0, l1, dtype=np.float32)
    px = np.arange(p0, p1, dtype=np.float32)
    coords = np.empty((2, l1 - l0, p1 - p0), dtype=np.float32)
    coords[0] = ln[:, None]
    coords[1] = px[None, :]
    node = geocode_window(coords, l0, p0, grid, method=method, dst_crs=dst_crs, dst_transform=coarse_t,
                          dst_shape=(hc, wc))
    return upsample_nodes(node, step, (h, w))


def upsample_nodes(node: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Linear interpolation of values at every ``step``-th pixel (nodes ``0, step, 2*step...``) to every
    pixel: (bands, hc, wc) -> (bands, *shape)."""
    h, w = shape
    x = np.arange(w) / step
    y = np.arange(h) / step
    j = np.minimum(x.astype(np.int64), node.shape[2] - 2)
    i = np.minimum(y.astype(np.int64), node.shape[1] - 2)
    fx = (x - j).astype(np.float32)
    fy = (y - i).astype(np.float32)[:, None]
    out = np.empty((node.shape[0], h, w), dtype=np.float32)
    for b in range(node.shape[0]):
        rows = node[b][:, j] * (1 - fx) + node[b][:, j + 1] * fx  # (hc, w)
        out[b] = rows[i] * (1 - fy) + rows[i + 1] * fy
    return out


def coords_window(coords: np.ndarray, *, lines: int, samples: int, pad: int = 2
                  ) -> tuple[int, int, int, int] | None:
    """The radar window ``(l0, l1, p0, p1)`` that the coordinates read (with the bilinear stencil)."""
    ok = np.isfinite(coords[0]) & np.isfinite(coords[1])
    ok &= (coords[0] > -1) & (coords[0] < lines) & (coords[1] > -1) & (coords[1] < samples)
    if not ok.any():
        return None
    ln, px = coords[0][ok], coords[1][ok]
    l0, l1 = max(int(np.floor(ln.min())) - pad, 0), min(int(np.ceil(ln.max())) + pad + 1, lines)
    p0, p1 = max(int(np.floor(px.min())) - pad, 0), min(int(np.ceil(px.max())) + pad + 1, samples)
    if l1 <= l0 or p1 <= p0:
        return None
    return l0, l1, p0, p1


def sample(src: np.ndarray, l0: int, p0: int, coords: np.ndarray) -> np.ndarray:
    """Bilinear samples of a radar window (bands, h, w) at radar coordinates (2, H, W): (bands, H, W);
    NaN outside the window or where the 2x2 stencil touches NaN."""
    from scipy.ndimage import map_coordinates

    where = [coords[0] - np.float32(l0), coords[1] - np.float32(p0)]
    bad = ~(np.isfinite(where[0]) & np.isfinite(where[1]))
    if bad.any():
        where = [np.where(bad, -10, where[0]), np.where(bad, -10, where[1])]
    out = np.empty((src.shape[0], *coords.shape[1:]), dtype=np.float32)
    for b in range(src.shape[0]):
        map_coordinates(src[b], where, output=out[b], order=1, mode="constant", cval=np.nan, prefilter=False)
    return out


def terrain_error_m(grid: GcpGrid, relief_m: float = 100.0) -> dict[str, float]:
    """Expected ellipsoid-geocoding error: ``dh / tan(incidence)`` for ``relief_m`` of relief, at
    the grid's incidence range, and for the grid's whole height range (a worst case)."""
    inc = np.deg2rad(grid.points[:, 5])
    h = grid.points[:, 4]
    span = float(h.max() - h.min())
    return {"per_relief_m": relief_m,
            "near_range_m": float(relief_m / np.tan(inc.min())),
            "far_range_m": float(relief_m / np.tan(inc.max())),
            "height_min_m": float(h.min()), "height_max_m": float(h.max()),
            "grid_span_m": float(span / np.tan(inc.min())),
            "incidence_min_deg": float(np.rad2deg(inc.min())),
            "incidence_max_deg": float(np.rad2deg(inc.max()))}
