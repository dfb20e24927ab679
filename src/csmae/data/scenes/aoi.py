"""An area of interest for ``csmae tile``: ``--bbox W S E N`` or ``--aoi area.geojson`` (lon/lat).

Only the patches whose footprint intersects the area are cut. Each scene's patch grid is first cut
down to the rows and columns around the area (:func:`crop_grid`: same patch numbering, so ids are
those of a whole-scene run), then patches in that box whose footprint misses the area are listed
in ``skipped.csv`` as outside it. GeoJSON is RFC 7946: WGS 84 lon/lat, no ``crs`` member.

Across the antimeridian: ``--bbox W S E N`` with W > E is the box from W east across +-180 deg to E
(RFC 7946 5.2), e.g. ``--bbox 179.5 51.9 -179.5 52.1``; an ``--aoi`` polygon may be split at +-180 deg
(a MultiPolygon, RFC 7946 3.1.9) or written with longitudes running past 180 (e.g. 179.5 .. 180.5):
it is split there. Patch footprints across the line are split the same way, so they meet either side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.scenes.grid import PatchGrid
from csmae.errors import DataError


def bbox_area(bbox: tuple[float, float, float, float] | list[float]) -> Any:
    """``(W, S, E, N)`` in degrees -> a shapely box (two boxes, split at +-180 deg, for W > E: a box
    across the antimeridian); errors for an empty or out-of-range box."""
    from csmae.geo.antimeridian import box_geometry

    w, s, e, n = (float(v) for v in bbox)
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise ValueError(f"--bbox {w:g} {s:g} {e:g} {n:g}: longitudes must be in [-180, 180], latitudes in "
                         "[-90, 90]")
    if s >= n:
        raise ValueError(f"--bbox {w:g} {s:g} {e:g} {n:g}: south must be below north")
    if w == e:
        raise ValueError(f"--bbox {w:g} {s:g} {e:g} {n:g}: west equals east (W > E is a box across the "
                         "antimeridian, from W east to E)")
    return box_geometry((w, s, e, n))


def read_aoi(path: str | Path) -> Any:
    """The (multi)polygon of a GeoJSON file (geometry, Feature or FeatureCollection), lon/lat."""
    import shapely
    from shapely.geometry import shape

    from csmae.geo.antimeridian import split_at_antimeridian

    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read the area of interest ({e})", path=str(p)) from None
    if not isinstance(doc, dict):
        raise DataError("the area of interest is not a GeoJSON object", path=str(p))
    if "crs" in doc:
        raise DataError("GeoJSON with a 'crs' member: give WGS 84 lon/lat (RFC 7946)", path=str(p))
    kind = doc.get("type")
    geoms = ([f.get("geometry") for f in doc.get("features") or []] if kind == "FeatureCollection"
             else [doc.get("geometry")] if kind == "Feature" else [doc])
    polys = []
    for g in geoms:
        try:
            geom = shape(g)
        except Exception as e:  # noqa: BLE001 - shapely raises several kinds for bad GeoJSON
            raise DataError(f"not a GeoJSON geometry ({e})", path=str(p)) from None
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            raise DataError(f"the area of interest must be polygons, found a {geom.geom_type}", path=str(p))
        polys.append(geom)
    if not polys:
        raise DataError("the GeoJSON holds no geometry", path=str(p))
    area = shapely.union_all(polys)
    west, south, east, north = area.bounds
    if west < -540 or east > 540 or east - west > 360 or south < -90 or north > 90:
        raise DataError(f"coordinates out of lon/lat range (bounds {area.bounds}): GeoJSON is WGS 84 lon/lat",
                        path=str(p))
    return split_at_antimeridian(area)  # longitudes past +-180 deg: cut there (RFC 7946 3.1.9)


def crop_grid(grid: PatchGrid, area: Any) -> PatchGrid | None:
    """The part of ``grid`` whose patches may intersect ``area`` (lon/lat); None if none does."""
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", grid.crs.to_wkt(), always_xy=True)
    ring = shapely.get_coordinates(shapely.segmentize(area, 0.01))  # densified: straight in lon/lat
    x, y = tr.transform(ring[:, 0], ring[:, 1])
    x, y = np.asarray(x), np.asarray(y)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    t = grid.transform
    step_x, step_y = t.a * grid.stride, -t.e * grid.stride
    span_x, span_y = t.a * grid.size, -t.e * grid.size
    # patch c spans [x0 + c*step, x0 + c*step + span): intersects [xmin, xmax] if both overlap
    c0 = max(0, math.floor((x[ok].min() - t.c - span_x) / step_x) + 1)
    c1 = min(grid.cols - 1, math.floor((x[ok].max() - t.c) / step_x))
    r0 = max(0, math.floor((t.f - y[ok].max() - span_y) / step_y) + 1)
    r1 = min(grid.rows - 1, math.floor((t.f - y[ok].min()) / step_y))
    if c1 < c0 or r1 < r0:
        return None
    digits = grid.id_digits or max(3, len(str(max(grid.rows, grid.cols) - 1)))
    return PatchGrid(crs=grid.crs, transform=grid.patch_transform(r0, c0),
                     width=(c1 - c0) * grid.stride + grid.size, height=(r1 - r0) * grid.stride + grid.size,
                     stride=grid.stride, size=grid.size, row_offset=grid.row_offset + r0,
                     col_offset=grid.col_offset + c0, id_digits=digits)


def patches_in(grid: PatchGrid, area: Any) -> Any:
    """The ground of the patches of ``grid`` that intersect ``area`` (lon/lat): the union of their
    footprints (split at +-180 deg where they cross it), the patches ``csmae tile`` cuts; empty if none."""
    import shapely

    parts = []
    for r in range(grid.rows):
        foot = shapely.from_wkb(grid.footprints(r))
        parts.append(foot[shapely.intersects(area, foot)])
    return shapely.union_all(np.concatenate(parts)) if parts else shapely.Polygon()
