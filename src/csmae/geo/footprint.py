"""Patch footprints: the polygon of a pixel grid, in EPSG:4326 (x = lon, y = lat), as WKB.

The corners of the grid are computed in its native CRS from the affine transform and projected
with pyproj (``always_xy=True``, so axis order is lon, lat whatever the CRS definition says).
A 1.2 km patch is far too small for its edges to bend measurably, so the polygon has the four
projected corners (``densify`` adds points per edge for larger grids). Float64 throughout.
A grid whose ground crosses the antimeridian (UTM zones 1 and 60 reach across) gets its footprint
split at +-180 deg into a MultiPolygon (RFC 7946 section 3.1.9; :mod:`csmae.geo.antimeridian`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from csmae.errors import DataError

Transform = tuple[float, float, float, float, float, float]


@functools.lru_cache(maxsize=64)
def _transformer(crs: str) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


@functools.lru_cache(maxsize=256)
def _crs_from_text(text: str) -> str:
    return _parse_crs(text)


def crs_string(crs: Any) -> str:
    """``"EPSG:32633"`` for anything pyproj understands (WKT, EPSG code, rasterio CRS), else its WKT.

    Text is parsed once per process (cached): archives have a few distinct CRSs.

    Raises:
        DataError: ``crs`` is not a coordinate reference system pyproj can read.
    """
    if isinstance(crs, str):
        return _crs_from_text(crs)
    if hasattr(crs, "to_wkt"):
        return _crs_from_text(crs.to_wkt())
    return _parse_crs(crs)


def _parse_crs(crs: Any) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        c = CRS.from_user_input(crs)
    except CRSError as exc:
        raise DataError(f"not a coordinate reference system ({str(exc)[:200]})") from None
    code = c.to_epsg()
    return f"EPSG:{code}" if code else c.to_wkt()


def grid_corners(transform: Sequence[float], width: int, height: int, densify: int = 0
                 ) -> list[tuple[float, float]]:
    """Counter-clockwise ring (native CRS) of the outer pixel edges of a ``height`` x ``width`` grid."""
    a, b, c, d, e, f = (float(v) for v in transform)

    def at(col: float, row: float) -> tuple[float, float]:
        return (a * col + b * row + c, d * col + e * row + f)

    # pixel-space corners, walked so that the ring is counter-clockwise for a north-up grid (e < 0)
    path = [(0.0, float(height)), (float(width), float(height)), (float(width), 0.0), (0.0, 0.0)]
    ring: list[tuple[float, float]] = []
    for (c0, r0), (c1, r1) in zip(path, path[1:] + path[:1], strict=True):
        for k in range(densify + 1):
            t = k / (densify + 1)
            ring.append(at(c0 + (c1 - c0) * t, r0 + (r1 - r0) * t))
    return ring


def footprint(crs: Any, transform: Sequence[float], width: int = 120, height: int = 120, *,
              densify: int = 0) -> Any:
    """The grid's footprint in EPSG:4326 (lon, lat), counter-clockwise: a shapely Polygon, or a
    MultiPolygon split at +-180 deg where the grid crosses the antimeridian.

    Args:
        crs: the grid's CRS ("EPSG:32633", WKT, a pyproj/rasterio CRS).
        transform: affine (a, b, c, d, e, f) of the grid (rasterio ``Affine`` order).
        width, height: grid size in pixels.
        densify: extra points per edge (0 for patches).
    """
    import numpy as np
    import shapely

    from csmae.geo.antimeridian import lonlat_polygons

    if len(transform) < 6:
        raise DataError(f"an affine transform has 6 coefficients, got {list(transform)}")
    key = crs_string(crs)
    ring = grid_corners(transform, width, height, densify)
    xs, ys = zip(*ring, strict=True)
    lon, lat = _transformer(key).transform(xs, ys)
    closed = np.column_stack([lon, lat])
    poly = lonlat_polygons(np.concatenate([closed, closed[:1]])[None])[0]
    if not poly.is_valid or poly.is_empty:
        raise DataError(f"the grid of CRS {key} and transform {list(transform)} gives an invalid footprint")
    return shapely.orient_polygons(poly)


def footprint_wkb(crs: Any, transform: Sequence[float], width: int = 120, height: int = 120) -> bytes:
    """:func:`footprint` as WKB bytes (the ``sample["geometry"]`` form)."""
    import shapely

    return bytes(shapely.to_wkb(footprint(crs, transform, width, height)))


def wkb_to_geojson(wkb: bytes | None, *, precision: int = 7) -> dict[str, Any] | None:
    """A GeoJSON geometry mapping (lists, coordinates rounded to ``precision`` decimals) or None."""
    if wkb is None:
        return None
    import shapely
    from shapely.geometry import mapping

    geom = shapely.from_wkb(wkb)

    def rnd(obj: Any) -> Any:
        if isinstance(obj, (list, tuple)):
            return [rnd(v) for v in obj]
        return round(float(obj), precision) if isinstance(obj, float) else obj

    m = mapping(geom)
    return {"type": m["type"], "coordinates": rnd(m["coordinates"])}


def wkb_bounds(wkb: bytes | None) -> tuple[float, float, float, float] | None:
    """(xmin, ymin, xmax, ymax) of a WKB geometry, or None."""
    if wkb is None:
        return None
    import shapely

    return tuple(float(v) for v in shapely.from_wkb(wkb).bounds)  # type: ignore[return-value]
