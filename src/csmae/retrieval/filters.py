"""One definition of a metadata filter over the archive items, used by every search path.

A :class:`Filter` says which items a search may return. It is evaluated on the items table of an
index (``items.parquet``: one row per backend row id) into a boolean mask, so every backend returns
the true top-k among the items that pass (the mask becomes a FAISS selector, or a Milvus
expression built from the same fields).

Fields (all optional; ``None`` = no constraint; lists are OR'ed within a field, fields AND'ed):

- ``sensor``: archive sensors (``"s1"``, ``"s2"``), the Retriever's ``target``.
- ``split``: ``"train" | "val" | "test"`` values.
- ``labels_any`` / ``labels_all`` / ``labels_none``: label names the item has at least one of /
  all of / none of.
- ``country`` / ``season``: names as stored in the items table.
- ``start`` / ``end``: inclusive UTC dates of the item's acquisition ``datetime``; items without a
  datetime never match a date constraint.
- ``bbox``: ``(west, south, east, north)`` in EPSG:4326; an item matches when its footprint
  (``geometry`` WKB) intersects the box; items without a footprint never match. ``west > east`` is
  a box across the antimeridian (RFC 7946 section 5.2): ``[west, 180] u [-180, east]``, e.g.
  ``(177, -19, -178, -16)`` around Fiji; footprints across the line are split there (MultiPolygons).

Plain-dict form (HTTP query parameters, JSON, the CLI): the same keys; list fields take a list or
one string (label names contain commas, so a string is never split), dates take ISO ``YYYY-MM-DD``
(or a full ISO datetime, its UTC date is used), ``bbox`` takes 4 numbers or ``"w,s,e,n"``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FILTER_KEYS", "Filter", "FilterColumns", "as_filter"]

#: Keys of the plain-dict / HTTP form, in a stable order.
FILTER_KEYS: tuple[str, ...] = (
    "sensor",
    "split",
    "labels_any",
    "labels_all",
    "labels_none",
    "country",
    "season",
    "start",
    "end",
    "bbox",
)
_LIST_KEYS = ("sensor", "split", "labels_any", "labels_all", "labels_none", "country", "season")
_SPLITS = ("train", "val", "test")


def _names(key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise ValueError(f"filter {key!r} must be a list of names, got {value!r}")
    out = []
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"filter {key!r} must hold non-empty names, got {v!r}")
        out.append(v.strip())
    if not out:
        return None
    return tuple(dict.fromkeys(out))


def _date(key: str, value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        s = value.strip()
        try:
            if len(s) == 10:
                return dt.date.fromisoformat(s)
            return _date(key, dt.datetime.fromisoformat(s.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ValueError(f"filter {key!r} must be an ISO date like 2018-06-01, got {value!r}")


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    from csmae.geo.antimeridian import check_box

    if value is None or value == "":
        return None
    return check_box(value.split(",") if isinstance(value, str) else value, "filter 'bbox'")


@dataclass(frozen=True)
class Filter:
    """Which archive items a search may return (see the module docstring). Build with keywords or
    :meth:`from_dict`; construction validates the values' form, :meth:`check` validates names
    against an archive, :meth:`mask` evaluates it."""

    sensor: tuple[str, ...] | None = None
    split: tuple[str, ...] | None = None
    labels_any: tuple[str, ...] | None = None
    labels_all: tuple[str, ...] | None = None
    labels_none: tuple[str, ...] | None = None
    country: tuple[str, ...] | None = None
    season: tuple[str, ...] | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    bbox: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        for key in _LIST_KEYS:
            object.__setattr__(self, key, _names(key, getattr(self, key)))
        object.__setattr__(self, "start", _date("start", self.start))
        object.__setattr__(self, "end", _date("end", self.end))
        object.__setattr__(self, "bbox", _bbox(self.bbox))
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"filter start {self.start} is after end {self.end}")
        if self.split:
            bad = [s for s in self.split if s not in _SPLITS]
            if bad:
                raise ValueError(f"unknown split(s) {bad}; splits are {list(_SPLITS)}")

    # ------------------------------------------------------------------ forms
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Filter:
        """Build from the plain-dict form; unknown keys are an error (naming the valid keys)."""
        if d is None:
            return cls()
        unknown = sorted(set(d) - set(FILTER_KEYS))
        if unknown:
            raise ValueError(f"unknown filter key(s) {unknown}; filter keys are {list(FILTER_KEYS)}")
        return cls(**{k: v for k, v in d.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form of the set fields (JSON-ready: lists, ISO dates)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = v.isoformat() if isinstance(v, dt.date) else list(v)
        return out

    def replace(self, **changes: Any) -> Filter:
        return dataclasses.replace(self, **changes)

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

    def fields_used(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    # -------------------------------------------------------------- evaluation
    def check(self, cols: FilterColumns) -> None:
        """Raise ValueError for names the archive does not know or fields it lacks."""
        if self.sensor:
            _known("sensor", self.sensor, cols.sensor_names)
        for key in ("labels_any", "labels_all", "labels_none"):
            names = getattr(self, key)
            if names:
                _known("label", names, cols.label_names)
        for key in ("country", "season"):
            names = getattr(self, key)
            if names:
                values = cols.values(key)
                if values is None:
                    raise ValueError(f"this archive has no {key} metadata: it cannot be filtered by {key}")
                _known(key, names, values)
        if (self.start or self.end) and cols.datetime_ns is None:
            raise ValueError("this archive has no acquisition datetimes: it cannot be filtered by date")
        if self.bbox and cols.geometry is None:
            raise ValueError("this archive has no footprints (geometry): it cannot be filtered by bbox")

    def mask(self, cols: FilterColumns) -> np.ndarray:
        """(N,) bool: the items (rows of the items table) that pass. Checks names first."""
        self.check(cols)
        m = cols.live.copy()
        if self.sensor:
            m &= cols.isin("sensor", self.sensor)
        if self.split:
            m &= cols.isin("split", self.split)
        lab = cols.labels
        if self.labels_any:
            m &= lab[:, cols.label_index(self.labels_any)].any(axis=1)
        if self.labels_all:
            m &= lab[:, cols.label_index(self.labels_all)].all(axis=1)
        if self.labels_none:
            m &= ~lab[:, cols.label_index(self.labels_none)].any(axis=1)
        for key in ("country", "season"):
            names = getattr(self, key)
            if names:
                m &= cols.isin(key, names)
        if self.start or self.end:
            t = cols.datetime_ns
            assert t is not None
            ok = t != _NAT
            if self.start:
                ok &= t >= _day_ns(self.start)
            if self.end:
                ok &= t < _day_ns(self.end, days=1)
            m &= ok
        if self.bbox:
            m &= cols.intersects(self.bbox, m)
        return m


_NAT = np.iinfo(np.int64).min
_DAY_S = 86_400


def _day_ns(d: dt.date, *, days: int = 0) -> int:
    """Nanoseconds since the epoch at the start of ``d`` + ``days`` (UTC), clamped to the int64
    range of the datetime column (``9999-12-31`` is a valid date far past it: "no end")."""
    s = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()) + days * _DAY_S
    return min(max(s * 1_000_000_000, _NAT + 1), int(np.iinfo(np.int64).max))


def _known(what: str, names: Sequence[str], valid: Sequence[str]) -> None:
    bad = [n for n in names if n not in set(valid)]
    if bad:
        raise ValueError(f"unknown {what} name(s) {bad}; valid {what} names: {sorted(valid)}")


def as_filter(where: Filter | Mapping[str, Any] | None) -> Filter:
    """A :class:`Filter` from a Filter, a plain dict or None (= everything)."""
    if where is None:
        return Filter()
    if isinstance(where, Filter):
        return where
    if isinstance(where, Mapping):
        return Filter.from_dict(where)
    raise TypeError(f"where must be a Filter, a dict or None, got {type(where).__name__}")


class FilterColumns:
    """The items table as numpy columns, prepared once per loaded index for fast masks.

    Columns read (SEAMS.md): ``id``, ``sensor``, ``split``, ``labels`` (multi-hot bool), optional
    ``live`` (False = removed row, never returned), ``country``, ``season``, ``datetime``,
    ``geometry`` (WKB), ``bbox_xmin..bbox_ymax`` or a ``bbox`` struct column.
    """

    def __init__(self, items: Any, *, label_names: Sequence[str]):
        import pandas as pd

        n = len(items)
        self.n = n
        self.label_names = list(label_names)
        self._label_pos = {name: j for j, name in enumerate(self.label_names)}
        self.sensor = items["sensor"].to_numpy(dtype=object)
        self.split = items["split"].to_numpy(dtype=object) if "split" in items else np.full(n, None, object)
        if n and "labels" in items:
            self.labels = np.stack(items["labels"].to_numpy()).astype(bool)
        else:
            self.labels = np.zeros((n, len(self.label_names)), bool)
        self.live = items["live"].to_numpy(dtype=bool).copy() if "live" in items else np.ones(n, dtype=bool)
        # name columns as category codes once: a filter is then a lookup table, not string compares
        self._codes: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        for key in ("sensor", "split", "country", "season"):
            if key not in items or not items[key].notna().any():
                continue
            cat = pd.Categorical(items[key].where(items[key].notna(), None))
            names = [str(c) for c in cat.categories]
            self._codes[key] = (np.asarray(cat.codes, dtype=np.int32), {c: i for i, c in enumerate(names)})
        self.sensor_names = sorted(self._codes["sensor"][1]) if "sensor" in self._codes else []
        self.datetime_ns: np.ndarray | None = None
        if "datetime" in items and items["datetime"].notna().any():
            t = pd.to_datetime(items["datetime"], utc=True)
            self.datetime_ns = t.to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
            self.datetime_ns[t.isna().to_numpy()] = _NAT
        self.geometry: np.ndarray | None = None
        if "geometry" in items and items["geometry"].notna().any():
            self.geometry = items["geometry"].to_numpy(dtype=object)
        self.bounds = _bounds(items)

    def isin(self, key: str, names: Sequence[str]) -> np.ndarray:
        """(N,) bool: the ``key`` column's value is one of ``names`` (nulls never are)."""
        if key not in self._codes:
            return np.zeros(self.n, dtype=bool)
        codes, pos = self._codes[key]
        lut = np.zeros(len(pos) + 1, dtype=bool)  # code -1 (null) reads the last entry: False
        lut[[pos[n] for n in names if n in pos]] = True
        return lut[codes]

    def values(self, key: str) -> list[str] | None:
        """Sorted distinct names of a column, None when the archive has no such column."""
        if key not in self._codes:
            return None
        return sorted(self._codes[key][1])

    def label_index(self, names: Sequence[str]) -> list[int]:
        return [self._label_pos[n] for n in names]

    def intersects(self, bbox: tuple[float, float, float, float], within: np.ndarray) -> np.ndarray:
        """(N,) bool: footprint intersects ``bbox``, evaluated on rows where ``within`` (shapely on
        the WKB; the bbox columns, when present, prune first). No footprint = False. ``W > E``: the
        box across the antimeridian, ``[W, 180] u [-180, E]``."""
        import shapely

        from csmae.geo.antimeridian import box_geometry, box_lon_mask

        out = np.zeros(self.n, dtype=bool)
        cand = within.copy()
        if self.geometry is None:
            return out
        cand &= np.array([g is not None for g in self.geometry], dtype=bool)
        if self.bounds is not None:
            xmin, ymin, xmax, ymax = self.bounds
            w, s, e, n = bbox
            with np.errstate(invalid="ignore"):
                cand &= box_lon_mask(xmin, xmax, w, e) & (ymax >= s) & (ymin <= n)
        rows = np.flatnonzero(cand)
        if len(rows):
            geoms = shapely.from_wkb(list(self.geometry[rows]), on_invalid="ignore")
            out[rows] = shapely.intersects(geoms, box_geometry(bbox))
        return out


def _bounds(items: Any) -> tuple[np.ndarray, ...] | None:
    names = ("bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax")
    if all(c in items for c in names):
        return tuple(items[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in names)
    if "bbox" in items:
        recs = items["bbox"].to_numpy(dtype=object)
        arr = np.full((len(recs), 4), np.nan)
        for i, r in enumerate(recs):
            if isinstance(r, Mapping):
                arr[i] = [r.get(k, np.nan) for k in ("xmin", "ymin", "xmax", "ymax")]
        return tuple(arr[:, j] for j in range(4))
    return None
