"""Time series of a place: every acquisition of the same ground, both sensors, in time order.

A place is a :func:`csmae.geo.place_of` key (a 1200 m cell of a fixed UTM grid): all the archive
items whose footprint falls in it, whatever the date, the sensor or the scene. :func:`place_timeline`
answers for a place key, an archive item (its place) or a lon/lat point (the place of the item whose
footprint contains it), among the items passing a ``where`` filter, and gives each acquisition its
descriptor distance to a reference:

- ``"first"``: the first acquisition of the timeline (distance 0 for itself);
- ``"previous"``: the acquisition before it in time order (None for the first);
- an archive item ``(id, sensor)``, ``"ID@SENSOR"``, or an id (its first index sensor's item): any
  item of the archive.

The distance is the cosine distance ``1 - <u, v>`` of the unit descriptors, in [0, 2]: one
descriptor space for S1 and S2, so an S2 acquisition and the next S1 one compare directly.
Acquisitions are ordered by time (undated ones last), then sensor, then id.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from csmae.retrieval.search_core import SearchCore, Where

log = logging.getLogger(__name__)

__all__ = ["REFERENCES", "Acquisition", "Timeline", "place_timeline"]

#: the reference kinds besides an archive item
REFERENCES = ("first", "previous")


@dataclass
class Acquisition:
    """One acquisition of a place's timeline."""

    id: str
    sensor: str
    #: acquisition time, ISO 8601 UTC, None when unknown
    datetime: str | None
    #: cosine distance of its descriptor to the reference's, None where there is no reference
    distance: float | None
    labels: list[str] = field(default_factory=list)
    #: footprint as a GeoJSON geometry mapping (EPSG:4326)
    geometry: dict[str, Any] | None = None


@dataclass
class Timeline:
    """A place's acquisitions in time order, with their distances to a reference."""

    place: str
    #: "first", "previous", or "item" (a given archive item)
    reference: str
    #: the reference item (id, sensor, datetime, place) for "first" / an item; None for "previous"
    reference_item: dict[str, Any] | None
    acquisitions: list[Acquisition]

    def to_dict(self) -> dict[str, Any]:
        return {"place": self.place, "reference": self.reference, "reference_item": self.reference_item,
                "count": len(self.acquisitions), "sensors": sorted({a.sensor for a in self.acquisitions}),
                "acquisitions": [asdict(a) for a in self.acquisitions]}

    def to_geojson(self) -> dict[str, Any]:
        """An RFC 7946 FeatureCollection: one feature per acquisition, in time order."""
        feats = [{"type": "Feature", "geometry": a.geometry,
                  "properties": {"order": i, "place": self.place, "id": a.id, "sensor": a.sensor,
                                 "datetime": a.datetime, "distance": a.distance, "labels": a.labels,
                                 "reference": self.reference}}
                 for i, a in enumerate(self.acquisitions)]
        from csmae.geo.geojson import with_bbox  # a footprint across +-180 deg: bbox W > E (RFC 7946 5.2)

        return {"type": "FeatureCollection", "features": [with_bbox(f) for f in feats]}


