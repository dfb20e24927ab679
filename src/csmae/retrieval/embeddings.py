"""The embeddings folder: GeoParquet 1.1 shards (id, sensor, split, labels, vector, geo) + manifest.json.

Layout::

    EMB_DIR/
      manifest.json        kind "csmae-embeddings": model (sha256, name, variant, pooling, dim),
                           sensors (band order + normalisation), dataset, label names, shards, count,
                           checksums (size + sha256 per shard, verified when a shard is read)
      part-00000.parquet   columns id (str), sensor (str), split (str|null),
      part-00001.parquet   labels (fixed_size_list<bool>[L]), vector (fixed_size_list<float32>[D]),
                           geometry (binary WKB, EPSG:4326), bbox (struct xmin, ymin, xmax, ymax:
                           the GeoParquet covering column), datetime (timestamp[us, UTC]: the
                           acquisition time of this row's sensor), country, season, scene (str),
                           place (str: :func:`csmae.geo.place_of` of the footprint);
                           the geo columns are nullable; file metadata ``geo`` (GeoParquet 1.1)

``geopandas.read_parquet(shard)`` reads a shard as it is. Shards written before the geo columns
existed are read too (``Embeddings.meta`` is then None, as for a folder whose geo columns are all
null); shards without a ``place`` column get it computed from their footprints (null without one).

Rows keep dataset order, sensors interleaved per shard; :meth:`Embeddings.select` picks a sensor /
split while keeping that order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import atomic_path
from csmae.retrieval.artifacts import manifest_label_names, read_manifest

KIND = "csmae-embeddings"
#: per-row metadata columns of :attr:`Embeddings.meta` (and of the index items table)
META_COLUMNS = ("geometry", "bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax", "datetime", "country",
                "season", "scene", "place")
_SHARD_META = ("geometry", "bbox", "datetime", "country", "season", "scene", "place")
log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Descriptors of an archive, one row per (pair id, sensor)."""

    ids: np.ndarray  # (M,) object str
    sensors: np.ndarray  # (M,) object str
    splits: np.ndarray  # (M,) object str | None
    labels: np.ndarray  # (M, L) bool
    vectors: np.ndarray  # (M, D) float32
    manifest: dict[str, Any] = field(default_factory=dict)
    #: per-row geo/metadata (:data:`META_COLUMNS`, row order), None when the source had none
    meta: Any = None  # pandas.DataFrame | None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def label_names(self) -> list[str]:
        return manifest_label_names(self.manifest)

    @property
    def sensor_names(self) -> list[str]:
        """Sensors present, in the manifest's order."""
        present = set(self.sensors.tolist())
        order = list(self.manifest.get("sensors", {})) or sorted(present)
        return [s for s in order if s in present]

    def mask(self, *, sensor: str | None = None, split: str | Sequence[str] | None = None) -> np.ndarray:
        m = np.ones(len(self), dtype=bool)
        if sensor is not None:
            m &= self.sensors == sensor
        if split is not None and split != "all":
            wanted = [split] if isinstance(split, str) else list(split)
            m &= np.isin(self.splits.astype(str), wanted)
        return m

    def select(
        self,
        mask: np.ndarray | None = None,
        *,
        sensor: str | None = None,
        split: str | Sequence[str] | None = None,
    ) -> Embeddings:
        """Rows matching ``mask`` and/or a sensor and split (``"all"`` = any split), in order."""
        m = self.mask(sensor=sensor, split=split)
        if mask is not None:
            m &= mask
        meta = None if self.meta is None else self.meta.loc[m].reset_index(drop=True)
        return Embeddings(
            self.ids[m], self.sensors[m], self.splits[m], self.labels[m], self.vectors[m], self.manifest, meta
        )


def _fixed_list(flat: np.ndarray, width: int) -> Any:
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), width)


