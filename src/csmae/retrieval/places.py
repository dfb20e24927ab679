"""Places of an index's items: footprints, acquisition times, extents, and the item at a lon/lat.

:class:`ArchivePlaces` reads the GeoParquet columns of an index's items table (``geometry`` as WKB in
EPSG:4326 lon/lat, the ``bbox_*`` covering columns, ``datetime``) once and answers per-row
geometry/time/place key for hits, the archive's extent, :meth:`ArchivePlaces.locate` (search by
place), and the rows of a place key (timelines).
An archive without footprints (e.g. indexed from an LMDB) has none of them, and says so.
Across the antimeridian: footprints split at +-180 deg (MultiPolygons) contain points on both sides
of the line, their centres are those of the unsplit ground, and an archive around the line has an
extent with W > E (RFC 7946 5.2), e.g. [177, -19, -178, -16] around Fiji.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class ArchivePlaces:
    """Footprints and acquisition times of the rows of one index.

    Args:
        items: the index's items table (pandas), one row per (id, sensor) vector.
        ids, sensors, live: per-row id, sensor name and "not removed" flag (numpy arrays).
        index_sensors: the sensors the index holds.
        dataset: the index manifest's ``dataset`` record (``geo_synthetic`` marks demo footprints).
    """

    def __init__(
        self,
        items: Any,
        *,
        ids: np.ndarray,
        sensors: np.ndarray,
        live: np.ndarray,
        index_sensors: Sequence[str],
        dataset: Mapping[str, Any] | None = None,
    ):
        self._ids = ids
        self._sensors = sensors
        self._live = live
        self._index_sensors = list(index_sensors)
        self._synthetic = bool((dataset or {}).get("geo_synthetic", False))
        self._geom, self._bbox, self._times = _item_geo(items)
        self._lon = _lon_bounds(self._geom, self._bbox)
        self._extents: dict[str | None, tuple[float, float, float, float] | None] = {}  # per sensor
        self._places = _item_places(items, self._geom)
        self._place_rows: dict[str, np.ndarray] | None = None  # place -> live rows, built on first use

    def geo_of_row(self, row: int) -> tuple[dict[str, Any] | None, str | None]:
        """(GeoJSON geometry mapping, ISO 8601 UTC datetime) of a row; None parts when absent."""
        from csmae.geo.footprint import wkb_to_geojson

        geom = self._geom[row] if self._geom is not None else None
        when = self._times[row] if self._times is not None else None
        return wkb_to_geojson(geom), when

    def place_of_row(self, row: int) -> str | None:
        """Place key of a row (:func:`csmae.geo.place_of` of its footprint), None without one."""
        return None if self._places is None else self._places[row]

    def time_of_row(self, row: int) -> str | None:
        """Acquisition time of a row (ISO 8601 UTC), None when unknown."""
        return None if self._times is None else self._times[row]

    @property
    def has_places(self) -> bool:
        """Whether any row has a place key (an archive with footprints)."""
        return self._places is not None and any(p is not None for p in self._places)

    def rows_of_place(self, key: str) -> np.ndarray:
        """Live rows of a place key (sorted; empty when the archive has none there)."""
        if self._place_rows is None:  # one hash pass and one sort, not a Python loop over the rows
            import pandas as pd

            codes, keys = pd.factorize(np.asarray(self._places or [], dtype=object))  # None -> -1
            rows = np.flatnonzero((codes >= 0) & self._live[: len(codes)])
            rows = rows[np.argsort(codes[rows], kind="stable")]  # by place; each place's rows ascending
            starts = np.flatnonzero(np.diff(codes[rows], prepend=-2)).tolist()
            ends = [*starts[1:], len(rows)] if starts else []
            self._place_rows = {str(keys[codes[rows[a]]]): rows[a:b]
                                for a, b in zip(starts, ends, strict=True)}
        return self._place_rows.get(key, np.zeros(0, np.int64))

    def coverage(self) -> str:
        """What the archive covers, for error messages: places, lon/lat extent, dates, per sensor."""
        n_places = len({p for p, ok in zip(self._places or [], self._live) if p is not None and ok})
        per = ", ".join(f"{s}: {int(((self._sensors == s) & self._live).sum())}" for s in self._index_sensors)
        ext = self.extent()
        where = _span(ext) if ext else "no footprints"
        times = sorted(t for t, ok in zip(self._times or [], self._live) if t is not None and ok)
        when = f"{times[0][:10]} .. {times[-1][:10]}" if times else "no acquisition times"
        return f"the archive covers {n_places} places ({where}; {when}; {per} items)"

    def place_at(self, lon: float, lat: float) -> str:
        """Place key of the archive item (any sensor) whose footprint contains (lon, lat), the one
        with the nearest footprint centre where several do.

        Raises:
            ValueError: bad coordinates, an archive without footprints or places.
            LookupError: no footprint contains the point (the message says what the archive covers).
        """
        import shapely

        if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"lon, lat must be degrees within [-180, 180] x [-90, 90], got {lon}, {lat}")
        if self._bbox is None or self._geom is None or not self.has_places:
            raise ValueError("the archive has no footprints (the indexed source had no georeferencing, "
                             "e.g. an LMDB): places need a georeferenced archive")
        b = self._bbox
        cand = np.flatnonzero(self._live & (b[:, 0] <= lon) & (b[:, 2] >= lon) & (b[:, 1] <= lat)
                              & (b[:, 3] >= lat))
        if len(cand):
            geoms = shapely.from_wkb([self._geom[r] for r in cand])
            inside = shapely.covers(geoms, shapely.points(lon, lat))
            cand, geoms = cand[inside], geoms[inside]
        if not len(cand):
            raise LookupError(f"no patch of the archive contains lon {lon:.6f}, lat {lat:.6f}; "
                              f"{self.coverage()}")
        dist = _centre_distance(geoms, lon, lat)
        order = np.lexsort((cand, dist))  # nearest centre, then the lowest row: deterministic
        key = self.place_of_row(int(cand[order[0]]))
        assert key is not None  # a row with a footprint has a place
        return key

    @property
    def geo_info(self) -> dict[str, Any]:
        """Footprints known (count), their extent [W, S, E, N], and whether they are synthetic (demo)."""
        ext = self.extent()
        n = 0 if self._bbox is None else int(np.isfinite(self._bbox[:, 0]).sum())
        return {"footprints": n, "extent": list(ext) if ext else None, "synthetic": self._synthetic}

    def extent(self, sensor: str | None = None) -> tuple[float, float, float, float] | None:
        """(W, S, E, N) of the footprints (of one sensor), None without any: the narrowest lon range
        holding them, W > E when it crosses the antimeridian (:func:`csmae.geo.antimeridian.lon_extent`)."""
        from csmae.geo.antimeridian import lon_extent

        if self._bbox is None or self._lon is None:
            return None
        if sensor in self._extents:
            return self._extents[sensor]
        m = np.isfinite(self._bbox[:, 0])
        if sensor is not None:
            m &= self._sensors == sensor
        ext = None
        if m.any():
            b = self._bbox[m]
            lon = lon_extent(self._lon[0][m], self._lon[1][m])
            assert lon is not None  # finite boxes
            ext = lon[0], float(b[:, 1].min()), lon[1], float(b[:, 3].max())
        self._extents[sensor] = ext
        return ext

    def locate(self, lon: float, lat: float, *, sensor: str) -> str:
        """Id of the archive item of ``sensor`` whose footprint contains (lon, lat).

        Where several do (neighbouring patches share edges, S2 tiles overlap), the one whose
        footprint centre is nearest to the point.

        Raises:
            ValueError: bad coordinates, an archive without footprints, or no footprint contains the
                point (the message gives the archive's extent).
        """
        import shapely

        if sensor not in self._index_sensors:
            raise ValueError(f"the index has no {sensor!r} items; it holds {self._index_sensors}")
        if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"lon, lat must be degrees within [-180, 180] x [-90, 90], got {lon}, {lat}")
        ext = self.extent(sensor)
        if ext is None or self._geom is None:
            raise ValueError(
                f"the archive's {sensor} items have no footprints (the indexed source had no "
                "georeferencing, e.g. an LMDB): search by place needs a georeferenced archive"
            )
        b = self._bbox
        assert b is not None  # extent() is None without boxes
        cand = np.flatnonzero(self._live & (self._sensors == sensor) & (b[:, 0] <= lon) & (b[:, 2] >= lon)
                              & (b[:, 1] <= lat) & (b[:, 3] >= lat))
        if len(cand):
            geoms = shapely.from_wkb([self._geom[r] for r in cand])
            inside = shapely.covers(geoms, shapely.points(lon, lat))
            cand, geoms = cand[inside], geoms[inside]
        if not len(cand):
            raise ValueError(
                f"no {sensor} patch of the archive contains lon {lon:.6f}, lat {lat:.6f}; its {sensor} "
                f"footprints span {_span(ext)}"
            )
        dist = _centre_distance(geoms, lon, lat)
        return str(self._ids[cand[int(np.argmin(dist))]])


def _span(ext: tuple[float, float, float, float]) -> str:
    across = " (across the antimeridian)" if ext[0] > ext[2] else ""
    return f"lon {ext[0]:.4f} to {ext[2]:.4f}{across}, lat {ext[1]:.4f} to {ext[3]:.4f}"


def _centre_distance(geoms: np.ndarray, lon: float, lat: float) -> np.ndarray:
    """Degrees from (lon, lat) to each footprint's centre (that of the unsplit ground for a footprint
    split at +-180 deg), with longitudes compared the short way round."""
    from csmae.geo.antimeridian import lon_distance, lonlat_centroid

    c = np.array([lonlat_centroid(g) for g in geoms], dtype=np.float64).reshape(-1, 2)
    return np.hypot(lon_distance(c[:, 0], lon), c[:, 1] - lat)


def _lon_bounds(geom: list[Any] | None, bbox: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(west, east) per row: the bbox columns' lon bounds, except footprints split at +-180 deg,
    whose bounds are -180..180 there: their RFC 7946 bounds, west > east."""
    import shapely

    from csmae.geo.antimeridian import EPS, crosses_antimeridian, lonlat_bounds

    if geom is None or bbox is None:
        return None
    west, east = bbox[:, 0].copy(), bbox[:, 2].copy()
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero((west <= -180.0 + EPS) & (east >= 180.0 - EPS))
    for r in rows.tolist():
        g = shapely.from_wkb(geom[r]) if geom[r] is not None else None
        if g is not None and crosses_antimeridian(g):
            west[r], _, east[r], _ = lonlat_bounds(g)
    return west, east


def _item_places(items: Any, geom: list[Any] | None) -> list[str | None] | None:
    """Place key per row: the items' ``place`` column, else computed from the footprints (old or
    grown indexes); None when the archive has neither."""
    from csmae.geo.place import fill_places

    given = items["place"].tolist() if "place" in items.columns else None
    if given is None and geom is None:
        return None
    return fill_places(given, geom if geom is not None else [None] * len(items))


def _item_geo(items: Any) -> tuple[list[Any] | None, np.ndarray | None, list[str | None] | None]:
    """(WKB per row, (N, 4) bbox, ISO datetime per row) of an items table; None parts when absent."""
    from csmae.geo.parquet import bounds_array, iso_list

    geom = items["geometry"].tolist() if "geometry" in items.columns else None
    if geom is not None and not any(g is not None for g in geom):
        geom = None
    bbox = None
    if geom is not None:
        cols = [f"bbox_{f}" for f in ("xmin", "ymin", "xmax", "ymax")]
        if all(c in items.columns for c in cols):
            bbox = items[cols].to_numpy(dtype=np.float64)
        else:
            bbox = bounds_array(geom)
    times = iso_list(items["datetime"]) if "datetime" in items.columns else None
    return geom, bbox, times

