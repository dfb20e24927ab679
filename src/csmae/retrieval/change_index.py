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

    Only the rows in either period (and passing ``where``) are read: their place keys, and their
    vectors from the index (:class:`IndexRows`, a chunk at a time), never the whole archive's.

    Raises:
        ValueError: the index has no place keys or acquisition times, or no place has acquisitions
            in both periods (the message says what the archive covers).
    """
    items = index.items
    if "datetime" not in items.columns or items["datetime"].isna().all():
        raise ValueError("the index has no acquisition times: change detection needs them (re-embed a "
                         "source with dates, e.g. a prepared store or tiled scenes)")
    if not _has_places(items):
        raise ValueError("the index has no footprints, so no places: change detection needs them")
    rows = _live_rows(index, where)
    times = _times(items)
    rows = rows[before.contains(times[rows]) | after.contains(times[rows])]
    if len(rows) == 0:
        inside = " inside the filter" if where else ""
        raise ValueError(f"no item of the index falls in {before} or {after}{inside}; {coverage(items)}")
    res = change_scores(_places(items, rows), _column(items, "sensor", rows), times[rows],
                        IndexRows(index, rows), before=before, after=after, pairing=pairing)
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
    live = _live_rows(index, None)
    times = _times(items)
    rows = live[before.contains(times[live]) | after.contains(times[live])]
    if len(rows) == 0:
        raise ValueError(f"no item of the index falls in {before} or {after}; {coverage(items)}")
    sensors = _column(items, "sensor", rows)
    keys, deltas = change_vectors(_places(items, rows), sensors, times[rows], IndexRows(index, rows),
                                  before=before, after=after, pairing=pairing)
    found, sims = similar_changes(keys, deltas, place)
    if where:
        ok = set(_places(items, _live_rows(index, where)).tolist())
        keep = np.array([k in ok for k in found], dtype=bool)
        found, sims = found[keep], sims[keep]
    return [{"rank": i + 1, "place": str(k), "similarity": float(v)}
            for i, (k, v) in enumerate(zip(found, sims, strict=True))]


class IndexRows:
    """The stored vectors of some rows of an index, read on demand: ``self[i]`` = the vectors of
    rows ``rows[i]`` (an index array), so change detection reads them a chunk at a time instead of
    holding a float32 copy of every row in the periods."""

    def __init__(self, index: Any, rows: np.ndarray):
        self.backend, self.rows = index.backend, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), int(index.dim))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.backend.reconstruct(self.rows[idx]), dtype=np.float32)


def _column(items: Any, name: str, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) object values of one column at ``rows`` (only those rows are converted)."""
    return items[name].iloc[np.asarray(rows, dtype=np.int64)].to_numpy(dtype=object)


