"""The protocol every vector backend implements (FAISS in-process, Milvus Lite / server).

A backend holds L2-normalised float32 vectors addressed by int64 **row ids** = rows of the index's
items table (``items.parquet``). Row ids are stable: ``add`` appends new rows (never reuses one),
``remove`` retires rows (the items table keeps them with ``live = False``). The :class:`SearchIndex`
(csmae/retrieval/index.py) keeps the items table for every backend and evaluates a
:class:`~csmae.retrieval.filters.Filter` on it into the allowed rows, so filtering semantics are the
same on every backend.

Search contract (what the tests check against brute force):

- ``search(queries, k, rows=allowed, where=flt)`` returns scores (Q, k) float32 (inner product,
  higher = closer) and row ids (Q, k) int64, best first, padded with ``-1`` / ``-inf`` only where
  fewer than k rows are allowed. ``rows`` is the sorted int64 array of allowed row ids (already
  excluding removed rows and everything ``where`` excludes), or None = every live row. ``where``
  is the same constraint as a Filter, for backends that prefer to evaluate it natively (Milvus
  expressions); a backend may use either but must return the true top-k among ``rows`` (exact
  kinds) or an approximation of it with recall@10 >= 0.95 (approximate kinds).
- ``reconstruct(rows)`` returns the stored vectors (R, D) of live rows (search by archive id).
- ``add(rows, vectors, items)``: rows are new, increasing ids; ``items`` their items-table rows.
- ``remove(rows)``: the rows are never returned again.
- ``save(folder)`` writes the backend's own files into an index folder and returns the manifest
  entry ``{"backend": name, ...}`` that :func:`load` of the same module reads back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from csmae.retrieval.filters import Filter


@runtime_checkable
class VectorBackend(Protocol):
    """Vectors by row id, searchable with an allowed-row set (see the module docstring)."""

    name: str  # "faiss" | "milvus"
    dim: int

    def __len__(self) -> int:
        """Number of live (searchable) rows."""
        ...

    def search(
        self,
        queries: np.ndarray,  # (Q, D) float32, L2-normalised
        k: int,
        *,
        rows: np.ndarray | None = None,  # (R,) int64 sorted allowed row ids; None = all live rows
        where: Filter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # scores (Q, k) float32, rows (Q, k) int64, -1 padded
        ...

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:  # (R,) -> (R, D) float32
        ...

    def add(self, rows: np.ndarray, vectors: np.ndarray, items: Any) -> None:
        """Append ``vectors`` (R, D) under new row ids ``rows`` (R,); ``items``: pandas rows."""
        ...

    def remove(self, rows: np.ndarray) -> None: ...

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the backend's files into ``folder``; returns its manifest entry."""
        ...

    def describe(self) -> dict[str, Any]:
        """Kind, parameters, sizes for ``csmae info`` / the service's /api/info."""
        ...


def allowed_rows(mask: np.ndarray | None) -> np.ndarray | None:
    """Sorted int64 row ids of a boolean mask (None stays None = no restriction)."""
    if mask is None:
        return None
    return np.flatnonzero(mask).astype(np.int64)


def check_result(scores: np.ndarray, rows: np.ndarray, n_queries: int, k: int) -> None:
    """Raise if a backend broke the shape contract (for backend tests)."""
    if scores.shape != (n_queries, k) or rows.shape != (n_queries, k):
        raise AssertionError(f"backend returned {scores.shape}/{rows.shape}, expected ({n_queries}, {k})")
    if rows.dtype != np.int64:
        raise AssertionError(f"backend rows must be int64, got {rows.dtype}")
