"""GeoParquet 1.1 with pyarrow: a WKB ``geometry`` column, a ``bbox`` covering struct, ``geo`` metadata.

Geometries are in OGC:CRS84 / EPSG:4326 with (lon, lat) axis order (the ``crs`` field is left out,
which GeoParquet defines as OGC:CRS84). ``geopandas.read_parquet`` reads such a file as it is and
uses the covering column for ``bbox=`` filters. All-null geometry columns are valid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

GEO_VERSION = "1.1.0"
GEOMETRY, BBOX = "geometry", "bbox"
BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def bounds_array(wkbs: Sequence[bytes | None]) -> np.ndarray:
    """(N, 4) float64 xmin, ymin, xmax, ymax per geometry (NaN rows for None)."""
    import shapely

    out = np.full((len(wkbs), 4), np.nan)
    have = [i for i, w in enumerate(wkbs) if w is not None]
    if have:
        geoms = shapely.from_wkb([wkbs[i] for i in have])
        out[have] = shapely.bounds(geoms)
    return out


def geometry_types(wkbs: Sequence[bytes | None]) -> list[str]:
    import shapely

    have = [w for w in wkbs if w is not None]
    if not have:
        return []
    return sorted({g.geom_type for g in shapely.from_wkb(have)})


def geo_columns(wkbs: Sequence[bytes | None], *, covering: bool = True) -> dict[str, Any]:
    """Arrow arrays: ``geometry`` (binary WKB) and, with ``covering``, the ``bbox`` struct."""
    import pyarrow as pa

    cols: dict[str, Any] = {GEOMETRY: pa.array(list(wkbs), pa.binary())}
    if covering:
        b = bounds_array(wkbs)
        valid = ~np.isnan(b[:, 0])
        fields = [pa.array(b[:, j], pa.float64(), mask=~valid) for j in range(4)]
        cols[BBOX] = pa.StructArray.from_arrays(fields, names=list(BBOX_FIELDS), mask=pa.array(~valid))
    return cols


def geo_metadata(wkbs: Sequence[bytes | None], *, covering: bool = True) -> dict[str, Any]:
    """The ``geo`` file metadata of a table with :func:`geo_columns`."""
    col: dict[str, Any] = {"encoding": "WKB", "geometry_types": geometry_types(wkbs)}
    b = bounds_array(wkbs)
    if len(b) and not np.isnan(b[:, 0]).all():
        col["bbox"] = [float(np.nanmin(b[:, 0])), float(np.nanmin(b[:, 1])),
                       float(np.nanmax(b[:, 2])), float(np.nanmax(b[:, 3]))]
    if covering:
        col["covering"] = {BBOX: {f: [BBOX, f] for f in BBOX_FIELDS}}
    return {"version": GEO_VERSION, "primary_column": GEOMETRY, "columns": {GEOMETRY: col}}


def with_geo_metadata(table: Any, meta: dict[str, Any]) -> Any:
    """``table`` with the ``geo`` key added to its schema metadata."""
    old = dict(table.schema.metadata or {})
    old[b"geo"] = json.dumps(meta).encode()
    return table.replace_schema_metadata(old)


def timestamps(values: Sequence[str | datetime | None]) -> Any:
    """ISO UTC strings / datetimes -> a ``timestamp[us, tz=UTC]`` arrow array (None stays null)."""
    import pyarrow as pa

    from csmae.geo.keys import iso_utc, to_datetime

    return pa.array([to_datetime(iso_utc(v)) for v in values], pa.timestamp("us", tz="UTC"))


def iso_list(column: Any) -> list[str | None]:
    """A timestamp (or string) arrow/pandas column -> ISO UTC strings."""
    from csmae.geo.keys import iso_utc

    fast = _iso_datetime64(column)
    if fast is not None:
        return fast
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    out: list[str | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif hasattr(v, "to_pydatetime"):
            out.append(None if str(v) == "NaT" else iso_utc(v.to_pydatetime()))
        else:
            out.append(iso_utc(v))
    return out


def _iso_datetime64(column: Any) -> list[str | None] | None:
    """:func:`iso_list` of a pandas datetime64 column (naive = UTC) at numpy speed, the same strings
    (seconds floored, as ``strftime`` drops them); None for any other column, or for years outside
    1000..9999 (left to the per-value path)."""
    import pandas as pd

    if not isinstance(column, pd.Series) or not pd.api.types.is_datetime64_any_dtype(column.dtype):
        return None
    if getattr(column.dtype, "tz", None) is not None:
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    t = column.to_numpy(dtype="datetime64[s]")
    nat = np.isnat(t)
    if (~nat).any():
        years = t[~nat].astype("datetime64[Y]").astype(np.int64) + 1970
        if years.min() < 1000 or years.max() > 9999:
            return None
    text = np.char.add(np.datetime_as_string(t, unit="s"), "Z").astype(object)
    text[nat] = None
    return text.tolist()
