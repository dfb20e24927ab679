"""Writes into an archive an engine keeps (a database collection): ``csmae index add / remove`` on a
pointer folder, by any number of writers on any machines at once.

Engines that keep the archive: ``backends/base.py`` (:class:`ItemsOwner`). A pointer folder
(``manifest.json`` with ``files.items`` null) never changes on a write, so writers take no folder
lock. Before a write, the embeddings are compared with the facts the engine
recorded at build (model, dimension, band order and normalisation, label set): a mismatch is
refused before anything is written. Items are upserted by (id, sensor) key under an ingest token
(the same source folder gives the same token), so two writers never lose or duplicate an item, a
rerun after a kill completes the write, and re-adding an item replaces it. Servers see the writes
when they reload (``POST /api/reload``, or a restart); a search before that ranks the snapshot it
loaded. This module talks to the engine only through the protocol (``backends/base.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.artifacts import read_manifest
from csmae.retrieval.backends.base import owns_items
from csmae.retrieval.backends.registry import entry_of, load_backend
from csmae.retrieval.emb_stream import ShardedEmbeddings, nonfinite_report, scan
from csmae.retrieval.embeddings import Embeddings, drop_nonfinite

log = logging.getLogger(__name__)


def ingest_token(source: str, manifest: dict[str, Any], n: int) -> str:
    """A write's token: the same source folder with the same content gives the same token (a rerun
    after a kill completes the same ingest)."""
    sums = json.dumps(manifest.get("checksums") or manifest.get("shards") or {}, sort_keys=True)
    return hashlib.sha256(f"{source}\x00{n}\x00{sums}".encode()).hexdigest()[:16]


def open_pointer(path: Path) -> tuple[dict[str, Any], Any] | None:
    """(manifest, backend) of a pointer folder; None for a folder that keeps its own items table."""
    from csmae.retrieval.index import FORMAT_VERSION, KIND

    manifest = read_manifest(path, kind=KIND, format_version=FORMAT_VERSION)
    if (manifest.get("files") or {}).get("items", "items.parquet") is not None:
        return None
    entry, _ = entry_of(manifest)
    backend = load_backend(path, entry, params=dict(manifest.get("search_params") or {}))
    if not owns_items(backend):
        raise ValueError(f"{path}: manifest.json names no items file but its engine keeps none")
    return manifest, backend


def recorded_manifest(manifest: dict[str, Any], backend: Any) -> dict[str, Any]:
    """The pointer's manifest with the facts the engine recorded (they win)."""
    facts = backend.facts()
    return {**manifest, **{k: v for k, v in facts.items() if k != "columns"}}


def archive_add(
    pointer: tuple[dict[str, Any], Any],
    emb: Embeddings | str | Any,
    source: str,
    check: Callable[..., None],
    leave_out: Callable[[Any], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Upsert an embeddings folder (read shard by shard: no full copy of its vectors) or object
    into the archive; the report's fields. ``leave_out``: given the finite rows' columns (no
    vectors), the (N,) bool mask of rows not to add (e.g. duplicates of the archive's ground)."""
    from csmae.retrieval.index import _duplicates, items_table, normalized_rows

    manifest, backend = pointer
    recorded = recorded_manifest(manifest, backend)
    if isinstance(emb, Embeddings):
        check(recorded, emb, source)  # refused before anything is written
        emb, nonfinite = drop_nonfinite(emb, source=source)
        if leave_out is not None and len(emb):
            emb = emb.select(~leave_out(emb))
        where, rows, se, kept = source, emb, None, None
    else:
        where = str(Path(emb).resolve())
        se = scan(emb)
        check(recorded, se.rows, source, emb_dim=se.dim)  # refused before anything is written
        nonfinite = nonfinite_report(se, source) if len(se.finite) else None
        rows = se.rows.select(se.finite)
        kept = ~leave_out(rows) if leave_out is not None and len(rows) else None  # over the finite rows
        if kept is not None:
            rows = rows.select(kept)
    dup = _duplicates(rows.ids, rows.sensors)
    if dup:
        raise ValueError(f"{source} holds duplicate (id, sensor) rows, e.g. {dup[:3]}: nothing was added")
    if len(rows) == 0:
        return {"count": len(backend)}
    order = np.arange(len(rows))
    token = ingest_token(where, rows.manifest, len(rows))
    items = items_table(rows, order)
    if se is None:
        parts: Any = [(order, normalized_rows(rows, order))]
    else:
        parts = _finite_parts(se, kept)
    added, replaced = backend.upsert_parts(items, parts, token=token, source=where)
    if replaced:
        log.warning("%d (id, sensor) items were already in the archive and were replaced, e.g. %s",
                    len(replaced), replaced[:3])  # fmt: skip
    return {
        "added": added,
        "replaced": len(replaced),
        "replaced_ids": replaced[:20],
        "skipped_nonfinite": int((nonfinite or {}).get("count", 0)),
        "count": len(backend) + added,
    }


def _finite_parts(
    se: ShardedEmbeddings, kept: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions among the folder's finite rows that are ``kept`` (a mask over the finite rows;
    None: all), their L2-normalised vectors), shard by shard."""
    from csmae.retrieval.normalize import l2_normalize

    take = se.finite.copy()
    if kept is not None:
        take[np.flatnonzero(se.finite)[~kept]] = False
    pos_of = np.full(len(take), -1, np.int64)
    pos_of[take] = np.arange(int(take.sum()))
    for first, v in se.vectors():
        sel = np.flatnonzero(take[first : first + len(v)])
        if len(sel):
            yield pos_of[first + sel], l2_normalize(np.ascontiguousarray(v[sel], dtype=np.float32))


def archive_remove(
    pointer: tuple[dict[str, Any], Any], keys: Sequence[tuple[str, str | None]], *, missing_ok: bool
) -> dict[str, Any]:
    """Delete items by (id, sensor) (sensor None: every sensor of the id) from the archive."""
    manifest, backend = pointer
    sensors = list((recorded_manifest(manifest, backend).get("sensors") or {}).keys())
    wanted: list[tuple[str, str]] = []
    groups: list[tuple[str, list[int]]] = []
    for i, s in keys:
        at = len(wanted)
        wanted += [(i, x) for x in ([s] if s is not None else sensors)]
        groups.append((i if s is None else f"{i} {s}", list(range(at, len(wanted)))))
    pks = backend.item_keys([w[0] for w in wanted], [w[1] for w in wanted])
    present = backend.present(pks) if len(pks) else np.zeros(0, bool)
    missing = [name for name, idx in groups if not present[idx].any()]
    if missing and not missing_ok:
        raise ValueError(
            f"{len(missing)} of the ids are not in the index (e.g. {missing[:5]}): nothing was removed "
            "(pass --missing-ok to remove the others)"
        )
    removed = backend.delete_items(np.unique(pks[present]))
    return {"removed": removed, "count": max(0, len(backend) - removed)}
