"""An embeddings folder read shard by shard: the per-row columns in memory, the vectors one shard at
a time (``csmae index`` and ``csmae index add`` in bounded memory for every kind and engine).

:func:`scan` reads every shard once and keeps ids, sensors, splits, labels, the geo columns and
which vectors are finite, never the vectors; :meth:`ShardedEmbeddings.vectors` then yields each
shard's vectors again (checksums verified on every read). Peak memory: the per-row columns, one
shard, and whatever the engine keeps (a FAISS Flat index holds every vector: N x D x 4 bytes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.artifacts import read_manifest
from csmae.retrieval.embeddings import KIND, Embeddings, _checksums, _empty_meta, _entry, read_shard

log = logging.getLogger(__name__)


@dataclass
class ShardedEmbeddings:
    """An embeddings folder's per-row columns (``rows``: vectors of width 0) and its shards."""

    path: Path
    rows: Embeddings  # every column but the vectors (rows.vectors is (M, 0))
    dim: int
    finite: np.ndarray  # (M,) bool: the row's vector is all finite
    shards: list[tuple[Path, dict[str, Any] | None, int]]  # file, checksum entry, first row
    #: (sorted rows, their vectors) kept by :func:`scan`'s ``keep``, or None
    kept: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        return self.rows.manifest

    def drop_columns(self) -> None:
        """Let go of the per-row columns once the caller holds what it needs of them (an index's items
        table): ``rows`` keeps its manifest and no rows; the shards and finite flags stay readable.
        At 5M rows: pointer arrays, labels and (unless ``arrow_ids``) one ``str`` per id, ~0.5 GB."""
        r = self.rows
        self.rows = Embeddings(
            ids=np.empty(0, object), sensors=np.empty(0, object), splits=np.empty(0, object),
            labels=np.zeros((0, r.labels.shape[1]), bool), vectors=np.zeros((0, 0), np.float32),
            manifest=r.manifest,
        )  # fmt: skip

    def vectors(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (R, D) float32) per shard, in row order."""
        for f, checksum, start in self.shards:
            v = read_vectors(f, checksum=checksum)
            if v.shape[1] != self.dim:
                raise ValueError(f"{f}: vectors have D={v.shape[1]}, the folder's others D={self.dim}")
            yield start, v
            del v
            _release_arrow()  # Arrow's pool would keep the freed shard buffers (0.15-0.5 GB at 1M-5M rows)

    def gather(self, rows: np.ndarray, *, dest: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), D) float32: the vectors of embeddings rows ``rows`` (sorted), one pass;
        with ``dest`` (a permutation), row ``rows[i]`` goes to output row ``dest[i]`` (no second copy
        to reorder)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        for start, v in self.vectors():
            lo, hi = np.searchsorted(rows, [start, start + len(v)])
            out[slice(lo, hi) if dest is None else dest[lo:hi]] = v[rows[lo:hi] - start]
        return out


def read_vectors(path: Path, *, checksum: dict[str, Any] | None = None) -> np.ndarray:
    """(R, D) float32: only the ``vector`` column of a shard (its bytes verified first, as
    :func:`~csmae.retrieval.embeddings.read_shard` does): no per-row objects for ids or footprints."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source: Any = path
    if checksum is not None:
        from csmae.integrity import read_verified

        buf = read_verified(path, checksum, what="embeddings shard", alloc=pa.allocate_buffer)
        source = pa.BufferReader(buf)
    try:
        arr = pq.read_table(source, columns=["vector"]).column("vector").combine_chunks()
    except Exception as e:  # pyarrow raises several types for damaged files
        raise ValueError(f"{path}: cannot read the vector column of the Parquet shard ({e})") from None
    width = getattr(arr.type, "list_size", None)
    if width is None:  # variable-size list written by another tool
        rows = arr.to_pylist()
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    return np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