def write_shard(
    path: str | os.PathLike[str],
    *,
    ids: list[str],
    sensors: list[str],
    splits: list[str | None],
    labels: np.ndarray,
    vectors: np.ndarray,
    meta: dict[str, list[Any]] | None = None,
) -> None:
    """Write one GeoParquet shard atomically (temp file + rename).

    Args:
        meta: per row ``geometry`` (WKB bytes | None), ``datetime`` (ISO UTC str | None),
            ``country``, ``season``, ``scene``, ``place`` (str | None); missing keys are null (a
            missing ``place`` is computed from the geometry). None = all null.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.geo.parquet import geo_columns, geo_metadata, timestamps, with_geo_metadata

    labels = np.asarray(labels, dtype=bool)
    vectors = np.asarray(vectors, dtype=np.float32)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "sensor": pa.array(sensors, pa.string()),
            "split": pa.array(splits, pa.string()),
            "labels": _fixed_list(labels, labels.shape[1]),
            "vector": _fixed_list(vectors, vectors.shape[1]),
        }
    )
    n = len(ids)
    meta = meta or {}
    wkbs = list(meta.get("geometry") or [None] * n)
    for name, arr in geo_columns(wkbs).items():
        table = table.append_column(name, arr)
    table = table.append_column("datetime", timestamps(meta.get("datetime") or [None] * n))
    for c in ("country", "season", "scene"):
        values = meta.get(c) or [None] * n
        table = table.append_column(c, pa.array([None if v is None else str(v) for v in values], pa.string()))
    table = table.append_column("place", pa.array(_places(meta.get("place"), wkbs), pa.string()))
    table = with_geo_metadata(table, geo_metadata(wkbs))
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_shard(path: str | os.PathLike[str], *, checksum: dict[str, Any] | None = None,
               arrow_ids: bool = False) -> dict[str, Any]:
    """One shard's columns; ``checksum`` (its manifest entry): the bytes are verified first.
    ``arrow_ids``: ids as a pyarrow string array (no Python ``str`` per row), else an object array."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source: Any = path
    if checksum is not None:  # integrity: parse exactly the bytes that were verified
        from csmae.integrity import read_verified

        source = pa.BufferReader(read_verified(path, checksum, what="embeddings shard",
                                               alloc=pa.allocate_buffer))
    try:
        t = pq.read_table(source)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise ValueError(f"{path}: cannot read Parquet shard ({e})") from None
    missing = {"id", "sensor", "split", "labels", "vector"} - set(t.column_names)
    if missing:
        raise ValueError(f"{path}: shard lacks column(s) {sorted(missing)}")

    def flat(col: str, dtype: Any) -> np.ndarray:
        arr = t.column(col).combine_chunks()
        width = arr.type.list_size if hasattr(arr.type, "list_size") else None
        if width is None:  # variable-size list written by another tool
            rows = arr.to_pylist()
            return np.asarray(rows, dtype=dtype).reshape(len(rows), -1)
        return np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)

    ids = t.column("id").combine_chunks()
    return {
        "meta": _read_meta(t),
        "ids": ids if arrow_ids else np.asarray(ids.to_pylist(), dtype=object),
        "sensors": np.asarray(t.column("sensor").to_pylist(), dtype=object),
        "splits": np.asarray(t.column("split").to_pylist(), dtype=object),
        "labels": flat("labels", bool),
        "vectors": flat("vector", np.float32),
    }


