"""A search index over both sensors' descriptors: a vector backend + the items table + a manifest.

Index folder::

    INDEX_DIR/
      manifest.json    kind "csmae-index": model (sha256, name, variant, pooling, dim), sensors, kind,
                       factory, count (live items), rows (row ids ever given), search params, recall@10
                       vs exact (approximate kinds), "backend" (the engine's entry: its files and
                       state), "files"
      items.parquet    row i = row id i: id, sensor, split, labels (bool multi-hot), live (False =
                       removed), and when the embeddings have them the geo columns
                       (embeddings.META_COLUMNS: geometry WKB EPSG:4326, bbox_xmin..bbox_ymax,
                       datetime UTC, country, season, scene);
                       after `csmae index add/remove`: items-<generation>.parquet
      ...              the engine's own files, named by its entry (an in-process engine's index and
                       on-disk vectors; none for a database engine): see csmae.retrieval.backends
    manifest.json also records skipped_nonfinite (NaN/inf vectors left out) and checksums (size +
    sha256 of every file of the current version, verified by SearchIndex.load before the engine
    reads a byte).

The manifest names the files of the current version, so an update writes new files first and then
replaces manifest.json atomically: a reader (or a crash at any point) sees the old or the new index,
never a mix. Every search evaluates a :class:`~csmae.retrieval.filters.Filter` (sensor, split,
labels, country, season, dates, bbox) on the items table into the allowed rows, which the backend
applies inside the search. This module talks to engines only through the protocol
(:mod:`csmae.retrieval.backends.base`) and the registry; it names none.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import check_replaceable
from csmae.integrity import check_members, checksum_files, verify_manifest_files
from csmae.retrieval.artifacts import (
    AtomicFolder,
    base_manifest,
    manifest_label_names,
    read_manifest,
    write_json_atomic,
)
from csmae.retrieval.backends.base import VectorBackend, owns_items
from csmae.retrieval.backends.registry import (
    create_backend,
    discard_backend,
    entry_of,
    load_backend,
    spec_of_entry,
)
from csmae.retrieval.embeddings import Embeddings, drop_nonfinite
from csmae.retrieval.filters import Filter, FilterColumns, as_filter
from csmae.retrieval.normalize import l2_normalize

log = logging.getLogger(__name__)

KIND = "csmae-index"
FORMAT_VERSION = 2
TARGET_RECALL = 0.95

__all__ = [
    "KIND",
    "SearchIndex",
    "build_index",
]


@dataclass
class SearchIndex:
    """A loaded index: vector backend + items table (row i = row id i) + manifest."""

    backend: VectorBackend  # any registered engine (csmae.retrieval.backends.registry)
    items: Any  # pandas.DataFrame: id, sensor, split, labels, live, [geo columns]
    manifest: dict[str, Any]
    path: Path | None = None
    _cols: FilterColumns | None = field(default=None, repr=False)
    _allowed: dict[Filter, np.ndarray] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------- properties
    @property
    def index(self) -> Any:
        """The engine's own in-process index object, where it has one (ids = row ids; tests and
        benchmarks)."""
        engine: Any = self.backend
        return engine.index

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def sensors(self) -> list[str]:
        counts = self.manifest.get("sensor_counts") or self.manifest.get("sensor_ranges") or {}
        return (
            [s for s in counts if self._sensor_count(s) > 0] if counts else sorted(set(self.items["sensor"]))
        )

    def _sensor_count(self, s: str) -> int:
        counts = self.manifest.get("sensor_counts")
        if counts is not None:
            return int(counts.get(s, 0))
        lo, hi = self.manifest["sensor_ranges"][s]
        return int(hi) - int(lo)

    @property
    def label_names(self) -> list[str]:
        return manifest_label_names(self.manifest)

    @property
    def params(self) -> dict[str, int]:
        return dict(self.manifest.get("search_params") or {})

    @property
    def columns(self) -> FilterColumns:
        """The items table prepared for filter masks (cached; rebuilt after add/remove)."""
        if self._cols is None:
            self._cols = FilterColumns(self.items, label_names=self.label_names)
        return self._cols

    def invalidate(self) -> None:
        self._cols = None
        self._allowed = {}

    def sensor_range(self, sensor: str) -> tuple[int, int]:
        """Row range of a sensor in a freshly built index (rows are grouped by sensor at build;
        after add/remove they are not: filter with ``where`` instead)."""
        ranges = self.manifest.get("sensor_ranges")
        if not ranges:
            raise ValueError("this index has been updated since it was built: sensor rows are not contiguous")
        if sensor not in ranges:
            raise ValueError(f"the index has no {sensor!r} items; it holds {list(ranges)}")
        lo, hi = ranges[sensor]
        return int(lo), int(hi)

    # ----------------------------------------------------------------- search
    def filter_for(self, where: Filter | Mapping[str, Any] | None = None, target: str = "any") -> Filter:
        """The filter of a search: ``where`` plus the ``target`` sensor (``"any"`` = no constraint)."""
        flt = as_filter(where)
        if target != "any":
            if target not in self.sensors:
                raise ValueError(f"the index has no {target!r} items; it holds {self.sensors}")
            if flt.sensor is not None and target not in flt.sensor:
                raise ValueError(f"target {target!r} is not among the filter's sensors {list(flt.sensor)}")
            flt = flt.replace(sensor=(target,))
        return flt

    def allowed(self, flt: Filter) -> np.ndarray | None:
        """Sorted allowed row ids of a filter (None = every row is live and allowed); the last
        few filters' rows are kept (paging and repeated searches reuse them)."""
        cols = self.columns
        if flt.is_empty and bool(cols.live.all()):
            return None
        rows = self._allowed.get(flt)
        if rows is None:
            rows = np.flatnonzero(flt.mask(cols)).astype(np.int64)
            if len(self._allowed) >= 16:
                self._allowed.pop(next(iter(self._allowed)))
            self._allowed[flt] = rows
        return rows

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        target: str = "any",
        where: Filter | Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows for (Q, D) query vectors (L2-normalised here) among the items that pass
        ``where`` and ``target`` (a sensor or ``"any"``).

        Returns scores (Q, k') float32 and row ids (Q, k') int64 with k' = min(k, items allowed);
        -1 marks a missing result (approximate kinds only; dropped by callers).
        """
        q = l2_normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have D={q.shape[1]}, the index holds D={self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(self.backend) == 0:
            raise ValueError("the archive is empty: nothing to search")
        flt = self.filter_for(where, target)
        rows = self.allowed(flt)
        n_allowed = len(self.backend) if rows is None else len(rows)
        kk = min(k, n_allowed)
        if kk == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores, out = self.backend.search(q, kk, rows=rows, where=flt)
        return scores, out

    def reconstruct(self, row: int) -> np.ndarray:
        return self.backend.reconstruct(np.array([row], dtype=np.int64))[0]

    # --------------------------------------------------------------- save/load
    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a complete index folder atomically (a new folder, generation 0)."""
        out = Path(out)
        if owns_items(self.backend):  # the engine keeps the archive: the folder is a pointer
            return self._save_pointer(out, overwrite=overwrite)
        with AtomicFolder(out, overwrite=overwrite, kind=KIND) as tmp:
            entry = self.backend.save(tmp, generation=0)
            write_items(self.items, tmp / "items.parquet")
            self.manifest.update(backend=entry, files={"items": "items.parquet"}, generation=0)
            # integrity: per-file sizes + sha256, verified by load() before the engine parses the bytes
            self.manifest = {**self.manifest, "checksums": checksum_files(tmp, data_files(self.manifest))}
            write_json_atomic(tmp / "manifest.json", self.manifest)
        self.backend.relocate(out)
        self.path = out
        return out

    def _save_pointer(self, out: Path, *, overwrite: bool) -> Path:
        """An index folder that points at the engine's archive: manifest.json only."""
        engine: Any = self.backend
        with AtomicFolder(out, overwrite=overwrite, kind=KIND) as tmp:
            entry = self.backend.save(tmp, generation=0)
            engine.record_facts(self.manifest)
            self.manifest.update(backend=entry, files={"items": None}, generation=0, checksums={})
            write_json_atomic(tmp / "manifest.json", self.manifest)
        self.path = out
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, require_checksums: bool = False) -> SearchIndex:
        """Load an index folder, its files verified first (``require_checksums``: refuse one
        that records none instead of warning); a future ``format_version`` is refused."""
        import pandas as pd

        path = Path(path)
        manifest = read_manifest(path, kind=KIND, format_version=FORMAT_VERSION)
        entry, legacy = entry_of(manifest)  # legacy: csmae < format 2 (no backend entry recorded)
        items_file = (manifest.get("files") or {}).get("items", "items.parquet")
        spec = spec_of_entry(entry, path)
        # never follow a name out of the folder (an edited manifest naming ../../etc/passwd)
        check_members(path, [*spec.must_exist(entry), *([items_file] if items_file else []),
                             *spec.entry_files(entry)], what="index")
        if items_file is None:  # a pointer: the engine keeps the items (the collection is the archive)
            backend = load_backend(path, entry, params=dict(manifest.get("search_params") or {}))
            return cls.from_archive(backend, manifest, path)
        for f in spec.must_exist(entry) + [items_file]:  # database engines: none
            if not (path / f).exists():
                raise ValueError(f"{path}: {f} is missing (half-written or damaged index folder)")
        # integrity: damaged bytes must never reach the engine's reader (a flipped HNSW header can
        # make FAISS allocate many GiB; a flipped vector would rank first for every query)
        verify_manifest_files(path, manifest, what="index", required=require_checksums)
        backend = load_backend(
            path, entry, params=dict(manifest.get("search_params") or {}), legacy=legacy
        )
        try:
            items = pd.read_parquet(path / items_file)
        except Exception as e:
            raise ValueError(f"{path}/{items_file} is corrupted: {e}") from None
        if "live" not in items:
            items["live"] = True
        n = int(manifest.get("count", -1))
        n_rows = int(manifest.get("rows", n))
        live = int(items["live"].sum())
        if len(backend) != n or live != n or len(items) != n_rows or backend.n_rows != n_rows:
            raise ValueError(
                f"{path}: inconsistent index folder (manifest count {n} of {n_rows} rows, the index "
                f"holds {len(backend)} live vectors, items.parquet {len(items)} rows of which {live} live)"
            )
        if backend.dim != int(manifest["dim"]):
            raise ValueError(f"{path}: the index has D={backend.dim}, manifest says {manifest['dim']}")
        return cls(backend=backend, items=items, manifest=manifest, path=path)

    @classmethod
    def from_archive(cls, backend: Any, manifest: dict[str, Any], path: Path | None = None) -> SearchIndex:
        """The index over an engine that keeps the archive (items and facts read from it now)."""
        facts = backend.facts()
        items = backend.items(list((facts.get("sensors") or manifest.get("sensors") or {}).keys()))
        return cls(backend=backend, items=items, manifest=archive_manifest(manifest, facts, items), path=path)


