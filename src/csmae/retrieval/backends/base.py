"""The protocol every vector engine implements, and the spec an engine registers itself with.

A backend holds L2-normalised float32 vectors addressed by int64 **row ids** = rows of the index's
items table (``items.parquet``). Row ids are stable: ``add`` appends new rows (never reuses one),
``remove`` retires rows (the items table keeps them with ``live = False``). The
:class:`~csmae.retrieval.index.SearchIndex` keeps the items table for every backend and evaluates a
:class:`~csmae.retrieval.filters.Filter` on it into the allowed rows, so filtering semantics are the
same on every backend. The index layer (``retrieval/index.py``, ``index_grow.py``) talks to an
engine only through :class:`VectorBackend` and the :class:`BackendSpec` it finds in
:mod:`~csmae.retrieval.backends.registry`; it never names an engine.

What an engine implements (shapes: Q queries, R rows, D dimensions, k results):

- attributes ``name`` (the registered name, also ``"backend"`` in its manifest entry), ``dim``
  (D), ``n_rows`` (row ids ever given: 0..n_rows-1), ``kind`` (the kind it was built as),
  ``factory`` (what the index manifest shows as ``factory``: FAISS's factory string, ``"Milvus
  HNSW"``...), ``params`` (the tuned search parameters, recorded as the manifest's
  ``search_params`` and passed back to ``load``), ``tombstones`` (removed rows still stored, what
  ``compact`` drops; 0 where the engine deletes itself) and ``len(backend)`` = live rows.
- ``search(queries (Q, D), k, rows=allowed (R,) | None, where=Filter | None)`` -> scores (Q, k)
  float32 (inner product, higher = closer) and row ids (Q, k) int64, best first, padded with
  ``-inf`` / ``-1`` only where fewer than k rows are allowed. ``rows`` is the sorted int64 array of
  allowed row ids (already excluding removed rows and everything ``where`` excludes), or None =
  every live row. ``where`` is the same constraint as a Filter, for engines that prefer to
  evaluate it natively (Milvus expressions); an engine may use either but must return the true
  top-k among ``rows`` (exact kinds) or an approximation with recall@10 >= 0.95 (approximate kinds).
- ``reconstruct(rows (R,))`` -> (R, D) float32: the stored vectors of live rows (search by id).
- ``add(rows (R,), vectors (R, D), items)``: rows are new, increasing ids; ``items`` their
  items-table rows (pandas; engines that filter natively store the filter columns).
- ``remove(rows (R,))``: the rows are never returned again. ``compact(live_rows)`` -> a backend
  without tombstones (the same object where there is nothing to do).
- ``tune(vectors (N, D), target=recall, n_queries=, seed=, truth=)`` -> the recall@10 measured
  after choosing the cheapest search parameters that reach ``target`` (stored in ``params``), or
  None for exact kinds (a no-op); ``truth`` = (queries, their exact top-10 row ids) replaces
  ``vectors`` where they are not all in memory (a streamed build). ``approximate``: True for kinds
  that tune.
- ``params`` / ``set_params(overrides)``: read / update the search parameters.
- ``describe()`` -> a JSON-able dict (kind, parameters, sizes) for ``csmae info`` / ``/api/info``.
- ``save(folder, generation=g)`` writes the engine's files of index version ``g`` into ``folder``
  (each atomically: temp + rename; nothing for an engine whose vectors live elsewhere) and returns
  the manifest entry ``{"backend": name, ...}`` its spec's ``load`` reads back. ``files()`` -> the
  file names (in the index folder) of the version last saved or loaded: what the index keeps when
  it removes stale files. ``relocate(folder)``: the saved files now live in ``folder`` (after an
  atomic folder rename). ``discard()``: release what the engine created outside the index folder
  (a Milvus collection, a scratch folder) after a failed build.

Optional capability, **the engine keeps the archive** (:class:`ItemsOwner`, e.g. a Milvus
collection shared by many servers and writers): ``owns_items`` is True, ``items(sensors)`` reads
the items table from the engine (row i = row id i; a snapshot taken at load: later writes by other
processes are seen after a reload), ``facts()`` / ``record_facts(manifest)`` the model facts the
engine recorded at build (a writer with another model, dimension or band order is refused against
them), ``upsert_items(vectors, items, token=, source=)`` adds or replaces items by (id, sensor)
(idempotent: a rerun after a kill completes the write) and ``delete_items(keys)`` removes them,
``present(keys)`` says which are stored,
``item_keys(ids, sensors)`` the engine's keys. The index folder is then a pointer (manifest.json
only); engines without it (FAISS) keep ``items.parquet`` in the index folder.

An engine module registers itself by defining ``BACKEND = BackendSpec(...)`` (found by the registry
with :mod:`pkgutil`; see :class:`BackendSpec`); a third engine is one new module in this package.
Heavy engine libraries are imported inside functions, so importing the package needs no extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from csmae.retrieval.filters import Filter


@runtime_checkable
class VectorBackend(Protocol):
    """Vectors by row id, searchable with an allowed-row set (see the module docstring)."""

    name: str  # the registered engine name
    dim: int
    tombstones: int  # removed rows still stored (0 where the engine deletes them itself)

    def __len__(self) -> int:
        """Number of live (searchable) rows."""
        ...

    @property
    def n_rows(self) -> int:
        """Row ids ever given (0..n_rows-1)."""
        ...

    @property
    def kind(self) -> str:
        """The index kind it was built as (``exact``, ``hnsw``...)."""
        ...

    @property
    def factory(self) -> str:
        """What the index manifest shows as ``factory`` (the engine's own name for the structure)."""
        ...

    @property
    def params(self) -> dict[str, Any]:
        """The tuned search parameters (the manifest's ``search_params``)."""
        ...

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Update search parameters (``efSearch``, ``nprobe``, ``ef``...)."""
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

    def compact(self, live_rows: np.ndarray) -> VectorBackend:
        """A backend without tombstones (same row ids); ``self`` when there is nothing to do."""
        ...

    def tune(
        self,
        vectors: np.ndarray | None,
        *,
        target: float,
        n_queries: int = 500,
        seed: int = 0,
        truth: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> float | None:
        """Cheapest search parameters reaching recall@10 ``target``; the recall (None: exact).
        ``truth``: (queries, their exact top-k row ids) instead of ``vectors`` (a streamed build)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Kind, parameters, sizes for ``csmae info`` / the service's /api/info."""
        ...

    def save(self, folder: Path, *, generation: int = 0) -> dict[str, Any]:
        """Write the files of index version ``generation`` into ``folder``; the manifest entry."""
        ...

    def files(self) -> list[str]:
        """Names of the engine's files in the index folder (version last saved or loaded)."""
        ...

    def relocate(self, folder: Path) -> None:
        """The saved files now live in ``folder`` (the index folder was renamed into place)."""
        ...

    def discard(self) -> None:
        """Release what the engine created outside the index folder (after a failed build)."""
        ...


@runtime_checkable
class ItemsOwner(Protocol):
    """An engine that keeps the items table itself (see the module docstring)."""

    owns_items: bool

    def items(self, sensors: Any = ()) -> Any:
        """The items table now (pandas; row i = row id i), rows grouped by ``sensors`` order."""
        ...

    def facts(self) -> dict[str, Any]: ...

    def record_facts(self, manifest: dict[str, Any]) -> None: ...

    def upsert_items(self, vectors: np.ndarray, items: Any, *, token: str, source: str) -> Any: ...

    def delete_items(self, keys: np.ndarray) -> int: ...

    def present(self, keys: np.ndarray) -> np.ndarray:
        """(N,) bool: the keys stored in the engine now."""
        ...

    def item_keys(self, ids: Any, sensors: Any) -> np.ndarray: ...


def owns_items(backend: Any) -> bool:
    """True for an engine that keeps the archive's items table itself (:class:`ItemsOwner`)."""
    return bool(getattr(backend, "owns_items", False))


@dataclass(frozen=True)
class BackendOption:
    """An engine-specific build option (a keyword of ``build_index`` and, with a flag, a CLI flag).

    Attributes:
        name: the keyword (``uri``, ``collection``, ``store_folder``).
        help: CLI help text (shown prefixed with the engine's name); "" = not on the CLI.
        required: when non-empty, the option must be given; the error is
            ``the <engine> backend needs --<flag>: <required>``.
        locates: the option says where the vectors live, so another engine refuses it
            (``--<flag> is for the <engine> backend; the <other> backend <its home>``); other
            options given to an engine that does not declare them are ignored.
    """

    name: str
    help: str = ""
    required: str = ""
    locates: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _no_files(entry: Mapping[str, Any]) -> list[str]:
    return []


def _owns_nothing(name: str) -> bool:
    return False


@dataclass(frozen=True)
class BackendSpec:
    """How the registry creates and loads one engine (module-level ``BACKEND`` of its module).

    Attributes:
        name: the engine name (``--backend``, the manifest entry's ``"backend"``).
        create: ``create(kind, *, dim, n_hint, label_names, train, name_hint, **options)`` -> a new,
            empty backend (``train``: an L2-normalised sample (S, D) for kinds that train;
            ``name_hint``: a readable name, e.g. the index folder's; ``options``: the declared ones).
        load: ``load(folder, entry, *, params, legacy)`` -> the backend a manifest entry describes.
        options: the engine's own build options.
        entry_files: the files a manifest entry names in the index folder (checksummed, kept).
        required_files: the subset that must exist before the engine reads anything (default: all).
        owns_file: True for a file name this engine may have written into an index folder (an
            older version's file is removed after an update commits).
        home: where the engine keeps its vectors, for errors (``lives in the index folder``).
        kinds: the ``--kind`` help of the default engine.
        default: the engine of ``--backend``'s default and of manifests without a backend entry.
        legacy_entry: for the default engine, the entry of a manifest written before entries
            existed (csmae < format 2), from that manifest.
    """

    name: str
    create: Callable[..., VectorBackend]
    load: Callable[..., VectorBackend]
    options: tuple[BackendOption, ...] = ()
    entry_files: Callable[[Mapping[str, Any]], list[str]] = _no_files
    required_files: Callable[[Mapping[str, Any]], list[str]] | None = None
    owns_file: Callable[[str], bool] = _owns_nothing
    home: str = ""
    kinds: str = ""
    default: bool = False
    legacy_entry: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

    def option(self, name: str) -> BackendOption | None:
        return next((o for o in self.options if o.name == name), None)

    def must_exist(self, entry: Mapping[str, Any]) -> list[str]:
        """The files that must exist before loading (``required_files``, default every file)."""
        return (self.required_files or self.entry_files)(entry)


class BackendDefaults:
    """Defaults for the optional parts of :class:`VectorBackend` (engines may subclass)."""

    tombstones: int = 0

    def compact(self, live_rows: np.ndarray) -> Any:
        return self

    def files(self) -> list[str]:
        return []

    def relocate(self, folder: Path) -> None:
        return None

    def discard(self) -> None:
        return None


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