def _read_meta(t: Any) -> Any:
    """The :data:`META_COLUMNS` DataFrame of a shard table, or None for a shard without geo columns
    or with only null ones (an all-null frame costs ~80 bytes a row: 0.4 GB at 5M rows)."""
    import pandas as pd

    names = set(t.column_names) & set(_SHARD_META)
    if not names or all(t.column(c).null_count == t.num_rows for c in names):
        return None  # no geo columns, or every one null (a folder written without geo): nothing to hold
    names = set(t.column_names)
    n = t.num_rows
    cols: dict[str, Any] = {}
    cols["geometry"] = t.column("geometry").to_pylist() if "geometry" in names else [None] * n
    if "bbox" in names:
        bbox = t.column("bbox").combine_chunks()
        for f in ("xmin", "ymin", "xmax", "ymax"):
            cols[f"bbox_{f}"] = bbox.field(f).to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        from csmae.geo.parquet import bounds_array

        b = bounds_array(cols["geometry"])
        for j, f in enumerate(("xmin", "ymin", "xmax", "ymax")):
            cols[f"bbox_{f}"] = b[:, j]
    if "datetime" in names:
        cols["datetime"] = t.column("datetime").to_pandas()
    else:
        cols["datetime"] = pd.Series([None] * n, dtype="datetime64[us, UTC]")
    for c in ("country", "season", "scene"):
        cols[c] = t.column(c).to_pylist() if c in names else [None] * n
    cols["place"] = _places(t.column("place").to_pylist() if "place" in names else None, cols["geometry"])
    df = pd.DataFrame({c: (v.to_numpy() if isinstance(v, pd.Series) else v) for c, v in cols.items()})
    df["datetime"] = pd.to_datetime(df["datetime"], utc=True)
    return df[list(META_COLUMNS)]


