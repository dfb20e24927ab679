"""What the service needs from a retriever, and small helpers that read it.

The service is written against :class:`csmae.retrieval.Retriever` (INTERFACES.md) but only uses
the methods listed in :class:`RetrieverLike`, so tests can build it over any object that has them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from csmae.sensors import Sensor, get_sensor

if TYPE_CHECKING:  # the core's filter type, without importing the index layer at start-up
    from csmae.retrieval.search_core import Where

logger = logging.getLogger(__name__)


@runtime_checkable
class RetrieverLike(Protocol):
    """The subset of ``csmae.retrieval.Retriever`` the service calls.

    The search and listing signatures are those of the search core
    (:class:`csmae.retrieval.search_core.SearchCore`), ``where`` included: the service passes its
    filter (None when the request has none) to every retriever alike. A retriever that cannot
    filter raises ``ValueError`` for a filter it is given (a 400).
    """

    label_names: Sequence[str]
    sensors: Any  # names of the sensors in the index, or name -> Sensor
    model_info: Mapping[str, Any]

    def items(
        self,
        split: str | None = None,
        sensor: str | None = None,
        label: str | None = None,
        offset: int = 0,
        limit: int = 50,
        where: Where = None,
    ) -> tuple[int, list[dict[str, Any]]]: ...

    def search_by_id(
        self,
        patch_id: str,
        *,
        sensor: str,
        target: str = "any",
        k: int = 10,
        exclude_self: bool = True,
        where: Where = None,
    ) -> list[Any]: ...

    def search_by_arrays(
        self,
        raw: np.ndarray,
        *,
        sensor: str,
        target: str = "any",
        k: int = 10,
        where: Where = None,
    ) -> list[Any]: ...

    def preview_png(self, patch_id: str, sensor: str) -> bytes: ...

    # Places (optional: a retriever without them serves no footprints and no search by place)
    #   item(patch_id, sensor) -> {"id", "sensor", "split", "labels", "geometry", "datetime"}
    #   locate(lon, lat, *, sensor) -> patch id whose footprint contains the point (ValueError if none)
    #   geo_info -> {"footprints": int, "extent": [W, S, E, N] | None, "synthetic": bool}


@runtime_checkable
class TimelineRetriever(Protocol):
    """A retriever with time series of places (optional: without it ``/api/timeline`` answers 400).

    The signature is :meth:`csmae.retrieval.retriever.Retriever.timeline`'s; the result has
    ``to_dict()`` and ``to_geojson()`` (:class:`csmae.retrieval.timeline.Timeline`). Unknown
    places/ids/points raise ``LookupError`` (a 404), bad input ``ValueError`` (a 400).
    """

    def timeline(
        self,
        place: str | None = None,
        *,
        patch_id: str | None = None,
        sensor: str | None = None,
        lon: float | None = None,
        lat: float | None = None,
        reference: str | tuple[str, str] = "first",
        where: Where = None,
    ) -> Any: ...


def query_geo(retriever: Any, patch_id: str, sensor: str) -> dict[str, Any]:
    """``{"geometry": GeoJSON | None, "datetime": str | None}`` of an archive item."""
    item = getattr(retriever, "item", None)
    if item is None:
        return {"geometry": None, "datetime": None}
    got = item(patch_id, sensor)
    return {"geometry": json_safe(got.get("geometry")), "datetime": got.get("datetime")}


def geo_info(retriever: Any) -> dict[str, Any]:
    """What the archive knows about places (see :class:`RetrieverLike`); no footprints when absent."""
    info = getattr(retriever, "geo_info", None)
    if not isinstance(info, Mapping):
        return {"footprints": 0, "extent": None, "synthetic": False}
    return json_safe(dict(info))


def sensor_names(retriever: Any) -> list[str]:
    """Names of the sensors a retriever's index holds, in a stable order."""
    sensors = retriever.sensors
    names = list(sensors.keys()) if isinstance(sensors, Mapping) else [str(s) for s in sensors]
    return sorted(names)


