"""Region export: the items, footprints and descriptors of an area of an index as GeoParquet.

:func:`export_region` keeps the live items passing a filter (``bbox``: footprint intersects the
lon/lat box; ``start``/``end``; any other :class:`~csmae.retrieval.filters.Filter` field) and writes
one row per (id, sensor) item: ``id``, ``sensor``, ``split``, ``labels`` (names), ``datetime`` (UTC),
``place``, ``country``, ``season``, ``scene`` where the index has them, ``descriptor`` (fixed-size
list of float32, unit length, as the index stores it: exact for exact/HNSW kinds, the decoded codes
for compressed ones) and the GeoParquet 1.1 ``geometry`` (WKB, OGC:CRS84) with its ``bbox`` covering
column. ``geopandas.read_parquet`` and QGIS open it as it is. The file's ``csmae`` metadata says the
index, model, dimension and filter. Written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csmae.retrieval.index import SearchIndex
from csmae.retrieval.search_core import Where

log = logging.getLogger(__name__)

#: item columns copied when the index has them
OPTIONAL_COLUMNS = ("place", "country", "season", "scene")


@dataclass
class ExportResult:
    path: Path
    items: int
    sensors: dict[str, int]


def export_region(index: SearchIndex, out: str | os.PathLike[str], *, where: Where = None) -> ExportResult:
    """Write the items of ``index`` passing ``where`` to ``out`` (``.parquet``).

    Raises:
        ValueError: ``out`` is not a .parquet path, or no item passes the filter (the message says
            what the archive covers).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.atomic import atomic_path
    from csmae.geo.parquet import geo_columns, geo_metadata, with_geo_metadata
    from csmae.retrieval.places import ArchivePlaces

    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"{out}: the export is GeoParquet: give a .parquet path")
    flt = index.filter_for(where)
    cols = index.columns
    allowed = index.allowed(flt)
    rows = np.flatnonzero(cols.live) if allowed is None else np.asarray(allowed, dtype=np.int64)
    if not len(rows):
        items = index.items
        places = ArchivePlaces(items, ids=items["id"].to_numpy(dtype=object), sensors=cols.sensor,
                               live=cols.live, index_sensors=index.sensors)
        raise ValueError(f"no item of the index passes {flt.to_dict()}; {places.coverage()}")
    items = index.items.iloc[rows]
    names = index.label_names
    vectors = np.asarray(index.backend.reconstruct(rows.astype(np.int64)), dtype=np.float32)
    geoms = items["geometry"] if "geometry" in items else [None] * len(rows)
    wkbs = [None if g is None else bytes(g) for g in geoms]
    table = pa.table({
        "id": pa.array(items["id"].astype(str).tolist(), pa.string()),
        "sensor": pa.array(items["sensor"].astype(str).tolist(), pa.string()),
        "split": pa.array([v if isinstance(v, str) else None for v in items["split"]], pa.string()),
        "labels": pa.array([[names[j] for j in np.flatnonzero(m)] for m in cols.labels[rows]],
                           pa.list_(pa.string())),
    })
    if "datetime" in items:
        table = table.append_column("datetime", pa.array(items["datetime"], pa.timestamp("us", tz="UTC")))
    for c in OPTIONAL_COLUMNS:
        if c in items:
            table = table.append_column(c, pa.array([v if isinstance(v, str) else None for v in items[c]],
                                                    pa.string()))
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = table.append_column("descriptor", pa.FixedSizeListArray.from_arrays(flat, index.dim))
    for name, arr in geo_columns(wkbs).items():
        table = table.append_column(name, arr)
    table = with_geo_metadata(table, geo_metadata(wkbs))
    model = index.manifest.get("model") or {}
    meta = {"index": str(index.path) if index.path else None, "dim": index.dim, "where": flt.to_dict(),
            "model": {k: model.get(k) for k in ("name", "sha256", "variant") if k in model},
            "index_kind": index.manifest.get("index_kind")}
    table = table.replace_schema_metadata({**table.schema.metadata, b"csmae": json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    per = items["sensor"].value_counts().sort_index()
    log.info("exported %d items to %s", len(rows), out)
    return ExportResult(path=out, items=len(rows), sensors={str(s): int(n) for s, n in per.items()})