def _checksums(path: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    from csmae.integrity import recorded, warn_unverified

    sums = recorded(manifest)
    if sums is None:
        warn_unverified(path, "embeddings folder")
    return sums


def _entry(sums: dict[str, Any], f: Path) -> dict[str, Any]:
    from csmae.integrity import IntegrityError

    if f.name not in sums:
        raise IntegrityError(f"embeddings shard {f} has no checksum in manifest.json (the folder was "
                             "altered after it was written)", path=f)
    return dict(sums[f.name])


def load_embeddings(path: str | os.PathLike[str]) -> Embeddings:
    """Load an embeddings folder written by ``csmae embed`` (all shards, in order)."""
    path = Path(path)
    manifest = read_manifest(path, kind=KIND)
    shards = manifest.get("shards") or []
    dim = int(manifest.get("dim", 0))
    rows = [sh.get("rows") for sh in shards]
    # vectors go straight into one array when the manifest gives every shard's rows: half the peak memory
    into = np.empty((sum(rows), dim), np.float32) if dim and shards and None not in rows else None
    parts, start = [], 0
    sums = _checksums(path, manifest)
    from csmae.integrity import member

    for sh in shards:
        f = member(path, sh.get("file"), what="embeddings folder", field='manifest.json "shards"')
        if not f.exists():
            raise ValueError(f"{path}: shard {sh['file']} listed in manifest.json is missing")
        part = read_shard(f, checksum=None if sums is None else _entry(sums, f))
        if into is not None:
            n = len(part["vectors"])
            if n != sh["rows"] or part["vectors"].shape[1] != dim:
                raise ValueError(
                    f"{f}: {n} rows of D={part['vectors'].shape[1]}, but manifest.json says "
                    f"{sh['rows']} rows of D={dim}"
                )
            into[start : start + n] = part.pop("vectors")
            start += n
        parts.append(part)
    if not parts:
        n_labels = len(manifest.get("label_names") or []) or 19
        return Embeddings(
            np.empty(0, object),
            np.empty(0, object),
            np.empty(0, object),
            np.zeros((0, n_labels), bool),
            np.zeros((0, dim), np.float32),
            manifest,
        )
    metas = [p.pop("meta", None) for p in parts]
    meta = None
    if any(m is not None for m in metas):
        import pandas as pd

        filled = [m if m is not None else _empty_meta(len(p["ids"]))
                  for m, p in zip(metas, parts, strict=True)]
        meta = pd.concat(filled, ignore_index=True)
    emb = Embeddings(
        ids=np.concatenate([p["ids"] for p in parts]),
        sensors=np.concatenate([p["sensors"] for p in parts]),
        splits=np.concatenate([p["splits"] for p in parts]),
        labels=np.concatenate([p["labels"] for p in parts]),
        vectors=into if into is not None else np.concatenate([p["vectors"] for p in parts]),
        manifest=manifest,
        meta=meta,
    )
    if dim and emb.dim != dim:
        raise ValueError(f"{path}: vectors have D={emb.dim} but manifest.json says dim={dim}")
    if "count" in manifest and int(manifest["count"]) != len(emb):
        raise ValueError(f"{path}: {len(emb)} rows in the shards but manifest.json says {manifest['count']}")
    return emb


def _empty_meta(n: int) -> Any:
    """A :data:`META_COLUMNS` DataFrame of ``n`` null rows."""
    import pandas as pd

    df = pd.DataFrame({c: [None] * n for c in META_COLUMNS})
    for c in ("bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax"):
        df[c] = np.full(n, np.nan)
    df["datetime"] = pd.Series([None] * n, dtype="datetime64[us, UTC]")
    return df


def meta_frame(rows: dict[str, list[Any]]) -> Any:
    """A :data:`META_COLUMNS` DataFrame from per-row lists (``geometry`` WKB, ``datetime`` ISO, ...)."""
    import pandas as pd

    from csmae.geo.parquet import bounds_array

    n = len(next(iter(rows.values()))) if rows else 0
    df = _empty_meta(n)
    if "geometry" in rows:
        df["geometry"] = list(rows["geometry"])
        b = bounds_array(list(rows["geometry"]))
        for j, f in enumerate(("xmin", "ymin", "xmax", "ymax")):
            df[f"bbox_{f}"] = b[:, j]
    if "datetime" in rows:
        df["datetime"] = pd.to_datetime(pd.Series(list(rows["datetime"]), dtype=object), utc=True)
    for c in ("country", "season", "scene"):
        if c in rows:
            df[c] = list(rows[c])
    df["place"] = _places(rows.get("place"), list(df["geometry"]))
    return df


def _places(given: Any, wkbs: Sequence[Any]) -> list[str | None]:
    """Place keys: ``given`` where set, else :func:`csmae.geo.place_of` of the footprint (None without)."""
    from csmae.geo.place import fill_places

    return fill_places(given, list(wkbs))


def drop_nonfinite(emb: Embeddings, *, source: str = "the embeddings", show: int = 20
                   ) -> tuple[Embeddings, dict[str, Any] | None]:
    """Rows with NaN/inf vectors removed, and a report of them (None when every row is finite).

    A non-finite vector cannot be ranked (it is never returned, or ranks first for every query),
    so indexes never hold one; the report (count, first ids) goes to the log and the manifest.
    """
    from csmae.integrity import finite_rows

    ok = finite_rows(emb.vectors)
    bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return emb, None
    shown = [f"{emb.ids[i]}/{emb.sensors[i]}" for i in bad[:show]]
    if len(bad) == len(emb):
        raise ValueError(f"{source}: every one of the {len(emb)} vectors has NaN/inf values: nothing "
                         "to index (the model or its input is broken; re-embed)")
    log.warning("%s: skipping %d of %d vectors with NaN/inf values (not indexed): %s%s", source,
                len(bad), len(emb), ", ".join(shown), " ..." if len(bad) > show else "")
    return emb.select(ok), {"count": int(len(bad)), "items": shown}


def embeddings_from_arrays(
    *,
    ids: Any,
    sensors: Any,
    splits: Any,
    labels: np.ndarray,
    vectors: np.ndarray,
    manifest: dict[str, Any] | None = None,
    meta: dict[str, list[Any]] | Any = None,
) -> Embeddings:
    """Build an in-memory :class:`Embeddings` (tests, benchmarks, training callbacks).

    ``meta``: a :data:`META_COLUMNS` DataFrame or per-row lists for :func:`meta_frame`.
    """
    n = len(vectors)
    splits = list(splits) if splits is not None else [None] * n
    man = {"kind": KIND, "dim": int(np.asarray(vectors).shape[1]), **(manifest or {})}
    return Embeddings(
        np.asarray(list(ids), dtype=object),
        np.asarray(list(sensors), dtype=object),
        np.asarray(splits, dtype=object),
        np.asarray(labels, dtype=bool),
        np.asarray(vectors, dtype=np.float32),
        man,
        meta_frame(meta) if isinstance(meta, dict) else meta,
    )
