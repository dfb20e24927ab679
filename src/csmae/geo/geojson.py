"""RFC 7946 GeoJSON of a search: the query and its hits as one FeatureCollection.

Coordinates are [lon, lat] WGS 84 (no ``crs`` member), rounded to 7 decimals; properties are
``role`` ("query" | "hit"), ``rank`` (0 for the query), ``score`` (null for the query), ``id``,
``sensor``, ``labels``, ``datetime``. Items without a footprint get a null geometry (allowed by
RFC 7946), so the collection always has 1 + len(hits) features. Media type application/geo+json.
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
    return {"type": "Feature", "geometry": _get(item, "geometry"), "properties": props}


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