def scan(
    path: str | os.PathLike[str], *, meta: bool = True, keep: Any = None, keep_bytes: int = 0,
    arrow_ids: bool = False,
) -> ShardedEmbeddings:
    """Read an embeddings folder's per-row columns and finite flags, one shard at a time.

    ``meta``: also keep the geo columns (footprints, times, ...: an index needs them; an
    evaluation does not, and leaves them out to hold less). ``keep``: a function of a shard's
    columns (``ids``, ``sensors``, ``splits``) giving the rows whose vectors to keep (``kept``:
    e.g. an evaluation's queries, read in this pass instead of another), dropped when they pass
    ``keep_bytes``. ``arrow_ids``: ``rows.ids`` as the Arrow-backed string array that pandas itself
    makes of a column of ``str`` (pandas >= 3), never a Python ``str`` per row (5M ids: ~0.3 GB of
    objects whose freed memory the interpreter keeps); an object array where pandas would make one."""
    import pandas as pd

    from csmae.integrity import finite_rows, member

    path = Path(path)
    manifest = read_manifest(path, kind=KIND)
    sums = _checksums(path, manifest)
    parts, shards, finite, metas, start, dim = [], [], [], [], 0, int(manifest.get("dim", 0))
    common: dict[Any, Any] = {}
    kept: list[tuple[np.ndarray, np.ndarray]] | None = [] if keep is not None else None
    held = 0
    for sh in manifest.get("shards") or []:
        f = member(path, sh.get("file"), what="embeddings folder", field='manifest.json "shards"')
        if not f.exists():
            raise ValueError(f"{path}: shard {sh['file']} listed in manifest.json is missing")
        checksum = None if sums is None else _entry(sums, f)
        part = read_shard(f, checksum=checksum, arrow_ids=arrow_ids)
        v = part.pop("vectors")
        if dim and v.shape[1] != dim:
            raise ValueError(f"{path}: vectors have D={v.shape[1]} but manifest.json says dim={dim}")
        dim = dim or int(v.shape[1])
        if sh.get("rows") is not None and len(v) != int(sh["rows"]):
            raise ValueError(f"{f}: {len(v)} rows, but manifest.json says {sh['rows']} rows")
        finite.append(finite_rows(v))
        if keep is not None and kept is not None:
            sel = np.flatnonzero(keep(part))
            kept.append((start + sel, np.ascontiguousarray(v[sel])))
            held += sel.size * v.shape[1] * 4
            if held > keep_bytes:
                kept = None  # over the budget: the caller reads them shard by shard instead
        del v
        shards.append((f, checksum, start))
        metas.append(part.pop("meta", None) if meta else None)
        for key in ("sensors", "splits"):  # a few distinct values: one str object each, not one a row
            part[key] = _shared(part[key], common)
        parts.append(part)
        start += len(part["ids"])
    n_labels = len(manifest.get("label_names") or []) or 19
    frame = None
    if any(m is not None for m in metas):
        frame = pd.concat(
            [m if m is not None else _empty_meta(len(p["ids"])) for m, p in zip(metas, parts, strict=True)],
            ignore_index=True,
        )

    def cat(key: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]) if parts else empty

    ids = _arrow_strings([p["ids"] for p in parts]) if arrow_ids else cat("ids", np.empty(0, object))
    rows = Embeddings(
        ids=ids,
        sensors=cat("sensors", np.empty(0, object)),
        splits=cat("splits", np.empty(0, object)),
        labels=cat("labels", np.zeros((0, n_labels), bool)),
        vectors=np.zeros((start, 0), np.float32),
        manifest=manifest,
        meta=frame,
    )
    if "count" in manifest and int(manifest["count"]) != start:
        raise ValueError(f"{path}: {start} rows in the shards but manifest.json says {manifest['count']}")
    ok = np.concatenate(finite) if finite else np.zeros(0, bool)
    _release_arrow()
    kept_rows = None
    if kept is not None:
        kept_rows = (
            np.concatenate([r for r, _ in kept]) if kept else np.zeros(0, np.int64),
            np.concatenate([x for _, x in kept]) if kept else np.zeros((0, dim), np.float32),
        )
    return ShardedEmbeddings(path=path, rows=rows, dim=dim, finite=ok, shards=shards, kept=kept_rows)