def data_files(manifest: dict[str, Any]) -> list[str]:
    """The files of an index folder's current version (what its checksums cover)."""
    entry, _ = entry_of(manifest)  # a format-1 folder: the default engine's legacy entry
    spec = spec_of_entry(entry)
    first = spec.must_exist(entry)  # a database engine keeps no vector file here
    rest = [f for f in spec.entry_files(entry) if f not in first]
    items = (manifest.get("files") or {}).get("items", "items.parquet")  # None: a pointer folder
    return [*first, *([items] if items else []), *rest]


def archive_manifest(manifest: dict[str, Any], facts: Mapping[str, Any], items: Any) -> dict[str, Any]:
    """A pointer folder's manifest with the engine's recorded facts (they win: the collection is
    the archive) and the counts of the items read from it now."""
    out = {**manifest, **{k: v for k, v in facts.items() if k != "columns"}}
    sensors = list((out.get("sensors") or {}).keys())
    counts = items["sensor"].value_counts()
    order = sensors + sorted(set(counts.index) - set(sensors))
    out["sensor_counts"] = {s: int(counts.get(s, 0)) for s in order}
    ranges, start = {}, 0
    for s in order:  # items() groups rows by sensor in this order
        ranges[s] = [start, start + int(counts.get(s, 0))]
        start += int(counts.get(s, 0))
    out.update(count=len(items), rows=len(items), sensor_ranges=ranges)
    return out


