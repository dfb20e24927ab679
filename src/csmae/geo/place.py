"""Place keys: two patches of the same ground share one key, whatever the date, sensor, scene or store.

Definition (a pure function of the footprint, computable by anyone who has it)::

    1. lon, lat = the centroid of the footprint polygon (EPSG:4326, lon/lat vertices)
    2. zone     = floor((lon + 180) / 6) + 1 (1..60, the plain 6-degree rule: no Norway/Svalbard
                  exceptions, so the zone is a function of lon alone); hemisphere N if lat >= 0 else S
    3. x, y     = the centroid of the footprint projected to WGS 84 / UTM of that zone and hemisphere
                  (EPSG:326zz north, 327zz south: false northing 10 000 km), in metres
    4. snapped to the 10 m pixel lattice: X = round(x / 10), Y = round(y / 10)   (integers)
    5. col = X // 120, row = Y // 120    (integer floor division: 1200 m cells, origin at x = y = 0)
    key = f"{zone:02d}{N|S}-{col}-{row}"                   e.g. "33N-337-4451"

So a place is the 1200 m x 1200 m cell (120 pixels of 10 m, one BigEarthNet patch) of a fixed grid
laid on every UTM zone, holding the patch's centre. BigEarthNet patches sit on that grid (their
corners are multiples of 1200 m), so each is exactly one place and its S1 and S2 share it. A later
acquisition of a tile cut on the same grid gives the same footprints and the same keys; a patch off
the place grid by less than half a patch in each axis gets the key of the cell it overlaps most
(an S2 tile's grid is off by a fixed amount, so each of its patches is one place, and a grid cut
on the place cells, e.g. an S1-only one, has the same keys as the S2 patches it overlaps most).
Tiles reach into the next UTM zone: there the key is that zone's (the zone of the centre), so the
same ground seen from two tiles of different zones has one key; a tile's grid is then slightly
rotated against the place grid, and very rarely two neighbouring patches share a cell. Snapping to the
10 m lattice first (step 4) makes the key immune to float noise in the footprint: a patch of a
10 m grid has its centre on the lattice, so tiny errors vanish in the rounding, and a centre on a
cell edge always goes to the same side (exact integer division). Patches cut at a stride under 120
pixels overlap, and several of them share a place.

Across the antimeridian: a footprint split at +-180 deg (a MultiPolygon, RFC 7946 3.1.9) has the
key of its unsplit ground. Steps 1 and 3 use the continuous footprint (:func:`csmae.geo.antimeridian.
unwrap`: the parts west of the line shifted by +360 deg) and step 1's longitude is then brought back
into [-180, 180], so the same ground has one key whichever side of the line its parts were written
on. Keys of footprints that do not cross the line are unchanged by this rule. :func:`place_polygon`
of a cell across the line is split there too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: place cell size in metres (one 120-pixel patch at 10 m)
PLACE_CELL_M = 1200.0
#: the lattice centroids are snapped to before the cell is taken (metres)
SNAP_M = 10.0
_CELL_STEPS = int(round(PLACE_CELL_M / SNAP_M))
_KEY = re.compile(r"^(\d{2})([NS])-(-?\d+)-(-?\d+)$")


@functools.lru_cache(maxsize=128)
def _to_utm(epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


@functools.lru_cache(maxsize=128)
def _from_utm(epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the plain 6-degree UTM zone of (lon, lat) (326zz north, 327zz south)."""
    zone = int(np.floor((float(lon) + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _as_geometry(geometry: Any) -> Any:
    import shapely
    from shapely.geometry import shape

    if isinstance(geometry, (bytes, bytearray, memoryview)):
        return shapely.from_wkb(bytes(geometry))
    if isinstance(geometry, str):
        return shapely.from_wkt(geometry)
    if isinstance(geometry, Mapping):
        return shape(geometry)
    return geometry


def place_of(geometry: Any) -> str | None:
    """The place key of a footprint (see the module docstring), or None for a missing geometry.

    Args:
        geometry: WKB bytes, WKT, a GeoJSON geometry mapping or a shapely geometry, in EPSG:4326
            (x = lon, y = lat).

    Raises:
        ValueError: the geometry is empty or not a polygon-like footprint.
    """
    if geometry is None:
        return None
    return places_of([geometry])[0]


def places_of(geometries: Iterable[Any]) -> list[str | None]:
    """:func:`place_of` of many footprints at once (vectorised per UTM zone); None stays None."""
    import shapely

    from csmae.geo.antimeridian import crosses_antimeridian, normalize_lon, unwrap

    geoms = [None if g is None else _as_geometry(g) for g in geometries]
    out: list[str | None] = [None] * len(geoms)
    idx = [i for i, g in enumerate(geoms) if g is not None]
    if not idx:
        return out
    arr = np.array([geoms[i] for i in idx], dtype=object)
    if shapely.is_empty(arr).any():
        bad = idx[int(np.flatnonzero(shapely.is_empty(arr))[0])]
        raise ValueError(f"footprint {bad} is empty: no place")
    crossing = [i for i, g in enumerate(arr) if crosses_antimeridian(g)]
    for i in crossing:  # split at +-180 deg: the key of the unsplit ground
        arr[i] = unwrap(arr[i])
    c = shapely.centroid(arr)
    lon, lat = shapely.get_x(c), shapely.get_y(c)
    if crossing:
        lon[crossing] = [normalize_lon(x) for x in lon[crossing]]
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("a footprint has non-finite coordinates: no place")
    epsg = np.array([utm_epsg(x, y) for x, y in zip(lon, lat, strict=True)])
    for code in np.unique(epsg):
        sel = np.flatnonzero(epsg == code)
        part = arr[sel]
        tr = _to_utm(int(code))
        projected = shapely.transform(part, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0],
                                                                                         xy[:, 1])))
        pc = shapely.centroid(projected)
        col = np.floor_divide(np.rint(shapely.get_x(pc) / SNAP_M).astype(np.int64), _CELL_STEPS)
        row = np.floor_divide(np.rint(shapely.get_y(pc) / SNAP_M).astype(np.int64), _CELL_STEPS)
        zone, hemi = int(code) % 100, "N" if int(code) < 32700 else "S"
        for j, c_, r_ in zip(sel.tolist(), col.tolist(), row.tolist(), strict=True):
            out[idx[j]] = f"{zone:02d}{hemi}-{c_}-{r_}"
    return out