def str_column_dtype() -> Any:
    """The dtype pandas gives a column of Python ``str`` (pandas >= 3: Arrow-backed ``str``;
    pandas 2: ``object``)."""
    import pandas as pd

    return pd.Series(["a"]).dtype


def _arrow_strings(chunks: list[Any]) -> Any:
    """Per-shard pyarrow string arrays as one column of :func:`str_column_dtype` (what an items table
    built from ``str`` objects would hold), without making the objects where pandas keeps Arrow."""
    import pandas as pd
    import pyarrow as pa

    dtype = str_column_dtype()
    joined = pa.chunked_array([c.cast(pa.string()) for c in chunks], type=pa.string())
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return pd.array(joined, dtype=dtype)
    return np.asarray(joined.to_pylist(), dtype=object)  # pandas 2: the object array it would make


def _release_arrow() -> None:
    """Hand the shard buffers Arrow's allocator keeps for reuse back to the system."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def release_memory() -> None:
    """Hand freed memory back to the system between the stages of a long job: Arrow's pool and, where
    the C library is glibc, the heap's free pages (``malloc_trim``; 0.12 GB after the ivfpq training
    at 5M rows)."""
    _release_arrow()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


def _shared(values: np.ndarray, common: dict[Any, Any]) -> np.ndarray:
    """``values`` (object array) with equal values as the same object (8 bytes a row, not ~60)."""
    out = np.empty(len(values), dtype=object)
    out[:] = [common.setdefault(v, v) for v in values.tolist()]
    return out


def nonfinite_report(se: ShardedEmbeddings, source: str, show: int = 20) -> dict[str, Any] | None:
    """What :func:`~csmae.retrieval.embeddings.drop_nonfinite` reports, from the finite flags."""
    bad = np.flatnonzero(~se.finite)
    if len(bad) == 0:
        return None
    if len(bad) == len(se.finite):
        raise ValueError(f"{source}: every one of the {len(bad)} vectors has NaN/inf values: nothing "
                         "to index (the model or its input is broken; re-embed)")  # fmt: skip
    shown = [f"{se.rows.ids[i]}/{se.rows.sensors[i]}" for i in bad[:show]]
    log.warning("%s: skipping %d of %d vectors with NaN/inf values (not indexed): %s%s", source,
                len(bad), len(se.finite), ", ".join(shown), " ..." if len(bad) > show else "")  # fmt: skip
    return {"count": int(len(bad)), "items": shown}


#: queries scored against a shard at once by :func:`exact_top`
QUERY_BLOCK = 64


def exact_top(queries: np.ndarray, se: ShardedEmbeddings, order: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) row ids (positions in ``order``) of the exact top-k inner products of L2-normalised
    ``queries`` over the normalised vectors of embeddings rows ``order``, one shard at a time."""
    from csmae.retrieval.normalize import l2_normalize_inplace

    row_of = np.full(len(se.finite), -1, np.int64)
    row_of[order] = np.arange(len(order))
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_r = np.full((len(queries), k), -1, np.int64)
    for start, v in se.vectors():
        r = row_of[start : start + len(v)]
        keep = r >= 0
        if not keep.any():
            continue
        x = l2_normalize_inplace(np.ascontiguousarray(v[keep], np.float32))  # (R, D): v[keep] is a copy
        kept = np.broadcast_to(r[keep], (QUERY_BLOCK, len(x)))
        for lo in range(0, len(queries), QUERY_BLOCK):  # (500, R) scores, sort keys and ids at once
            hi = lo + QUERY_BLOCK  # were 0.3 GB: the peak of the 1M-5M ivfpq builds' tuning
            s = queries[lo:hi] @ x.T  # (B, R)
            all_s = np.concatenate([best_s[lo:hi], s], axis=1)
            all_r = np.concatenate([best_r[lo:hi], kept[: len(s)]], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s[lo:hi] = np.take_along_axis(all_s, top, 1)
            best_r[lo:hi] = np.take_along_axis(all_r, top, 1)
    return best_r