def items_table(emb: Embeddings, order: np.ndarray) -> Any:
    """The items rows of ``emb`` rows ``order`` (live), with its geo columns when it has them."""
    import pandas as pd

    items = pd.DataFrame(
        {
            "id": _as_str(emb.ids[order]),
            "sensor": _as_str(emb.sensors[order]),
            "split": emb.splits[order],
            "labels": label_rows(emb.labels[order]),
            "live": np.ones(len(order), dtype=bool),
        }
    )
    meta = getattr(emb, "meta", None)
    if meta is not None:  # geo columns (embeddings.META_COLUMNS): geometry, bbox_*, datetime, country...
        for c in meta.columns:
            if c not in items:  # never the core columns (id, sensor, split, labels, live)
                items[c] = meta[c].iloc[order].reset_index(drop=True)
    return items


#: rows converted to Arrow and written at a time by :func:`write_items`
ITEMS_SLICE = 65536


def write_items(items: Any, path: Path) -> None:
    """``items.to_parquet(path, index=False)`` a slice of rows at a time: the same schema (pandas
    metadata included) and values, without the whole table's Arrow copy and the writer's buffers of
    one big row group at once (1M rows: +175 MB while writing, +41 MB by slices)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(items, preserve_index=False)  # types from every row, not a slice's
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, max(len(items), 1), ITEMS_SLICE):
            part = items.iloc[lo : lo + ITEMS_SLICE]
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))


def _as_str(values: np.ndarray) -> np.ndarray:
    """``values`` as a column of str: the same objects when they already are (8 bytes a row;
    ``astype(str)`` would make a fixed-width copy, then pandas a new str object per row), or pandas'
    own string array as it is."""
    import pandas as pd

    if isinstance(values.dtype, pd.StringDtype):  # already pandas' own string column (scan(arrow_ids=))
        return values
    if values.dtype == object and all(type(v) is str for v in values.tolist()):
        return values
    return values.astype(str).astype(object)


def label_rows(labels: np.ndarray) -> np.ndarray:
    """(N, L) bool -> (N,) object array of read-only (L,) arrays, one shared array per distinct label
    set (an archive has few: 8 bytes a row instead of a ~110-byte array object each, 0.5 GB at 5M)."""
    out = np.empty(len(labels), dtype=object)
    if len(labels) == 0:
        return out
    uniq, inverse = np.unique(np.packbits(labels, axis=1, bitorder="little"), axis=0, return_inverse=True)
    shared = np.unpackbits(uniq, axis=1, count=labels.shape[1], bitorder="little").astype(bool)
    shared.flags.writeable = False
    one = np.empty(len(shared), dtype=object)
    for i, row in enumerate(shared):  # element by element: assigning the list would broadcast (U, L)
        one[i] = row
    out[:] = one[inverse.reshape(-1)]
    return out


def normalized_rows(emb: Embeddings, order: np.ndarray) -> np.ndarray:
    return l2_normalize(np.ascontiguousarray(emb.vectors[order], dtype=np.float32))


def build_index(
    emb: Embeddings | str | os.PathLike[str],
    kind: str = "exact",
    out: str | os.PathLike[str] | None = None,
    *,
    target_recall: float = TARGET_RECALL,
    recall_queries: int = 500,
    train_size: int = 100_000,
    overwrite: bool = False,
    seed: int = 0,
    backend: str | None = None,
    **options: Any,
) -> SearchIndex:
    """Build one index over every sensor's vectors of an embeddings folder (or object).

    Args:
        emb: :class:`Embeddings` or an embeddings folder.
        kind: the engine's index kind (see its module). The default engine's: exact (Flat), hnsw
            (HNSW32), hnsw-sq8 (HNSW32 over 8-bit scalar-quantised vectors: about a third of the
            memory, approximate scores), ivf (IVF, sqrt-sized lists), ivfpq (IVF + PQ codes in
            RAM, candidates re-ranked exactly from on-disk float16 vectors: for archives beyond
            RAM) or any FAISS factory string (inner product).
        out: folder to save to (atomically); None = keep in memory.
        target_recall: approximate kinds get the smallest efSearch/nprobe that reaches this
            recall@10 against exact search on a sample; the measured recall is stored.
        recall_queries: sampled queries for that measurement.
        train_size: vectors used to train IVF/PQ indexes.
        backend: a registered engine (``registry.backend_names()``; None = the default, FAISS in
            process; Milvus needs an optional extra, see docs/milvus.md).
        options: the engine's own options (``BackendSpec.options``; e.g. Milvus ``uri`` =
            ``path.db`` (Lite, in this process) or ``http://host:19530``, and ``collection``).
    """
    if out is not None and Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another output or pass --overwrite")
    if out is not None and overwrite:
        check_replaceable(out, KIND)  # before the build: --overwrite replaces only an index
    source = None
    if not isinstance(emb, Embeddings):  # a folder: shard by shard (bounded memory, same index)
        from csmae.retrieval.index_stream import build_streamed

        return build_streamed(
            Path(emb), kind, out, target_recall=target_recall, recall_queries=recall_queries,
            train_size=train_size, overwrite=overwrite, seed=seed, backend=backend, **options,
        )  # fmt: skip
    if len(emb) == 0:
        raise ValueError("the embeddings are empty: nothing to index")
    dup = _duplicates(emb.ids, emb.sensors)
    if dup:
        raise ValueError(f"the embeddings hold duplicate (id, sensor) rows, e.g. {dup[:3]}")
    emb, nonfinite = drop_nonfinite(emb, source=source or "the embeddings")  # never index NaN/inf
    order_sensors = emb.sensor_names
    order = np.concatenate([np.flatnonzero(emb.sensors == s) for s in order_sensors])
    vectors = normalized_rows(emb, order)
    ranges, start = {}, 0
    for s in order_sensors:
        c = int((emb.sensors == s).sum())
        ranges[s] = [start, start + c]
        start += c
    n, d = vectors.shape
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    train = vectors[np.sort(rng.choice(n, size=min(n, train_size), replace=False))]
    items = items_table(emb, order)
    be: VectorBackend | None = None
    try:
        be = create_backend(
            backend, kind, dim=d, n_hint=n, label_names=list(emb.label_names), train=train,
            name_hint=Path(out).name if out is not None else "index", **options,
        )  # fmt: skip
        be.add(np.arange(n, dtype=np.int64), vectors, items)
        build_s = time.perf_counter() - t0
        recall = be.tune(vectors, target=target_recall, n_queries=recall_queries, seed=seed)
    except BaseException:
        if be is not None:
            discard_backend(be)
        raise
    manifest = index_manifest(
        emb.manifest, be, kind=kind, dim=d, ranges=ranges, recall=recall, recall_queries=recall_queries,
        build_s=build_s, source=source, label_names=emb.label_names, nonfinite=nonfinite,
    )  # fmt: skip
    return finish_build(SearchIndex(backend=be, items=items, manifest=manifest), out, overwrite)


def index_manifest(
    man: Mapping[str, Any], be: VectorBackend, *, kind: str, dim: int, ranges: dict[str, list[int]],
    recall: float | None, recall_queries: int, build_s: float, source: str | None,
    label_names: list[str], nonfinite: Any,
) -> dict[str, Any]:  # fmt: skip
    """A new index's manifest (the embeddings manifest ``man``'s model facts, the engine's)."""
    n = sum(hi - lo for lo, hi in ranges.values())
    manifest = base_manifest(
        KIND,
        model=man.get("model"),
        dim=dim,
        sensors=man.get("sensors", {s: {} for s in ranges}),
        index_kind=kind,
        factory=be.factory,
        metric="inner_product (cosine on L2-normalised vectors)",
        count=n,
        rows=n,
        sensor_counts={s: hi - lo for s, (lo, hi) in ranges.items()},
        sensor_ranges=ranges,
        search_params=be.params,
        recall_at_10=recall,
        recall_queries=recall_queries if recall is not None else 0,
        build_seconds=round(build_s, 3),
        embeddings=source,
        dataset=man.get("dataset"),
        label_names=label_names,
        embed_precision=man.get("precision", "fp32"),
        skipped_nonfinite=nonfinite,
    )
    manifest["format_version"] = FORMAT_VERSION
    return manifest


def finish_build(si: SearchIndex, out: str | os.PathLike[str] | None, overwrite: bool) -> SearchIndex:
    """Save a new index (when ``out``); its engine's resources are released if that fails."""
    be = si.backend
    if out is not None:
        try:
            si.save(out, overwrite=overwrite)
        except BaseException:
            discard_backend(be)
            raise
    return si


def _duplicates(ids: np.ndarray, sensors: np.ndarray) -> list[tuple[str, str]]:
    """The (id, sensor) keys that occur again after their first row, in row order. Keys as integer
    codes in C hash tables: a Python set of 5M (id, sensor) tuples held 0.3 GB after it was freed."""
    import pandas as pd

    id_code, _ = pd.factorize(ids)  # (N,) int64, equal ids equal codes (None: -1)
    sensor_code, sensor_names = pd.factorize(sensors)
    key = id_code * max(1, len(sensor_names)) + sensor_code
    again = pd.Series(key, copy=False).duplicated(keep="first").to_numpy()
    return [(ids[i], sensors[i]) for i in np.flatnonzero(again).tolist()]
