"""The FAISS backend: every index kind addressed by stable row ids, filtered inside the search.

Row ids and removal, per kind:

- ``exact`` (Flat), ``hnsw``, ``hnsw-sq8`` and other non-IVF factory strings are wrapped in
  ``IndexIDMap2`` (FAISS id = row id, ``reconstruct(row)`` works). Flat supports ``remove_ids``;
  HNSW does not (faiss), so a removed HNSW row stays in the graph as a **tombstone**: every search
  excludes it through the selector, and ``csmae index compact`` rebuilds the graph from the live
  rows (same row ids) when tombstones pile up.
- IVF kinds (``ivf``, ``ivfpq``, IVF factory strings) take row ids natively (``add_with_ids``,
  ``remove_ids``; a hash-table direct map gives ``reconstruct`` for IVF-Flat).
- ``ivfpq`` = OPQ + IVF + PQ codes in RAM (m + 8 bytes per vector) whose candidates are
  re-ranked exactly from an on-disk memory-mapped float16 copy of the vectors
  (:class:`~csmae.retrieval.backends.vectorstore.VectorStore`).

Tuning for a recall target: :mod:`csmae.retrieval.backends.faiss_tune`.

Filters arrive as allowed row ids and become an ``IDSelectorBitmap`` passed in the search
parameters, so the result is the top-k among allowed rows, not a post-filtered list. Approximate
kinds search the allowed rows exactly instead when they are few (``EXACT_MAX_ROWS``) or a small
share of the archive (``EXACT_BELOW``: graph/list search with a very selective filter loses
recall); above that, HNSW's efSearch and IVF's nprobe are divided by the allowed share (the
nearest allowed items lie as far as the (k / share)-th nearest overall; a selector makes IVF score
only allowed entries, so the cost stays about that of an unfiltered search; efSearch is capped at
``HNSW_MAX_EF``), and any query that comes back with fewer than min(k, allowed) results is redone exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import atomic_path
from csmae.retrieval.backends.base import BackendOption, BackendSpec
from csmae.retrieval.backends.vectorstore import VectorStore
from csmae.retrieval.filters import Filter

log = logging.getLogger(__name__)

#: FAISS's flat (exact) search scans query by query until n_queries * D reaches
#: ``distance_compute_blas_threshold`` (128,000 in faiss 1.15: 167 queries at D=768), then uses BLAS.
#: Measured on the dev CPU, one thread, 100k x 768 (bench/bench_flat_batch.py): BLAS is 1.6x faster
#: from 4 queries per call and 6x from 50; one query stays on the scan. csmae sets 4 * 768 once.
BLAS_THRESHOLD = 4 * 768
#: Approximate kinds search the allowed rows exactly when at most this many are allowed ...
EXACT_MAX_ROWS = 4_000
#: ... or when they are less than this share of the stored rows (bench/bench_search.py) ...
EXACT_BELOW = 0.01
#: ... but ivfpq, whose vectors are gathered from disk, only at most this many rows (1M x 768:
#: 9,867 rows took 14 ms from the page cache, its lists with nprobe / share well under 1 ms).
EXACT_MAX_ROWS_DISK = 2_000
#: HNSW under a filter: efSearch / share of allowed rows, at most this.
HNSW_MAX_EF = 2048
#: ivfpq: candidates re-ranked exactly per query (at least k).
RERANK = 100
#: candidate rows re-ranked at once (queries x re-rank depth): bounds the gathered vectors to
#: ~100 MB however many queries come (the 500 tuning queries x depth 1000 held 5.5 GB at 1M)
RERANK_CHUNK_ROWS = 32_768
#: pairs (query, candidate) scored at once in a re-rank: the repeated queries and float32 vectors
#: of a whole chunk were 0.2 GB more at the 5M tuning (each pair's score is the same either way).
RERANK_BLOCK = 4096
_configured = False


def faiss_module() -> Any:
    global _configured
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("csmae index needs FAISS: pip install faiss-cpu (or faiss-gpu)") from e
    if not _configured:  # once, so that a user's own later setting stands
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        _configured = True
    return faiss


def set_search_param(index: Any, name: str, value: int) -> None:
    """Set a search parameter (``efSearch``, ``nprobe``) on a raw FAISS index (benchmarks)."""
    faiss_module().ParameterSpace().set_index_parameter(index, name, value)


def factory_string(kind: str, n: int, dim: int = 768) -> str:
    """FAISS factory string for a kind name (anything else is passed through as a factory string)."""
    if kind == "exact":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    if kind == "hnsw-sq8":  # 8-bit scalar-quantised vectors: ~1/3 of the memory, scores approximate
        return "HNSW32,SQ8"
    nlist = int(max(1, min(65536, 4 * np.sqrt(max(n, 1)))))
    coarse = f"IVF{nlist}_HNSW32" if n >= 200_000 else f"IVF{nlist}"
    if kind == "ivf":
        return f"{coarse},Flat"
    if kind == "ivfpq":  # 4-bit fast-scan PQ: D/8 bytes per vector, trains in seconds (8-bit PQ/OPQ: minutes)
        return f"{coarse},PQ{pq_m(dim)}x4fs"
    return kind


def pq_m(dim: int) -> int:
    """4-bit PQ sub-quantizers: 4 dimensions each (192 = 96 bytes at D=768), an even divisor of ``dim``."""
    m = max(2, dim // 4)
    while dim % m or m % 2:
        m -= 1
    return m


def _bitmap_selector(faiss: Any, rows: np.ndarray, n: int) -> tuple[Any, np.ndarray]:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(bits), bits  # keep bits alive while the selector is used


def _reserve(faiss: Any, inner: Any, n: int) -> None:
    """Room for ``n`` vectors in a flat index up front: adds in chunks (a streamed build) then never
    regrow its code buffer by doubling (a transient 3x the vectors' size)."""
    flat = faiss.downcast_index(inner)
    codes = getattr(flat, "codes", None)
    if n > 0 and codes is not None and hasattr(codes, "resize") and flat.ntotal == 0:
        codes.resize(int(n) * int(flat.code_size))  # capacity kept by the resize back to 0
        codes.resize(0)


class FaissBackend:
    """A FAISS index over row ids (see the module docstring)."""

    name = "faiss"

    def __init__(
        self,
        *,
        index: Any,
        kind: str,
        factory: str,
        params: dict[str, int] | None = None,
        store: VectorStore | None = None,
        rerank: int = 0,
        n_rows: int | None = None,
        tombstones: int = 0,
        legacy: bool = False,
        file: str | None = None,
    ):
        self.faiss = faiss_module()
        self.index = index
        self.kind = kind
        self.factory = factory
        self.params = dict(params or {})
        self.store = store
        self.rerank = int(rerank)
        self.n_rows = int(index.ntotal if n_rows is None else n_rows)  # row ids ever given: 0..n_rows-1
        self.tombstones = int(tombstones)
        self.legacy = legacy  # a csmae < 0.3 folder: FAISS ids = positions, no add/remove
        self.file = file  # the index file in the index folder (last saved or loaded)
        self.dim = int(index.d)
        self.ivf = self.faiss.try_extract_index_ivf(index)
        self.hnsw = self._is_hnsw()

    # ----------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        kind: str,
        *,
        dim: int,
        n_hint: int,
        train: np.ndarray | None = None,
        store_folder: Path | None = None,
        store_dtype: str = "float16",
    ) -> FaissBackend:
        """An empty (trained) backend for ``kind``; ``train`` = L2-normalised sample (IVF/PQ/SQ).

        ``store_folder``: where ivfpq writes its on-disk vectors (default: a temporary folder,
        removed when the backend is discarded, dropped or saved into an index folder)."""
        faiss = faiss_module()
        factory = factory_string(kind, n_hint, dim)
        try:
            inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"FAISS cannot build {factory!r}: {str(e).splitlines()[0]}") from None
        if not inner.is_trained:
            if train is None or len(train) == 0:
                raise ValueError(f"{factory} needs training vectors")
            inner.train(np.ascontiguousarray(train, dtype=np.float32))
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            index = inner
            if kind != "ivfpq":
                try:  # reconstruct(row) for search by id; PQ kinds read the vector store instead
                    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
                except RuntimeError:
                    pass
        else:
            index = faiss.IndexIDMap2(inner)
            _reserve(faiss, inner, n_hint)
        store = None
        rerank = 0
        if kind == "ivfpq":
            if store_folder is None:
                store = VectorStore.scratch(dim=dim, dtype=store_dtype)
            else:
                store = VectorStore(Path(store_folder), dim=dim, dtype=store_dtype, chunks=[])
            rerank = RERANK
        return cls(index=index, kind=kind, factory=factory, store=store, rerank=rerank, n_rows=0)

    def _is_hnsw(self) -> bool:
        faiss = self.faiss
        base = self.index
        if isinstance(faiss.downcast_index(base), faiss.IndexIDMap2 | faiss.IndexIDMap):
            base = faiss.downcast_index(base).index
        return isinstance(faiss.downcast_index(base), faiss.IndexHNSW)

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.index.ntotal) - self.tombstones

    @property
    def approximate(self) -> bool:
        return self.factory != "Flat"

    # ------------------------------------------------------------------ write
    def add(self, rows: np.ndarray, vectors: np.ndarray, items: Any = None) -> None:
        """Append L2-normalised ``vectors`` (R, D) as new row ids ``rows`` (R,) (= n_rows, n_rows+1...)."""
        if self.legacy:
            raise ValueError(
                "this index was built by an older csmae (no row ids): rebuild it with csmae index"
            )
        rows = np.asarray(rows, dtype=np.int64)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors have shape {x.shape}, the index holds D={self.dim}")
        if len(rows) != len(x):
            raise ValueError(f"{len(rows)} row ids for {len(x)} vectors")
        if len(rows) == 0:
            return
        if rows[0] != self.n_rows or not np.array_equal(
            rows, np.arange(self.n_rows, self.n_rows + len(rows))
        ):
            raise ValueError(f"new row ids must continue from {self.n_rows}")
        if self.store is not None:
            self.store.append(int(rows[0]), x)
        self.index.add_with_ids(x, rows)
        self.n_rows += len(rows)

    def remove(self, rows: np.ndarray) -> None:
        if self.legacy:
            raise ValueError(
                "this index was built by an older csmae (no row ids): rebuild it with csmae index"
            )
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if self.hnsw:  # faiss cannot remove from HNSW: tombstones, excluded by every search
            self.tombstones += len(rows)
            return
        try:
            removed = self.index.remove_ids(rows)
        except RuntimeError as e:  # an index type without remove: tombstones too
            log.info("%s cannot remove ids (%s): keeping tombstones", self.factory, str(e).splitlines()[0])
            self.tombstones += len(rows)
            return
        if removed != len(rows):
            log.warning("asked to remove %d rows, FAISS removed %d", len(rows), removed)

    def compact(self, live_rows: np.ndarray) -> FaissBackend:
        """A copy without tombstones (HNSW rebuilt from the live rows, same row ids)."""
        if not self.hnsw or self.tombstones == 0:
            return self
        faiss = self.faiss
        live_rows = np.asarray(live_rows, dtype=np.int64)
        x = self.reconstruct(live_rows)
        inner = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        if not inner.is_trained:
            inner.train(x[: min(len(x), 100_000)])
        index = faiss.IndexIDMap2(inner)
        index.add_with_ids(x, live_rows)
        return FaissBackend(
            index=index,
            kind=self.kind,
            factory=self.factory,
            params=self.params,
            store=self.store,
            rerank=self.rerank,
            n_rows=self.n_rows,
            tombstones=0,
            file=self.file,
        )

    # ------------------------------------------------------------------- read
    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """(R,) live row ids -> (R, D) float32 stored vectors (the on-disk copy for ivfpq)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.store is not None:
            return self.store.gather(rows)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        try:
            return np.asarray(self.index.reconstruct_batch(rows), dtype=np.float32).reshape(
                len(rows), self.dim
            )
        except RuntimeError as e:
            raise ValueError(
                f"{self.factory} cannot give back stored vectors ({str(e).splitlines()[0]})"
            ) from None

    def search_params(self, sel: Any, overrides: dict[str, int] | None = None) -> Any:
        faiss = self.faiss
        params = {**self.params, **(overrides or {})}
        if self.hnsw:
            p = faiss.SearchParametersHNSW(sel=sel)
            if "efSearch" in params:
                p.efSearch = int(params["efSearch"])
            return p
        if self.ivf is not None:
            p = faiss.SearchParametersIVF(sel=sel)
            if "nprobe" in params:
                p.nprobe = int(params["nprobe"])
            return p
        return faiss.SearchParameters(sel=sel)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        where: Filter | None = None,
        params: dict[str, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (Q, k) scores and row ids among ``rows`` (None = every live row), -1 padded.

        ``params`` overrides the tuned efSearch / nprobe / rerank (tuning, benchmarks).
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        nq = len(q)
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_r = np.full((nq, k), -1, dtype=np.int64)
        n_allowed = len(rows) if rows is not None else len(self)
        if n_allowed == 0 or nq == 0:
            return out_s, out_r
        want = min(k, n_allowed)
        stored = max(int(self.index.ntotal), 1)
        if (
            self.approximate
            and rows is not None
            and (
                n_allowed <= EXACT_MAX_ROWS or n_allowed < EXACT_BELOW * stored
                if self.store is None  # in RAM: a scan of the allowed rows is cheap
                else n_allowed <= min(EXACT_MAX_ROWS, EXACT_MAX_ROWS_DISK)  # on disk: gathering is not
            )
            and self._can_reconstruct()
        ):
            s, r = self._exact_subset(q, want, rows)
        else:
            s, r = self._search_index(q, want, rows, params)
            short = (r >= 0).sum(axis=1) < want
            if short.any() and self.approximate and self._can_reconstruct():
                allowed = rows if rows is not None else None
                if allowed is None:
                    allowed = self._all_live_rows()
                if allowed is not None:
                    log.debug(
                        "%d queries short of %d results: exact over the allowed rows", short.sum(), want
                    )
                    s2, r2 = self._exact_subset(q[short], want, allowed)
                    s[short], r[short] = s2, r2
        out_s[:, :want], out_r[:, :want] = s[:, :want], r[:, :want]
        return out_s, out_r

    def _search_index(
        self, q: np.ndarray, k: int, rows: np.ndarray | None, params: dict[str, int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self.faiss
        sel = bits = None
        if rows is not None:
            sel, bits = _bitmap_selector(faiss, rows, max(self.n_rows, int(rows[-1]) + 1))
        rerank = int((params or {}).get("rerank", self.rerank))
        overrides = {k_: v for k_, v in (params or {}).items() if k_ != "rerank"}
        if rows is not None:  # the nearest allowed items lie as far as the (k / share)-th nearest of all
            share = max(len(rows) / max(int(self.index.ntotal), 1), 1e-6)
            if self.hnsw:  # a filtered graph walk meets share-times fewer allowed nodes
                ef = int(overrides.get("efSearch", self.params.get("efSearch", 16)))
                overrides["efSearch"] = int(min(HNSW_MAX_EF, max(ef, k) / share))
            elif self.ivf is not None:  # more lists, of which only the allowed entries are scored
                nprobe = int(overrides.get("nprobe", self.params.get("nprobe", 1)))
                overrides["nprobe"] = int(min(self.ivf.nlist, np.ceil(nprobe / share)))
        kc = max(k, rerank) if self.store is not None and rerank else k
        p = self.search_params(sel, overrides)
        s, r = self.index.search(q, kc, params=p)
        del bits
        if kc > k:
            s, r = self._rerank(q, r, k)
        return s, r

    def _rerank(
        self, q: np.ndarray, cand: np.ndarray, k: int, *, read: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidates from the on-disk vectors; best k per query, a chunk of
        queries at a time (``RERANK_CHUNK_ROWS`` candidates; each query's scores are the same). A
        batch of several chunks (the tuning's) reads the vectors without mapping them (``read``),
        so the store's file is not held in RSS."""
        assert self.store is not None
        step = max(1, RERANK_CHUNK_ROWS // max(1, cand.shape[1]))
        if len(q) > step:
            los = range(0, len(q), step)
            parts = [self._rerank(q[lo : lo + step], cand[lo : lo + step], k, read=True) for lo in los]
            return np.concatenate([s for s, _ in parts]), np.concatenate([r for _, r in parts])
        valid = cand >= 0
        uniq, inv = np.unique(cand[valid], return_inverse=True)
        vecs = self.store.gather(uniq, read=read, stored=True)  # (U, D) float16: half the memory
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        qi = np.nonzero(valid)[0]
        flat = np.empty(len(qi), dtype=np.float32)  # (V,) one score per valid (query, candidate)
        for lo in range(0, len(qi), RERANK_BLOCK):  # (query, vector) pairs a block at a time
            hi = lo + RERANK_BLOCK
            flat[lo:hi] = np.einsum("ij,ij->i", q[qi[lo:hi]], vecs[inv[lo:hi]].astype(np.float32))
        scores[valid] = flat
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(scores, order, axis=1)
        r = np.take_along_axis(cand, order, axis=1)
        r[~np.isfinite(s)] = -1
        return s, r

    def _can_reconstruct(self) -> bool:
        if self.store is not None:
            return True
        if self.ivf is not None:
            return int(self.ivf.direct_map.type) != 0 or self.legacy
        return True

    def _all_live_rows(self) -> np.ndarray | None:
        if self.tombstones:
            return None  # the caller (SearchIndex) always passes rows when there are tombstones
        if isinstance(self.faiss.downcast_index(self.index), self.faiss.IndexIDMap2):
            return np.sort(self.faiss.vector_to_array(self.faiss.downcast_index(self.index).id_map))
        if self.store is not None or self.legacy:
            return np.arange(self.n_rows, dtype=np.int64)  # best effort; IVF removals leave holes
        return None

    def _exact_subset(self, q: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = self.faiss
        s_all = np.empty((len(q), k), np.float32)
        r_all = np.empty((len(q), k), np.int64)
        block = 65_536  # bounded memory for large allowed sets
        best_s = np.full((len(q), k), -np.inf, np.float32)
        best_r = np.full((len(q), k), -1, np.int64)
        for lo in range(0, len(rows), block):
            part = rows[lo : lo + block]
            x = self.reconstruct(part)
            s, i = faiss.knn(q, x, min(k, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
            r = np.where(i >= 0, part[np.clip(i, 0, None)], -1)
            cs = np.concatenate([best_s, s], axis=1)
            cr = np.concatenate([best_r, r], axis=1)
            order = np.argsort(-cs, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(cs, order, axis=1)
            best_r = np.take_along_axis(cr, order, axis=1)
        s_all[:], r_all[:] = best_s, best_r
        return s_all, r_all

    # ------------------------------------------------------------------- tune
    def tune(
        self,
        vectors: np.ndarray | None,
        *,
        target: float,
        n_queries: int = 500,
        seed: int = 0,
        truth: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> float | None:
        """Smallest efSearch / nprobe (and, for ivfpq, re-rank depth) reaching recall@10 ``target``
        vs exact on sampled rows of ``vectors`` (row ids 0..N-1), or against ``truth`` = (queries,
        their exact top-10 row ids); stored in ``params``. None for exact kinds
        (:func:`csmae.retrieval.backends.faiss_tune.tune`)."""
        from csmae.retrieval.backends.faiss_tune import tune

        return tune(self, vectors, target=target, n_queries=n_queries, seed=seed, truth=truth)

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Update efSearch / nprobe (and ``rerank``: ivfpq's re-rank depth)."""
        for name, value in params.items():
            if name == "rerank":
                self.rerank = int(value)
            else:
                self.params[name] = int(value)

    # ------------------------------------------------------------- save/load
    def save(self, folder: Path, *, generation: int = 0, file: str | None = None) -> dict[str, Any]:
        """Write ``index.faiss`` (version 0) or ``index-<generation>.faiss`` into ``folder``
        atomically, after hard-linking ivfpq's vector chunks there when they live elsewhere."""
        folder = Path(folder)
        name = file or index_file_name(generation)
        if self.store is not None and self.store.folder.resolve() != folder.resolve():
            self.store.link_into(folder)
        with atomic_path(folder / name) as tmp:
            self.faiss.write_index(self.index, str(tmp))
        self.file = name
        return self.entry(name)

    def files(self) -> list[str]:
        """The index file and ivfpq's vector chunks, as the index folder holds them."""
        chunks = [c.file for c in self.store.chunks] if self.store is not None else []
        return ([self.file] if self.file else []) + chunks

    def relocate(self, folder: Path) -> None:
        if self.store is not None:
            self.store.moved_to(folder)

    def discard(self) -> None:
        """Remove ivfpq's temporary vector folder of a build that failed (nothing else is outside)."""
        if self.store is not None:
            self.store.release()

    def entry(self, file: str) -> dict[str, Any]:
        e: dict[str, Any] = {
            "backend": self.name,
            "file": file,
            "kind": self.kind,
            "factory": self.factory,
            "n_rows": self.n_rows,
            "tombstones": self.tombstones,
            "rerank": self.rerank,
        }
        if self.store is not None:
            e["vectors"] = self.store.describe()
        return e

    @classmethod
    def load(
        cls, folder: Path, entry: dict[str, Any], *, params: dict[str, int], legacy: bool = False
    ) -> FaissBackend:
        faiss = faiss_module()
        f = Path(folder) / entry.get("file", "index.faiss")
        if not f.exists():
            raise ValueError(f"{folder}: {f.name} is missing (half-written or damaged index folder)")
        try:
            index = faiss.read_index(str(f))
        except RuntimeError as e:
            raise ValueError(f"{f} is corrupted: {str(e).splitlines()[0]}") from None
        store = VectorStore.from_entry(Path(folder), entry["vectors"]) if entry.get("vectors") else None
        return cls(
            index=index,
            kind=str(entry.get("kind", "")),
            factory=str(entry.get("factory", "")),
            params=params,
            store=store,
            rerank=int(entry.get("rerank", 0)),
            n_rows=int(entry.get("n_rows", index.ntotal)),
            tombstones=int(entry.get("tombstones", 0)),
            legacy=legacy,
            file=f.name,
        )

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "backend": self.name,
            "kind": self.kind,
            "factory": self.factory,
            "stored": int(self.index.ntotal),
            "live": len(self),
            "tombstones": self.tombstones,
            "search_params": self.params,
        }
        if self.store is not None:
            d["rerank"] = self.rerank
            d["vectors_on_disk_bytes"] = self.store.nbytes
        return d


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ registration
def index_file_name(generation: int) -> str:
    """``index.faiss`` for a new index folder, ``index-<g>.faiss`` for update ``g``."""
    return "index.faiss" if generation == 0 else f"index-{generation}.faiss"


def _create(
    kind: str,
    *,
    dim: int,
    n_hint: int,
    label_names: list[str],
    train: np.ndarray | None = None,
    name_hint: str = "index",
    store_folder: Path | None = None,
) -> FaissBackend:
    return FaissBackend.create(kind, dim=dim, n_hint=n_hint, train=train, store_folder=store_folder)


def _load(
    folder: Path, entry: dict[str, Any], *, params: dict[str, Any], legacy: bool = False
) -> FaissBackend:
    return FaissBackend.load(folder, entry, params=params, legacy=legacy)


def _index_files(entry: Mapping[str, Any]) -> list[str]:
    return [str(entry["file"])] if entry.get("file") else []


def _entry_files(entry: Mapping[str, Any]) -> list[str]:
    return _index_files(entry) + [str(c["file"]) for c in (entry.get("vectors") or {}).get("chunks", [])]


def _owns_file(name: str) -> bool:
    return (name.startswith("index") and name.endswith(".faiss")) or name.startswith("vectors-")


def _legacy_entry(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """csmae < format 2: FAISS ids = positions, sensor rows contiguous, one ``index.faiss``."""
    return {
        "file": index_file_name(0),
        "kind": manifest.get("index_kind"),
        "factory": manifest.get("factory"),
    }


BACKEND = BackendSpec(
    name="faiss",
    create=_create,
    load=_load,
    options=(BackendOption("store_folder"),),  # ivfpq's on-disk vectors (Python API; default: temporary)
    entry_files=_entry_files,
    required_files=_index_files,
    owns_file=_owns_file,
    home="lives in the index folder",
    kinds="exact | hnsw | hnsw-sq8 | ivf | ivfpq | FAISS factory string",
    default=True,
    legacy_entry=_legacy_entry,
)
