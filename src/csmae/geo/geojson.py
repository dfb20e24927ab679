"""RFC 7946 GeoJSON of a search: the query and its hits as one FeatureCollection.

Coordinates are [lon, lat] WGS 84 (no ``crs`` member), rounded to 7 decimals; properties are
``role`` ("query" | "hit"), ``rank`` (0 for the query), ``score`` (null for the query), ``id``,
``sensor``, ``labels``, ``datetime``. Items without a footprint get a null geometry (allowed by
RFC 7946), so the collection always has 1 + len(hits) features. Media type application/geo+json.
A footprint across the antimeridian is a MultiPolygon split at +-180 deg (RFC 7946 3.1.9) and its
feature carries a ``bbox`` member ``[W, S, E, N]`` with W > E (section 5.2), so that a reader does not
take the parts' lon -180..180 for the feature's extent; other features have no ``bbox`` member.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MEDIA_TYPE = "application/geo+json"


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def crossing_bbox(geometry: Mapping[str, Any] | None) -> list[float] | None:
    """``[W, S, E, N]`` (W > E, 7 decimals) of a GeoJSON geometry split at the antimeridian, else None."""
    if not isinstance(geometry, Mapping) or geometry.get("type") != "MultiPolygon":
        return None
    from shapely.geometry import shape

    from csmae.geo.antimeridian import crosses_antimeridian, lonlat_bounds

    geom = shape(geometry)
    if not crosses_antimeridian(geom):
        return None
    return [round(v, 7) for v in lonlat_bounds(geom)]


def with_bbox(feat: dict[str, Any]) -> dict[str, Any]:
    """``feat`` with a ``bbox`` member when its geometry crosses the antimeridian (RFC 7946 5.2)."""
    bbox = crossing_bbox(feat.get("geometry"))
    if bbox is not None:
        feat["bbox"] = bbox
    return feat


def feature(item: Any, *, role: str) -> dict[str, Any]:
    """One Feature from a hit / query (a mapping or an object with the Hit attributes)."""
    score = _get(item, "score")
    props = {
        "role": role,
        "rank": int(_get(item, "rank") or 0),
        "score": None if score is None else float(score),
        "id": _get(item, "id"),
        "sensor": _get(item, "sensor"),
        "labels": list(_get(item, "labels") or []),
        "datetime": _get(item, "datetime"),
        "place": _get(item, "place"),
    }
    return with_bbox({"type": "Feature", "geometry": _get(item, "geometry"), "properties": props})


def feature_collection(query: Any, hits: Sequence[Any]) -> dict[str, Any]:
    """The query (first feature) and the hits in rank order."""
    feats = [feature(query, role="query")] if query is not None else []
    feats += [feature(h, role="hit") for h in hits]
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(path: str | os.PathLike[str], collection: Mapping[str, Any]) -> Path:
    """Write a FeatureCollection atomically."""
    from csmae.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(collection, indent=1) + "\n")
    return path