def query_sensors(retriever: Any) -> dict[str, Sensor]:
    """Sensor specs (band order) the model expects for queries, by sensor name.

    Prefers the model's own specs (``retriever.model.sensors`` or a mapping in ``retriever.sensors``)
    and falls back to the package defaults.
    """
    try:  # the real Retriever loads its model lazily; a missing model only disables uploads
        model_sensors = getattr(retriever.model, "sensors", None)
    except Exception as e:  # noqa: BLE001 - any failure here means "use the defaults"
        logger.warning("no model for uploaded queries (%s); assuming default band orders", e)
        model_sensors = None
    if isinstance(model_sensors, Mapping) and all(isinstance(v, Sensor) for v in model_sensors.values()):
        return dict(model_sensors)
    own = retriever.sensors
    if isinstance(own, Mapping) and all(isinstance(v, Sensor) for v in own.values()):
        return dict(own)
    return {name: get_sensor(name) for name in sensor_names(retriever)}


def row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """An ``items()`` row as plain JSON types (a missing split, e.g. NaN from pandas, becomes None)."""
    split = row.get("split")
    return {
        "id": str(row["id"]),
        "sensor": str(row["sensor"]),
        "split": split if isinstance(split, str) else None,
        "labels": [str(x) for x in (row.get("labels") or [])],
    }


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None and unknown objects by their str()."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        f = float(value)  # numpy scalars
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return str(value)


def hit_to_dict(hit: Any) -> dict[str, Any]:
    """A ``Hit`` (dataclass or mapping) as a JSON-ready dict."""
    get: Any = hit.get if isinstance(hit, Mapping) else lambda key: getattr(hit, key, None)
    return {
        "rank": int(get("rank")),
        "id": str(get("id")),
        "sensor": str(get("sensor")),
        "score": float(get("score")),
        "labels": [str(x) for x in (get("labels") or [])],
        "overlap": [str(x) for x in (get("overlap") or [])],
        "geometry": json_safe(get("geometry")),
        "datetime": None if get("datetime") is None else str(get("datetime")),
        "place": None if get("place") is None else str(get("place")),
    }


def precision_at_k(query_labels: Sequence[str], hits: Sequence[Mapping[str, Any]]) -> float | None:
    """P@k of one query as method.md defines it: mean over the hits of |Lq & Lr| / |Lr|.

    A hit without labels counts 0. ``None`` when the query has no known labels or there are no hits.
    """
    if not query_labels or not hits:
        return None
    lq = set(query_labels)
    total = 0.0
    for h in hits:
        lr = set(h["labels"])
        total += len(lq & lr) / len(lr) if lr else 0.0
    return total / len(hits)


# ----------------------------------------------------------------------------- filters
#: HTTP query parameters of a search filter (csmae.retrieval.filters.Filter keys; the result sensor
#: is the search's ``target``). List keys repeat: ``labels_any=A&labels_any=B`` (label names hold
#: commas, so one value is never split).
FILTER_PARAMS = (
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


def filter_query(
    split: list[str] | None = None,
    labels_any: list[str] | None = None,
    labels_all: list[str] | None = None,
    labels_none: list[str] | None = None,
    country: list[str] | None = None,
    season: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    bbox: str | None = None,
) -> dict[str, Any] | None:
    """The filter query parameters as the Filter plain-dict form (None when none is set).

    Used as a FastAPI dependency (the list parameters are declared as ``Query`` in app.py).
    """
    d = {
        "split": split,
        "labels_any": labels_any,
        "labels_all": labels_all,
        "labels_none": labels_none,
        "country": country,
        "season": season,
        "start": start,
        "end": end,
        "bbox": bbox,
    }
    d = {k: v for k, v in d.items() if v not in (None, [], "")}
    return d or None


def filter_vocabulary(retriever: Any) -> dict[str, Any]:
    """What the archive can be filtered by: country / season names, whether it has datetimes and
    footprints (for the page's filter controls). Empty for retrievers without an items table."""
    index = getattr(retriever, "index", None)
    cols = getattr(index, "columns", None)
    if cols is None:
        return {"keys": list(FILTER_PARAMS)}
    return {
        "keys": list(FILTER_PARAMS),
        "country": cols.values("country") or [],
        "season": cols.values("season") or [],
        "datetime": cols.datetime_ns is not None,
        "geometry": cols.geometry is not None,
    }