def place_timeline(
    core: SearchCore,
    *,
    place: str | None = None,
    patch_id: str | None = None,
    sensor: str | None = None,
    lon: float | None = None,
    lat: float | None = None,
    reference: str | tuple[str, str] = "first",
    where: Where = None,
) -> Timeline:
    """The timeline of one place, given by exactly one of ``place``, ``patch_id`` (with an optional
    ``sensor``) or ``lon``/``lat``.

    Raises:
        ValueError: not exactly one of the three given, a malformed place key, bad coordinates, an
            archive without places, a bad reference.
        LookupError: no such id, no acquisition at that place or point, none passing ``where``
            (the message says what the archive covers).
    """
    from csmae.geo.place import parse_place

    places = core.places
    given = [place is not None, patch_id is not None, lon is not None or lat is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of a place key, an archive id, or lon and lat")
    if not places.has_places:
        raise ValueError("the archive has no footprints, so no places (the indexed source had no "
                         "georeferencing, e.g. an LMDB): timelines need a georeferenced archive")
    if place is not None:
        parse_place(place)
        key = place.strip()
    elif patch_id is not None:
        key = _place_of_item(core, patch_id, sensor)
    else:
        if lon is None or lat is None:
            raise ValueError("give both lon and lat for a timeline at a point")
        key = places.place_at(float(lon), float(lat))
    rows = places.rows_of_place(key)
    if not len(rows):
        raise LookupError(f"no acquisition of place {key} in the archive; {places.coverage()}")
    n_place = len(rows)
    flt = core.index.filter_for(where)
    if not flt.is_empty:  # the place's rows are live: only a filter can drop some
        rows = _among(rows, core.index.allowed(flt))
    if not len(rows):
        raise LookupError(f"place {key} has {n_place} acquisitions, none passing the filter "
                          f"{dict(flt.to_dict())}")
    rows = _time_order(core, rows)
    vectors = _unit(core.index.backend.reconstruct(rows))
    ref_kind, ref_item, dist = _distances(core, rows, vectors, reference)
    acqs = []
    for r, d in zip(rows.tolist(), dist):
        geometry, when = places.geo_of_row(r)
        acqs.append(Acquisition(id=core.id_of_row(r), sensor=core.sensor_of_row(r), datetime=when,
                                distance=None if d is None else float(d),
                                labels=core.labels_of_row(r), geometry=geometry))
    log.debug("timeline of %s: %d acquisitions (reference %s)", key, len(acqs), ref_kind)
    return Timeline(place=key, reference=ref_kind, reference_item=ref_item, acquisitions=acqs)


def parse_reference(text: str) -> str | tuple[str, str]:
    """``first`` / ``previous`` / ``ID`` / ``ID@SENSOR`` (the CLI and HTTP form) -> a reference."""
    t = text.strip()
    if t in REFERENCES:
        return t
    if not t:
        raise ValueError("reference must be 'first', 'previous' or an archive id (ID or ID@SENSOR)")
    if "@" in t:
        pid, sensor = t.rsplit("@", 1)
        return pid, sensor
    return t


def _place_of_item(core: SearchCore, patch_id: str, sensor: str | None) -> str:
    row = _row_of_item(core, patch_id, sensor)
    key = core.places.place_of_row(row)
    if key is None:
        raise ValueError(f"archive item {patch_id!r} has no footprint, so no place")
    return key


def _row_of_item(core: SearchCore, patch_id: str, sensor: str | None) -> int:
    """Row of (id, sensor); without a sensor, the id's row of the first index sensor that has it."""
    if sensor is not None:
        return core.row_of(patch_id, sensor)
    for s in core.sensors:
        try:
            return core.row_of(patch_id, s)
        except KeyError:
            continue
    raise KeyError(f"no archive item {patch_id!r} in the index (sensors {core.sensors}); "
                   f"{core.places.coverage()}")


def _among(rows: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """The ``rows`` that are in ``allowed`` (sorted row ids; None = all): a binary search per row,
    not a pass over the allowed rows (millions for a broad filter)."""
    if allowed is None or not len(rows):
        return rows
    pos = np.minimum(np.searchsorted(allowed, rows), max(len(allowed) - 1, 0))
    return rows[(allowed[pos] == rows)] if len(allowed) else rows[:0]


def _time_order(core: SearchCore, rows: np.ndarray) -> np.ndarray:
    """Rows sorted by (time, undated last; sensor; id)."""
    keys = [(core.places.time_of_row(r) or "~", core.sensor_of_row(r), core.id_of_row(r))
            for r in rows.tolist()]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return rows[np.asarray(order, dtype=np.int64)]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def _distances(core: SearchCore, rows: np.ndarray, vectors: np.ndarray, reference: str | tuple[str, str],
               ) -> tuple[str, dict[str, Any] | None, list[float | None]]:
    """(reference kind, reference item, distance per row) of a timeline."""
    if reference == "previous":
        d: list[float | None] = [None]
        d += [max(0.0, 1.0 - float(a @ b)) for a, b in zip(vectors[:-1], vectors[1:])]
        return "previous", None, d
    if isinstance(reference, str) and reference not in REFERENCES:
        reference = parse_reference(reference)  # "ID" or "ID@SENSOR"
    if reference == "first":
        ref_row, ref_vec = int(rows[0]), vectors[0]
        kind = "first"
    else:
        pid, sensor = (reference, None) if isinstance(reference, str) else reference
        if sensor is not None and sensor not in core.sensors:
            raise ValueError(f"reference sensor {sensor!r}: the index holds {core.sensors}")
        try:
            ref_row = _row_of_item(core, pid, sensor)
        except KeyError:
            raise LookupError(f"reference {pid!r}{'@' + sensor if sensor else ''} is neither 'first', "
                              f"'previous' nor an archive item") from None
        ref_vec = _unit(core.index.backend.reconstruct(np.array([ref_row], dtype=np.int64)))[0]
        kind = "item"
    geometry, when = core.places.geo_of_row(ref_row)
    item = {"id": core.id_of_row(ref_row), "sensor": core.sensor_of_row(ref_row), "datetime": when,
            "place": core.places.place_of_row(ref_row)}
    dist: list[float | None] = [max(0.0, 1.0 - float(v @ ref_vec)) for v in vectors]
    return kind, item, dist
