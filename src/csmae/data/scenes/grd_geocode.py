"""GRD geocoding without a DEM: GDAL's GCP transformers over the product's geolocation grid.

The annotation's geolocation grid (line, pixel -> latitude, longitude at the grid's terrain
heights) is handed to GDAL's warper as GCPs with a thin-plate spline (``GCP_TPS``, default) or a
3rd-order polynomial (``GCP_POLYNOMIAL``, ``MAX_GCP_ORDER=3``). A single affine from the GCPs (what
``rasterio.transform.from_gcps`` gives) is kilometres off on a 250 km swath and is never used.
This is ellipsoid geocoding: between grid points (10-25 km apart) the terrain is not modelled, so a
point whose height departs by ``dh`` from the grid's lands about ``dh / tan(incidence)`` off
(:func:`terrain_error_m`); a DEM removes it (``--dem``, :mod:`csmae.data.scenes.grd_dem`).

Windows: only a window ``[l0, l1) x [p0, p1)`` of the radar image is warped at a time; its GCPs are
shifted by the window's origin, which leaves both transformers unchanged (the spline's kernel
depends on distances only, and the affine / polynomial terms absorb the shift).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

GEOCODINGS = ("tps", "poly3")


@dataclass(frozen=True)
class GcpGrid:
    """The geolocation grid: (k, 6) line, pixel, latitude, longitude, height, incidence (deg)."""

    points: np.ndarray

    def gcps(self, l0: float = 0.0, p0: float = 0.0) -> list[Any]:
        """rasterio GCPs (row = line, col = pixel, x = lon, y = lat, z = height), shifted by a window."""
        from rasterio.control import GroundControlPoint

        return [GroundControlPoint(row=float(r[0]) - l0, col=float(r[1]) - p0, x=float(r[3]), y=float(r[2]),
                                   z=float(r[4]), id=str(i)) for i, r in enumerate(self.points)]

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        return (float(self.points[:, 3].min()), float(self.points[:, 2].min()),
                float(self.points[:, 3].max()), float(self.points[:, 2].max()))

    def outline(self) -> Any:
        """The grid's outer ring as a shapely polygon (lon, lat): the product's footprint."""
        import shapely

        lines = np.unique(self.points[:, 0])
        pixels = np.unique(self.points[:, 1])
        by = {(r[0], r[1]): (r[3], r[2]) for r in self.points}
        ring = [by[(lines[0], p)] for p in pixels] + [by[(ln, pixels[-1])] for ln in lines[1:]] + \
            [by[(lines[-1], p)] for p in pixels[::-1][1:]] + [by[(ln, pixels[0])] for ln in lines[::-1][1:]]
        return shapely.Polygon(ring).buffer(0)


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
                 lines: int, samples: int, pad: int = 8) -> tuple[int, int, int, int] | None:
    """The radar window ``(l0, l1, p0, p1)`` that covers a target grid; None if it misses the image.

    Points along the target's edges and inside are taken to lon/lat, then to (line, pixel) by the
    thin-plate spline's inverse; the bounding box is padded by ``pad`` pixels (the resampling
    stencil and the polynomial's departure from the spline) and clipped to the image.
    """
    n = 17
    fx = np.linspace(0, width, max(n, width // 200 + 2))
    fy = np.linspace(0, height, max(n, height // 200 + 2))
    gx, gy = np.meshgrid(fx, fy)
    xs = dst_transform.c + dst_transform.a * gx + dst_transform.b * gy
    ys = dst_transform.f + dst_transform.d * gx + dst_transform.e * gy
    lon, lat = _to_lonlat(dst_crs.to_wkt()).transform(xs.ravel(), ys.ravel())
    inv = _inverse(np.ascontiguousarray(grid.points).tobytes(), grid.points.shape)
    rows, cols = inv.rowcol(np.asarray(lon), np.asarray(lat), op=lambda v: v)
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    ok = np.isfinite(rows) & np.isfinite(cols)
    if not ok.any():
        return None
    l0 = int(np.floor(rows[ok].min())) - pad
    l1 = int(np.ceil(rows[ok].max())) + pad + 1
    p0 = int(np.floor(cols[ok].min())) - pad
    p1 = int(np.ceil(cols[ok].max())) + pad + 1
    l0, p0, l1, p1 = max(l0, 0), max(p0, 0), min(l1, lines), min(p1, samples)
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
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    src = np.ascontiguousarray(src, dtype=np.float32)
    if src.ndim == 2:
        src = src[None]
    out = np.full((src.shape[0], *dst_shape), np.nan, dtype=np.float32)
    reproject(src, out, gcps=grid.gcps(l0, p0), src_crs=CRS.from_epsg(4326), dst_transform=dst_transform,
              dst_crs=dst_crs, resampling=getattr(Resampling, resampling), init_dest_nodata=False,
              **warp_options(method))
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


def fit_errors(grid: GcpGrid, method: str) -> dict[str, float]:
    """Geolocation check at the GCPs (metres): the fit residual and leave-one-out error.

    The residual is the distance between a GCP's lon/lat and where the transformer puts its (line,
    pixel) when fitted on every GCP (0 for the spline, which interpolates); leave-one-out fits on
    all but one GCP and predicts it (the error between grid points, what a user meets).
    """
    from pyproj import Geod
    from rasterio.transform import GCPTransformer

    geod = Geod(ellps="WGS84")
    pts = grid.points

    def predict(fit: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = GcpGrid(fit).gcps()
        if method == "tps":
            tr = GCPTransformer(g, tps=True)
            x, y = tr.xy(at[:, 0], at[:, 1], offset="ul")
            return np.asarray(x), np.asarray(y)
        return _poly3(fit, at)

    x, y = predict(pts, pts)
    _, _, d_fit = geod.inv(x, y, pts[:, 3], pts[:, 2])
    loo = []
    for i in range(len(pts)):
        keep = np.ones(len(pts), dtype=bool)
        keep[i] = False
        xi, yi = predict(pts[keep], pts[i:i + 1])
        loo.append(geod.inv(xi, yi, pts[i:i + 1, 3], pts[i:i + 1, 2])[2][0])
    d_loo = np.asarray(loo)
    return {"fit_median_m": float(np.median(d_fit)), "fit_max_m": float(np.max(d_fit)),
            "loo_median_m": float(np.median(d_loo)), "loo_max_m": float(np.max(d_loo)),
            "gcps": int(len(pts))}


def _poly3(fit: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's order-3 GCP polynomial (least squares in normalised line/pixel), evaluated at ``at``."""
    def terms(line: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        u, v = pixel, line
        return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v, u ** 3, u * u * v, u * v * v, v ** 3], 1)

    mu = fit[:, :2].mean(axis=0)
    sd = fit[:, :2].std(axis=0) + 1e-12
    a = terms((fit[:, 0] - mu[0]) / sd[0], (fit[:, 1] - mu[1]) / sd[1])
    b = terms((at[:, 0] - mu[0]) / sd[0], (at[:, 1] - mu[1]) / sd[1])
    cx = np.linalg.lstsq(a, fit[:, 3], rcond=None)[0]
    cy = np.linalg.lstsq(a, fit[:, 2], rcond=None)[0]
    return b @ cx, b @ cy
