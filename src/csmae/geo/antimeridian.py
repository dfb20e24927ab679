"""Lon/lat geometry across the antimeridian (+-180 deg): split footprints, boxes with W > E.

Conventions (RFC 7946; SEAMS contracts 1 and 2):

- A footprint whose ground crosses +-180 deg is stored **split** there (section 3.1.9): a
  MultiPolygon whose parts all lie within lon [-180, 180], one part touching +180, another -180,
  each counter-clockwise. Its plain bounds are then lon -180..180: conservative, never too small.
- A box ``(W, S, E, N)`` with ``W > E`` crosses the line (section 5.2): it is ``[W, 180] u [-180, E]``.

How a footprint is split: the corners come from a projected CRS (UTM), where the ground is
continuous; pyproj returns longitudes normalised to [-180, 180], so a ring that crosses the line
jumps by ~360 deg between two vertices. A footprint is far narrower than 180 deg, so
``numpy.unwrap(period=360)`` (:func:`unwrap_lon`) makes the ring continuous again without
ambiguity (longitudes may then pass 180 or -180), and shapely cuts it at the line: the parts
beyond it are shifted by -+360.
Reading back, :func:`unwrap` shifts the parts on the far side by +360 so that centroids, bounds and
areas are those of the unsplit ground. Everything is float64.

(The ``antimeridian`` package repairs arbitrary polygons whose rings jump, poles included; it is
not a dependency: footprints here come from a projected ring narrower than 180 deg, for which
``numpy.unwrap`` and a shapely cut are the whole job.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: longitudes within this of +-180 count as on the line (a split footprint's cut is exactly +-180)
EPS = 1e-9


def normalize_lon(lon: float) -> float:
    """``lon`` in [-180, 180]: unchanged when already there (no float noise), else shifted by 360s."""
    x = float(lon)
    if -180.0 <= x <= 180.0:
        return x
    return (x + 180.0) % 360.0 - 180.0


def unwrap_lon(lon: np.ndarray, axis: int = -1) -> np.ndarray:
    """Longitudes along ``axis`` (a ring's vertices) made continuous: each shifted by the multiple of
    360 that ``numpy.unwrap(period=360)`` finds. Exact multiples, so equal inputs stay equal (a
    closed ring stays closed; ``numpy.unwrap`` alone can leave its last vertex an ulp off the first)."""
    lon = np.asarray(lon, dtype=np.float64)
    turns = np.rint((np.unwrap(lon, period=360.0, axis=axis) - lon) / 360.0)
    return lon + 360.0 * turns


def _polygons(geom: Any) -> list[Any]:
    """The polygons with area in a (multi)polygon or collection (lines and points of a cut dropped)."""
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom] if geom.area > 0 else []
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def _shift(geom: Any, dx: float) -> Any:
    import shapely

    return shapely.transform(geom, lambda xy: xy + np.array([dx, 0.0]))


def _assemble(parts: Sequence[Any]) -> Any:
    """One Polygon, else a MultiPolygon of the parts, every ring counter-clockwise (RFC 7946)."""
    import shapely
    from shapely.geometry import MultiPolygon

    geom = parts[0] if len(parts) == 1 else MultiPolygon(list(parts))
    return shapely.orient_polygons(geom)


def split_at_antimeridian(geom: Any) -> Any:
    """A continuous lon/lat (multi)polygon, whose longitudes may pass 180 or -180 (e.g. a ring from
    179.9 to 180.1), as the same ground within [-180, 180]: cut at the line with shapely, the parts
    beyond it shifted by -+360. A Polygon when one part remains, else a MultiPolygon; CCW rings.
    A geometry already within [-180, 180] is returned as it is."""
    import shapely

    west, south, east, north = geom.bounds
    if west >= -180.0 and east <= 180.0:
        return geom
    lo, hi = south - 1.0, north + 1.0
    parts: list[Any] = []
    for shift, (a, b) in ((360.0, (-540.0, -180.0)), (0.0, (-180.0, 180.0)), (-360.0, (180.0, 540.0))):
        piece = _polygons(shapely.intersection(geom, shapely.box(a, lo, b, hi)))
        parts += [_shift(p, shift) if shift else p for p in piece]
    if not parts:
        raise ValueError(f"the geometry with bounds {geom.bounds} has no area within lon -540..540")
    return _assemble(parts)


def lonlat_polygons(rings: np.ndarray) -> np.ndarray:
    """(N, K, 2) closed lon/lat rings (vertices projected from a native CRS, longitudes in
    [-180, 180] as pyproj gives them) -> (N,) shapely footprints: the ring made continuous
    (:func:`unwrap_lon`), then split at +-180 where it crosses. Rings that do not cross
    give exactly the Polygon of their vertices."""
    import shapely

    ring = np.array(rings, dtype=np.float64)
    jumps = (np.abs(np.diff(ring[..., 0], axis=-1)) > 180.0).any(axis=-1)  # only these can cross
    out = np.asarray(shapely.polygons(ring), dtype=object)
    for i in np.flatnonzero(jumps):
        cont = ring[i].copy()
        cont[:, 0] = unwrap_lon(cont[:, 0])
        poly = shapely.Polygon(cont)
        out[i] = split_at_antimeridian(poly) if cont[:, 0].min() < -180 or cont[:, 0].max() > 180 else poly
    return out


def crosses_antimeridian(geom: Any) -> bool:
    """Whether a lon/lat geometry is a footprint split at the line: parts touching both +180 and -180."""
    if geom is None or geom.is_empty or geom.geom_type not in ("MultiPolygon", "GeometryCollection"):
        return False
    west, _, east, _ = geom.bounds
    return bool(west <= -180.0 + EPS and east >= 180.0 - EPS)


def unwrap(geom: Any) -> Any:
    """The continuous form of a split footprint (:func:`crosses_antimeridian`): its parts in the
    western hemisphere shifted by +360 (longitudes then run past 180); other geometries unchanged."""
    if not crosses_antimeridian(geom):
        return geom
    from shapely.geometry import MultiPolygon

    parts = [_shift(p, 360.0) if p.centroid.x < 0 else p for p in _polygons(geom)]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def lonlat_centroid(geom: Any) -> tuple[float, float]:
    """(lon, lat) of the centroid of the unsplit ground (:func:`unwrap`), lon in [-180, 180]."""
    c = unwrap(geom).centroid
    return normalize_lon(c.x), float(c.y)


def lonlat_bounds(geom: Any) -> tuple[float, float, float, float]:
    """RFC 7946 bbox ``(W, S, E, N)`` of a lon/lat geometry: ``W > E`` when it crosses the line."""
    west, south, east, north = unwrap(geom).bounds
    return normalize_lon(west), float(south), normalize_lon(east), float(north)


def check_box(bbox: Sequence[Any], what: str = "bbox") -> tuple[float, float, float, float]:
    """``(W, S, E, N)`` as floats, checked: finite, lon within [-180, 180], lat within [-90, 90],
    ``S <= N``. ``W > E`` is a box across the antimeridian (RFC 7946 section 5.2).

    Raises:
        ValueError: naming ``what`` and the bad part.
    """
    try:
        w, s, e, n = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 4 numbers west,south,east,north; got {bbox!r}") from None
    if not all(np.isfinite([w, s, e, n])):
        raise ValueError(f"{what} has a non-finite number: {bbox!r}")
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise ValueError(f"{what} {bbox!r} is outside lon [-180, 180] / lat [-90, 90] (order is west, "
                         "south, east, north)")
    if s > n:
        raise ValueError(f"{what} has south (min_lat) {s} > north (max_lat) {n}")
    return w, s, e, n


def box_geometry(bbox: Sequence[float]) -> Any:
    """A lon/lat box ``(W, S, E, N)`` as shapely: a box, or for ``W > E`` (across the line) the
    MultiPolygon of ``[W, 180]`` and ``[-180, E]``."""
    import shapely
    from shapely.geometry import MultiPolygon

    w, s, e, n = (float(v) for v in bbox)
    if w <= e:
        return shapely.box(w, s, e, n)
    return MultiPolygon([shapely.box(w, s, 180.0, n), shapely.box(-180.0, s, e, n)])


def box_lon_mask(xmin: np.ndarray, xmax: np.ndarray, west: float, east: float) -> np.ndarray:
    """(N,) bool: lon intervals ``[xmin, xmax]`` (plain bounds, xmin <= xmax) meet the box's lon
    range ``[west, east]``, or ``[west, 180] u [-180, east]`` when ``west > east``. NaN never meets."""
    with np.errstate(invalid="ignore"):
        if west <= east:
            return np.asarray((xmax >= west) & (xmin <= east))
        return np.asarray((xmax >= west) | (xmin <= east))


def lon_distance(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Shortest angular distance in longitude (degrees, 0..180), across the line when shorter."""
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)