def fill_places(given: Iterable[Any] | None, geometries: list[Any]) -> list[str | None]:
    """Place keys per row: ``given`` where it holds one, else :func:`place_of` of the row's geometry.

    For tables written before the ``place`` column existed, or grown from such tables (missing
    values are None or NaN); rows without either stay None.
    """
    keys: list[str | None] = [None] * len(geometries)
    if given is not None:
        keys = [None if v is None or v != v else str(v) for v in given]
        if len(keys) != len(geometries):
            raise ValueError(f"{len(keys)} place keys for {len(geometries)} geometries")
    todo = [i for i, k in enumerate(keys) if k is None and geometries[i] is not None]
    if todo:
        for i, k in zip(todo, places_of([geometries[i] for i in todo]), strict=True):
            keys[i] = k
    return keys


def parse_place(key: str) -> tuple[int, int, int]:
    """``"33N-337-4451"`` -> (EPSG 32633, col 337, row 4451).

    Raises:
        ValueError: ``key`` is not a place key.
    """
    m = _KEY.match(str(key).strip())
    if not m or not 1 <= int(m.group(1)) <= 60:
        raise ValueError(f"not a place key: {key!r} (expected e.g. '33N-337-4451': UTM zone + hemisphere, "
                         "then the 1200 m cell's column and row)")
    zone, hemi = int(m.group(1)), m.group(2)
    return (32600 if hemi == "N" else 32700) + zone, int(m.group(3)), int(m.group(4))


def place_polygon(key: str) -> Any:
    """The place's 1200 m cell in EPSG:4326 (lon/lat, counter-clockwise): a shapely Polygon, or a
    MultiPolygon split at +-180 deg for a cell across the antimeridian."""
    import shapely

    from csmae.geo.antimeridian import lonlat_polygons

    epsg, col, row = parse_place(key)
    x0, y0 = col * PLACE_CELL_M, row * PLACE_CELL_M
    xs = [x0, x0 + PLACE_CELL_M, x0 + PLACE_CELL_M, x0, x0]
    ys = [y0, y0, y0 + PLACE_CELL_M, y0 + PLACE_CELL_M, y0]
    lon, lat = _from_utm(epsg).transform(xs, ys)
    return shapely.orient_polygons(lonlat_polygons(np.column_stack([lon, lat])[None])[0])
