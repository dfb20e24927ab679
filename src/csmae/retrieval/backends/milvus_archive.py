"""The Milvus collection as the archive: item keys, every items column in the rows, recorded facts.

An index built with ``--backend milvus`` keeps nothing but a pointer in its folder (``manifest.json``:
URI, collection, the facts at build time). The collection holds, per (id, sensor) item, one row:

* ``row`` INT64 primary key = :func:`item_key` (a 63-bit hash of sensor and id): every writer on
  every machine computes the same key for the same item, so concurrent writers never allocate
  conflicting ids, re-adding an item replaces it (upsert) and a rerun of an interrupted write is
  idempotent;
* the filter columns (:mod:`~csmae.retrieval.backends.milvus_expr`) and ``meta`` (JSON): every other
  items-table column as written (split, geometry WKB in base64, datetime ISO 8601 UTC, country,
  season, scene, place, ... whatever the index's items table has), decoded by the column types
  recorded in the facts;
* ``ingest`` VARCHAR: the token of the write that stored it.

A second collection ``<collection>__csmae`` (:data:`FACTS_SUFFIX`) holds JSON records by key:
``facts`` (model, sensors with band order and normalisation, dim, label names, dataset, the items
columns and their types) and ``ingest:<token>`` (source, rows, ``started`` / ``done``): what a
writer is compared with before it writes, and what a server reads instead of a local items file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FACTS_SUFFIX = "__csmae"
FACTS_KEY = "facts"
#: the facts record's JSON (UTF-8 bytes) must fit this VARCHAR
FACT_BYTES = 65535
KEY_MASK = (1 << 63) - 1
#: items columns stored in their own fields (not in ``meta``)
CORE_COLUMNS = ("id", "sensor", "labels", "live")
#: rows per paged read of the collection (well under Milvus's 16384 query window)
PAGE_ROWS = 4000
QUERY_WINDOW = 16384


def item_key(item_id: str, sensor: str) -> int:
    """The collection's primary key of an (id, sensor) item: 63 bits of BLAKE2b(sensor, id)."""
    h = hashlib.blake2b(f"{sensor}\x00{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & KEY_MASK


def item_keys(ids: Sequence[Any], sensors: Sequence[Any]) -> np.ndarray:
    """(N,) int64 keys of (id, sensor) pairs."""
    return np.fromiter((item_key(str(i), str(s)) for i, s in zip(ids, sensors)), np.int64, len(ids))


def facts_collection(collection: str) -> str:
    return collection + FACTS_SUFFIX


# ------------------------------------------------------------------ column types and meta JSON
def column_types(items: Any) -> dict[str, str]:
    """``{column: type}`` of the items columns stored in ``meta`` (in table order)."""
    import pandas as pd

    out: dict[str, str] = {}
    for c in items.columns:
        if c in CORE_COLUMNS:
            continue
        s = items[c]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            out[c] = "datetime"
        elif pd.api.types.is_bool_dtype(s.dtype):
            out[c] = "bool"
        elif pd.api.types.is_float_dtype(s.dtype):
            out[c] = "float"
        elif pd.api.types.is_integer_dtype(s.dtype):
            out[c] = "int"
        elif any(isinstance(v, (bytes, bytearray, memoryview)) for v in s.head(1000).tolist()):
            out[c] = "bytes"
        else:
            out[c] = "object"
    return out


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def meta_rows(items: Any, types: dict[str, str]) -> list[dict[str, Any]]:
    """Per row, the JSON ``meta`` of the columns in ``types`` (None for missing values)."""
    import pandas as pd

    cols: dict[str, list[Any]] = {}
    for c, t in types.items():
        if c not in items:
            cols[c] = [None] * len(items)
            continue
        s = items[c]
        if t == "datetime":
            d = pd.to_datetime(s, utc=True)
            cols[c] = [None if pd.isna(x) else x.isoformat() for x in d]
        else:
            vals = s.tolist()
            cols[c] = [
                None
                if (not isinstance(v, (list, np.ndarray, bytes)) and v is not None and pd.isna(v))
                else _plain(v)
                for v in vals
            ]
    return [{c: cols[c][i] for c in types} for i in range(len(items))]


def decode_items(rows: list[dict[str, Any]], types: dict[str, str], n_labels: int) -> Any:
    """The items table (pandas) of collection rows (``id``, ``sensor``, ``labels``, ``meta``)."""
    import pandas as pd

    n = len(rows)
    labels = np.zeros((n, n_labels), dtype=bool)
    for i, r in enumerate(rows):
        idx = [int(x) for x in (r.get("labels") or []) if 0 <= int(x) < n_labels]
        labels[i, idx] = True
    data: dict[str, Any] = {
        "id": [str(r["id"]) for r in rows],
        "sensor": [str(r["sensor"]) for r in rows],
    }
    metas = [r.get("meta") or {} for r in rows]
    for c, t in types.items():
        vals = [m.get(c) for m in metas]
        if t == "datetime":
            # ISO 8601 with or without fractions of a second (isoformat drops a zero fraction)
            data[c] = pd.to_datetime(pd.Series(vals, dtype=object), utc=True, format="ISO8601")
        elif t == "float":
            data[c] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
        elif t == "bytes":
            data[c] = [None if v is None else base64.b64decode(v) for v in vals]
        elif t in ("int", "bool") and all(v is not None for v in vals):
            data[c] = np.array(vals, dtype=np.int64 if t == "int" else bool)
        else:
            data[c] = vals
    data["labels"] = list(labels)
    data["live"] = np.ones(n, dtype=bool)
    df = pd.DataFrame({k: (v.to_numpy() if isinstance(v, pd.Series) else v) for k, v in data.items()})
    for c, t in types.items():
        if t == "datetime":
            df[c] = pd.to_datetime(df[c], utc=True)
    front = ["id", "sensor", *(["split"] if "split" in types else []), "labels", "live"]
    return df[front + [c for c in df.columns if c not in front]]


# ------------------------------------------------------------------ paged reads
def read_rows(client: Any, collection: str, fields: list[str], total: int) -> list[dict[str, Any]]:
    """Every row of ``collection`` (``fields``), read in primary-key ranges of ~PAGE_ROWS rows
    (keys are uniform hashes; a range that fills the query window is split)."""
    out: list[dict[str, Any]] = []
    n_ranges = max(1, -(-max(total, 1) // PAGE_ROWS))
    step = (KEY_MASK + 1) // n_ranges
    todo = [(i * step, KEY_MASK + 1 if i == n_ranges - 1 else (i + 1) * step) for i in range(n_ranges)]
    while todo:
        lo, hi = todo.pop()
        expr = f"row >= {lo} and row < {hi}" if hi <= KEY_MASK else f"row >= {lo}"
        got = client.query(collection, filter=expr, output_fields=fields, limit=QUERY_WINDOW)
        if len(got) >= QUERY_WINDOW and hi - lo > 1:
            mid = (lo + hi) // 2
            todo += [(lo, mid), (mid, hi)]
            continue
        out.extend(got)
    return out


# ------------------------------------------------------------------ facts collection
def create_facts(client: Any, pymilvus: Any, collection: str) -> None:
    """The facts collection of ``collection`` (VARCHAR key, JSON text; a 2-D dummy vector, as every
    Milvus 2.3 collection needs one)."""
    dt_ = pymilvus.DataType
    s = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("key", dt_.VARCHAR, is_primary=True, max_length=256)
    s.add_field("value", dt_.VARCHAR, max_length=FACT_BYTES)
    s.add_field("v", dt_.FLOAT_VECTOR, dim=2)
    ip = client.prepare_index_params()
    ip.add_index("v", index_type="FLAT", metric_type="L2")
    name = facts_collection(collection)
    client.create_collection(name, schema=s, index_params=ip, consistency_level="Strong")
    client.load_collection(name)


def write_record(client: Any, collection: str, key: str, value: dict[str, Any]) -> None:
    text = json.dumps(value, default=str)
    if len(text.encode("utf-8")) > FACT_BYTES:
        raise ValueError(f"Milvus collection {collection}: record {key!r} is over {FACT_BYTES} bytes")
    client.upsert(facts_collection(collection), [{"key": key, "value": text, "v": [0.0, 0.0]}])


def read_records(client: Any, collection: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    name = facts_collection(collection)
    expr = f'key like "{prefix}%"' if prefix else 'key != ""'
    got = client.query(name, filter=expr, output_fields=["key", "value"], limit=QUERY_WINDOW)
    return {str(r["key"]): json.loads(r["value"]) for r in got}


def ingest_record(source: str, rows: int, state: str) -> dict[str, Any]:
    return {
        "source": source,
        "rows": int(rows),
        "state": state,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