def lon_extent(west: np.ndarray, east: np.ndarray) -> tuple[float, float] | None:
    """(W, E): the narrowest longitude range holding every interval ``[west_i, east_i]``
    (``west_i > east_i``: an interval across the line); ``W > E`` when that range crosses the
    antimeridian (an archive around Fiji spans 177 E .. 178 W, not the whole world). Where the plain
    ``(min west, max east)`` is as narrow, it is the answer. None without finite intervals.
    """
    west, east = np.asarray(west, np.float64), np.asarray(east, np.float64)
    ok = np.isfinite(west) & np.isfinite(east)
    west, east = west[ok], east[ok]
    if not len(west):
        return None
    cross = west > east
    if not cross.any() and east.max() - west.min() <= 180.0:  # no narrower range can cross the line
        return float(west.min()), float(east.max())
    # crossing intervals as their two pieces [w, 180] and [-180, e]; then disjoint runs on the line
    lo = np.concatenate([west[~cross], west[cross], np.full(int(cross.sum()), -180.0)])
    hi = np.concatenate([east[~cross], np.full(int(cross.sum()), 180.0), east[cross]])
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    starts = np.flatnonzero(np.r_[True, lo[1:] > reach[:-1]])  # a new run where nothing reaches it
    run_lo, run_hi = lo[starts], np.r_[reach[starts[1:] - 1], reach[-1]]
    plain_gap = run_lo[0] + 360.0 - run_hi[-1]  # the gap across the line, outside the plain range
    if len(starts) > 1:
        inner = run_lo[1:] - run_hi[:-1]
        k = int(np.argmax(inner))
        if inner[k] > plain_gap:  # the widest gap is inside: the range crosses the line
            return float(run_lo[k + 1]), float(run_hi[k])
    return float(run_lo[0]), float(run_hi[-1])
