"""The geo columns of a prepared store's ``pairs.parquet`` and their round trip to sample keys.

Store columns (SEAMS; all nullable, written when any pair has geo keys)::

    geometry     binary WKB, EPSG:4326           crs          string "EPSG:32633"
    transform    fixed_size_list<double>[6]      datetime_s1, datetime_s2   timestamp[us, UTC]
    scene_s1, scene_s2   string                      place        string (csmae.geo.place_of of geometry)

A pair entry (JSON-able, kept in the prepare journal) carries them under ``"geo"`` with the WKB as hex.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from csmae.geo.keys import GEO_KEYS, SENSORS, iso_utc

STORE_GEO_COLUMNS = ("geometry", "crs", "transform", "datetime_s1", "datetime_s2", "scene_s1", "scene_s2",
                     "place")


def entry_geo(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able geo part of a store entry ({} when the sample has no geo keys)."""
    if not any(k in sample for k in GEO_KEYS):
        return {}
    geom = sample.get("geometry")
    tr = sample.get("transform")
    times = sample.get("datetime") or {}
    scenes = sample.get("scene") or {}
    out: dict[str, Any] = {
        "geometry": None if geom is None else bytes(geom).hex(),
        "crs": sample.get("crs"),
        "transform": None if tr is None else [float(v) for v in tr],
    }
    for s in SENSORS:
        out[f"datetime_{s}"] = iso_utc(times.get(s))
        out[f"scene_{s}"] = None if scenes.get(s) is None else str(scenes.get(s))
    return out


def table_columns(geos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Arrow columns from the entries' ``geo`` parts ({} when none has any)."""
    import pyarrow as pa

    from csmae.geo.parquet import timestamps
    from csmae.geo.place import places_of

    if not any(geos):
        return {}
    col = {c: [g.get(c) for g in geos] for c in STORE_GEO_COLUMNS}
    wkbs = [None if h is None else bytes.fromhex(h) for h in col["geometry"]]
    tr_flat: list[float] = []
    tr_mask: list[bool] = []
    for t in col["transform"]:
        tr_flat.extend(t if t is not None else [0.0] * 6)
        tr_mask.append(t is None)
    transform = pa.FixedSizeListArray.from_arrays(pa.array(tr_flat, pa.float64()), 6,
                                                  mask=pa.array(tr_mask))
    return {
        "geometry": pa.array(wkbs, pa.binary()),
        "crs": pa.array(col["crs"], pa.string()),
        "transform": transform,
        "datetime_s1": timestamps(col["datetime_s1"]),
        "datetime_s2": timestamps(col["datetime_s2"]),
        "scene_s1": pa.array(col["scene_s1"], pa.string()),
        "scene_s2": pa.array(col["scene_s2"], pa.string()),
        "place": pa.array(places_of(wkbs), pa.string()),
    }


def read_columns(table: Any) -> dict[str, list[Any]] | None:
    """Per-pair geo values from a store table (None when it has no geo columns).

    Returns lists: geometry (bytes|None), crs, transform (tuple|None), datetime_s1/_s2 (ISO str),
    scene_s1/_s2, place (computed from the geometry for stores written before the column existed).
    """
    from csmae.geo.parquet import iso_list
    from csmae.geo.place import places_of

    names = set(table.column_names)
    if not names & set(STORE_GEO_COLUMNS):
        return None
    n = table.num_rows
    out: dict[str, list[Any]] = {}
    for c in STORE_GEO_COLUMNS:
        if c == "place" and c not in names:
            out[c] = places_of(out["geometry"])
        elif c not in names:
            out[c] = [None] * n
        elif c.startswith("datetime_"):
            out[c] = iso_list(table.column(c))
        elif c == "transform":
            out[c] = [None if v is None else tuple(float(x) for x in v) for v in table.column(c).to_pylist()]
        else:
            out[c] = table.column(c).to_pylist()
    return out


def sample_keys(cols: Mapping[str, list[Any]], i: int) -> dict[str, Any]:
    """The sample geo keys of row ``i`` of :func:`read_columns` (the place is not one: samples of every
    reader carry the same keys, and the place is a function of ``geometry``)."""
    return {
        "geometry": cols["geometry"][i],
        "crs": cols["crs"][i],
        "transform": cols["transform"][i],
        "datetime": {s: cols[f"datetime_{s}"][i] for s in SENSORS},
        "scene": {s: cols[f"scene_{s}"][i] for s in SENSORS},
    }