def _times(items: Any) -> np.ndarray:
    """(N,) datetime64[s] acquisition time per row (NaT: unknown)."""
    return items["datetime"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")


def _has_places(items: Any) -> bool:
    """Whether any row has a place key, given or computable from its footprint."""
    return any(c in items.columns and bool(items[c].notna().any()) for c in ("place", "geometry"))


def _places(items: Any, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) object place keys of ``rows``: the ``place`` column, else computed from the
    footprint (:func:`csmae.geo.place.fill_places`; None without one): only for rows that lack one."""
    from csmae.geo.place import fill_places

    rows = np.asarray(rows, dtype=np.int64)
    out = _column(items, "place", rows) if "place" in items.columns else np.full(len(rows), None, object)
    missing = np.flatnonzero(_missing(out))
    if len(missing):
        geoms = (_column(items, "geometry", rows[missing]).tolist() if "geometry" in items.columns
                 else [None] * len(missing))
        out[missing] = np.asarray(fill_places(None, geoms) + [None], dtype=object)[:-1]
    return out


def _live_rows(index: Any, where: Mapping[str, Any] | None) -> np.ndarray:
    """Sorted rows of the live items passing ``where`` (without a filter, read from the items table:
    the filter columns are not built for nothing)."""
    flt = index.filter_for(where)
    if flt.is_empty:
        items = index.items
        live = items["live"].to_numpy(dtype=bool) if "live" in items.columns else np.ones(len(items), bool)
        return np.flatnonzero(live)
    allowed = index.allowed(flt)
    return np.flatnonzero(index.columns.live) if allowed is None else np.asarray(allowed, dtype=np.int64)


def _missing(values: np.ndarray) -> np.ndarray:
    """(N,) bool: None, NaN or pandas NA (a missing place key)."""
    import pandas as pd

    return np.asarray(pd.isna(values), dtype=bool)


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
    from csmae.geo.geojson import with_bbox  # a cell across +-180 deg: split, bbox W > E (RFC 7946 5.2)

    part = scores if k is None else scores.top(k)
    feats = [with_bbox({"type": "Feature", "geometry": geom, "properties": rec})
             for rec, geom in zip(part.to_records(), _geojson_cells(cell_polygons(part.places)), strict=True)]
    return {"type": "FeatureCollection", "features": feats}


def _geojson_cells(cells: np.ndarray) -> list[dict[str, Any]]:
    """GeoJSON geometries of place cells, coordinates rounded to 7 decimals (~1 cm)."""
    import shapely
    from shapely.geometry import mapping

    simple = (shapely.get_type_id(cells) == 3) & (shapely.get_num_interior_rings(cells) == 0)
    out: list[dict[str, Any]] = []
    for cell, ok in zip(cells, simple.tolist(), strict=True):
        if ok:  # a plain polygon: its exterior ring, as mapping() gives it, without the detour
            ring = shapely.get_coordinates(cell).tolist()
            out.append({"type": "Polygon", "coordinates": [[[round(x, 7), round(y, 7)] for x, y in ring]]})
        else:
            geom = mapping(cell)
            out.append({"type": geom["type"], "coordinates": _lists(geom["coordinates"])})
    return out


def _lists(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return round(float(obj), 7)


def write_changes(scores: ChangeScores, path: str | os.PathLike[str], *, k: int | None = None) -> Path:
    """Write the ranked places to ``path`` (``.parquet``: GeoParquet 1.1, or ``.geojson``) atomically."""
    import shapely

    from csmae.atomic import atomic_path

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
    wkbs = shapely.to_wkb(cell_polygons(part.places)).tolist()
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


def cell_polygons(keys: Any) -> np.ndarray:
    """(P,) shapely Polygons: :func:`csmae.geo.place.place_polygon` of each place key, projected
    a UTM zone at a time (one PROJ call per zone instead of one per key; the same transform, the
    same vertices, counter-clockwise). A cell whose longitudes span more than 180 degrees (one on
    the antimeridian) is left to ``place_polygon`` itself."""
    import shapely
    from pyproj import Transformer

    from csmae.geo.place import PLACE_CELL_M, parse_place, place_polygon

    keys = [str(k) for k in keys]
    parsed = np.array([parse_place(k) for k in keys], dtype=np.int64).reshape(-1, 3)
    out = np.empty(len(keys), dtype=object)
    for epsg in np.unique(parsed[:, 0]):
        sel = np.flatnonzero(parsed[:, 0] == epsg)
        x0 = parsed[sel, 1] * PLACE_CELL_M
        y0 = parsed[sel, 2] * PLACE_CELL_M
        xs = np.stack([x0, x0 + PLACE_CELL_M, x0 + PLACE_CELL_M, x0], axis=1)
        ys = np.stack([y0, y0, y0 + PLACE_CELL_M, y0 + PLACE_CELL_M], axis=1)
        tr = Transformer.from_crs(f"EPSG:{int(epsg)}", "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(xs.ravel(), ys.ravel())
        lon, lat = np.asarray(lon).reshape(-1, 4), np.asarray(lat).reshape(-1, 4)
        polys = shapely.orient_polygons(shapely.polygons(np.stack([lon, lat], axis=-1)), exterior_cw=False)
        wide = np.ptp(lon, axis=1) > 180
        for j in np.flatnonzero(wide):
            polys[j] = place_polygon(keys[sel[j]])
        out[sel] = polys
    return out
