"""``csmae index EMB_DIR`` shard by shard: the same index as a build from loaded embeddings, in
bounded memory, for every kind and engine.

Passes over the folder (:mod:`csmae.retrieval.emb_stream`): one for the per-row columns and finite
flags, one for the training sample (and the tuning queries), then per sensor one that adds that
sensor's vectors shard by shard (rows are grouped by sensor as in a loaded build, so row ids,
items table and manifest are identical), and for approximate kinds one that computes the tuning
queries' exact top-10 shard by shard. Peak memory: the per-row columns (read by the scan, then
only as the items table holds them), one shard (and its normalised copy), the training sample and
what the engine itself holds; never the folder's vectors twice. This module names no engine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.backends.base import VectorBackend
from csmae.retrieval.backends.registry import create_backend, discard_backend
from csmae.retrieval.emb_stream import ShardedEmbeddings, exact_top, nonfinite_report, release_memory, scan
from csmae.retrieval.normalize import l2_normalize_inplace


def _gather_rows(se: ShardedEmbeddings, rows: np.ndarray) -> np.ndarray:
    """Normalised vectors of embeddings rows ``rows`` (any order), one pass."""
    order = np.argsort(rows, kind="stable")
    return l2_normalize_inplace(se.gather(rows[order], dest=order))  # one (R, D) array, not three


class LazySample:
    """The training sample as an array read from the shards only when an engine asks for it (a
    kind that trains: IVF, PQ); kinds that do not train never pay for it."""

    def __init__(self, se: ShardedEmbeddings, rows: np.ndarray):
        self.se, self.rows = se, rows
        self.shape = (len(rows), se.dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = _gather_rows(self.se, self.rows)
        return out if dtype is None else out.astype(dtype, copy=False)


def build_streamed(
    path: Path,
    kind: str,
    out: str | os.PathLike[str] | None,
    *,
    target_recall: float,
    recall_queries: int,
    train_size: int,
    overwrite: bool,
    seed: int,
    backend: str | None,
    **options: Any,
) -> Any:
    """:func:`~csmae.retrieval.index.build_index` over an embeddings folder, shard by shard."""
    from csmae.retrieval.index import SearchIndex, _duplicates, finish_build, index_manifest, items_table

    source = str(path.resolve())
    se = scan(path, arrow_ids=True)  # ids as the items table keeps them: no Python str per row
    rows = se.rows
    if len(rows) == 0:
        raise ValueError("the embeddings are empty: nothing to index")
    dup = _duplicates(rows.ids, rows.sensors)
    if dup:
        raise ValueError(f"the embeddings hold duplicate (id, sensor) rows, e.g. {dup[:3]}")
    nonfinite = nonfinite_report(se, source)
    present = set(rows.sensors[se.finite].tolist())  # not rows.select(): a copy of every column
    order_sensors = [s for s in rows.sensor_names if s in present]
    order = np.concatenate([np.flatnonzero((rows.sensors == s) & se.finite) for s in order_sensors])
    ranges, start = {}, 0
    for s in order_sensors:
        c = int(((rows.sensors == s) & se.finite).sum())
        ranges[s] = [start, start + c]
        start += c
    n, d = len(order), se.dim
    t0 = time.perf_counter()
    label_names, manifest_in = rows.label_names, rows.manifest
    items = items_table(rows, order)  # the per-row columns as the index keeps them
    del rows
    se.drop_columns()  # from here on the table holds them (pandas 3: Arrow strings, not a str per id)
    release_memory()
    rng = np.random.default_rng(seed)
    train = LazySample(se, order[np.sort(rng.choice(n, size=min(n, train_size), replace=False))])
    row_of = np.full(len(se.finite), -1, np.int64)  # folder row -> index row (-1: not indexed)
    row_of[order] = np.arange(n)
    be: VectorBackend | None = None
    try:
        be = create_backend(
            backend, kind, dim=d, n_hint=n, label_names=list(label_names), train=train,  # type: ignore[arg-type]
            name_hint=Path(out).name if out is not None else "index", **options,
        )  # fmt: skip
        del train
        release_memory()  # what the training freed, before the codes
        for lo, hi in ranges.values():  # rows grouped by sensor, in folder order: row ids as a loaded build's
            for first, v in se.vectors():
                r = row_of[first : first + len(v)]
                sel = np.flatnonzero((r >= lo) & (r < hi))  # this sensor's finite rows of the shard
                if len(sel) == 0:
                    continue
                r = r[sel]
                be.add(r, l2_normalize_inplace(np.ascontiguousarray(v[sel], np.float32)),  # v[sel]: a copy
                       items.iloc[r].reset_index(drop=True))  # fmt: skip
                del v
        build_s = time.perf_counter() - t0
        recall = _tune(be, se, order, target=target_recall, n_queries=recall_queries, seed=seed)
    except BaseException:
        if be is not None:
            discard_backend(be)
        raise
    manifest = index_manifest(
        manifest_in, be, kind=kind, dim=d, ranges=ranges, recall=recall, recall_queries=recall_queries,
        build_s=build_s, source=source, label_names=label_names, nonfinite=nonfinite,
    )  # fmt: skip
    return finish_build(SearchIndex(backend=be, items=items, manifest=manifest), out, overwrite)


def _tune(
    be: VectorBackend, se: ShardedEmbeddings, order: np.ndarray, *, target: float, n_queries: int, seed: int
) -> float | None:
    """Tune an approximate engine against the exact top-10 of sampled rows, computed shard by shard."""
    engine: Any = be
    if not getattr(engine, "approximate", False):
        return None
    n = len(order)
    if n < 2:
        return 1.0
    qi = np.sort(np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False))
    queries = _gather_rows(se, order[qi])
    truth = exact_top(queries, se, order, min(10, n))
    return engine.tune(None, target=target, n_queries=n_queries, seed=seed, truth=(queries, truth))
