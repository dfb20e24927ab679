"""Change detection over a search index: rows of two periods -> :mod:`csmae.retrieval.change` -> files.

:func:`index_changes` reads the live items of an index that fall in either period (and a filter,
e.g. a bbox), their place keys, acquisition times and descriptors, and scores every place seen in
both periods. :func:`write_changes` writes the ranked places as GeoParquet (``.parquet``) or
GeoJSON (``.geojson``/``.json``): one feature per place, its geometry the place's 1200 m cell
(:func:`csmae.geo.place.place_polygon`), properties rank, place, score, rank_score, pairing,
n_before, n_after. :func:`index_similar_changes` is the change-like search: places whose change
resembles a given place's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.change import ChangeScores, Period, change_scores


def index_changes(index: Any, *, before: Period, after: Period, pairing: str = "auto",
                  where: Mapping[str, Any] | None = None) -> ChangeScores:
    """Score the places of ``index`` (a loaded :class:`~csmae.retrieval.index.SearchIndex`).

    Raises:
        ValueError: the index has no place keys or acquisition times, or no place has acquisitions
            in both periods (the message says what the archive covers).
    """
    items = index.items
    if "datetime" not in items.columns or items["datetime"].isna().all():
        raise ValueError("the index has no acquisition times: change detection needs them (re-embed a "
                         "source with dates, e.g. a prepared store or tiled scenes)")
    places = _places(items)
    if all(p is None for p in places):
        raise ValueError("the index has no footprints, so no places: change detection needs them")
    flt = index.filter_for(where)
    allowed = index.allowed(flt)
    rows = np.flatnonzero(index.columns.live) if allowed is None else np.asarray(allowed, dtype=np.int64)
    times = items["datetime"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    rows = rows[before.contains(times[rows]) | after.contains(times[rows])]
    if len(rows) == 0:
        inside = " inside the filter" if where else ""
        raise ValueError(f"no item of the index falls in {before} or {after}{inside}; {coverage(items)}")
    vectors = index.backend.reconstruct(rows)
    res = change_scores(np.asarray(places, dtype=object)[rows], items["sensor"].to_numpy(dtype=object)[rows],
                        times[rows], vectors, before=before, after=after, pairing=pairing)
    if len(res) == 0:
        raise ValueError(f"no place has {pairing if pairing != 'auto' else 'any'} acquisitions in both "
                         f"{before} and {after}; {coverage(items)}")
    return res


def index_similar_changes(index: Any, *, place: str, before: Period, after: Period, pairing: str,
                          where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Places of ``index`` whose change between the periods resembles ``place``'s (change-like search).

    Change vectors (:func:`csmae.retrieval.change.change_vectors`) are computed over every place of
    the archive seen in both periods; ``where`` (the search filters) then keeps the result places
    that have an item passing it. Returns ``[{"rank", "place", "similarity"}]``, best first.

    Raises:
        ValueError: ``pairing`` is ``auto`` (a change vector needs one sensor pairing), or the place
            has no acquisitions in both periods.
    """
    from csmae.retrieval.change import change_vectors, similar_changes

    if pairing == "auto":
        raise ValueError("change-like search needs one sensor pairing (e.g. s2->s2), not auto")
    items = index.items
    places = np.asarray(_places(items), dtype=object)
    live = np.flatnonzero(index.columns.live)
    times = items["datetime"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    rows = live[before.contains(times[live]) | after.contains(times[live])]
    if len(rows) == 0:
        raise ValueError(f"no item of the index falls in {before} or {after}; {coverage(items)}")
    sensors = items["sensor"].to_numpy(dtype=object)[rows]
    keys, deltas = change_vectors(places[rows], sensors, times[rows], index.backend.reconstruct(rows),
                                  before=before, after=after, pairing=pairing)
    found, sims = similar_changes(keys, deltas, place)
    if where:
        allowed = index.allowed(index.filter_for(where))
        ok = set(places[live if allowed is None else allowed].tolist())
        keep = np.array([k in ok for k in found], dtype=bool)
        found, sims = found[keep], sims[keep]
    return [{"rank": i + 1, "place": str(k), "similarity": float(v)}
            for i, (k, v) in enumerate(zip(found, sims, strict=True))]


def _places(items: Any) -> list[str | None]:
    from csmae.geo.place import fill_places

    given = items["place"].tolist() if "place" in items.columns else None
    geoms = items["geometry"].tolist() if "geometry" in items.columns else [None] * len(items)
    return fill_places(given, geoms)


def coverage(items: Any) -> str:
    """"the archive covers 2018-04-08 .. 2018-09-27 (s1: 288, s2: 288 items)"-style summary."""
    t = items["datetime"].dropna()
    counts = items["sensor"].value_counts().sort_index()
    per = ", ".join(f"{s}: {int(n)}" for s, n in counts.items())
    if t.empty:
        return f"the archive has no dated items ({per})"
    return f"the archive covers {t.min():%Y-%m-%d} .. {t.max():%Y-%m-%d} ({per} items)"


def changes_geojson(scores: ChangeScores, *, k: int | None = None) -> dict[str, Any]:
    """A FeatureCollection of the ranked places (top ``k``; all when None)."""
    from shapely.geometry import mapping

    from csmae.geo.place import place_polygon

    part = scores if k is None else scores.top(k)
    feats = []
    for rec in part.to_records():
        geom = mapping(place_polygon(rec["place"]))
        feats.append({"type": "Feature", "geometry": {"type": geom["type"],
                                                      "coordinates": _lists(geom["coordinates"])},
                      "properties": rec})
    from csmae.geo.geojson import with_bbox  # a cell across +-180 deg: split, bbox W > E (RFC 7946 5.2)

    return {"type": "FeatureCollection", "features": [with_bbox(f) for f in feats]}


def _lists(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return round(float(obj), 7)


def write_changes(scores: ChangeScores, path: str | os.PathLike[str], *, k: int | None = None) -> Path:
    """Write the ranked places to ``path`` (``.parquet``: GeoParquet 1.1, or ``.geojson``) atomically."""
    import shapely

    from csmae.atomic import atomic_path
    from csmae.geo.place import place_polygon

    path = Path(path)
    part = scores if k is None else scores.top(k)
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(changes_geojson(part)) + "\n")
        return path
    if suffix != ".parquet":
        raise ValueError(f"{path}: write changes as .parquet (GeoParquet) or .geojson")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.geo.parquet import geo_columns, geo_metadata, with_geo_metadata

    recs = part.to_records()
    wkbs = [bytes(shapely.to_wkb(place_polygon(r["place"]))) for r in recs]
    table = pa.table({
        "rank": pa.array([r["rank"] for r in recs], pa.int32()),
        "place": pa.array([r["place"] for r in recs], pa.string()),
        "score": pa.array([r["score"] for r in recs], pa.float64()),
        "rank_score": pa.array([r["rank_score"] for r in recs], pa.float64()),
        "pairing": pa.array([r["pairing"] for r in recs], pa.string()),
        "n_before": pa.array([r["n_before"] for r in recs], pa.int32()),
        "n_after": pa.array([r["n_after"] for r in recs], pa.int32()),
    })
    for name, arr in geo_columns(wkbs).items():
        table = table.append_column(name, arr)
    table = with_geo_metadata(table, geo_metadata(wkbs))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
