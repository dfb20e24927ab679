"""The evaluation's vectors block by block: every direction's exact top-k in bounded memory.

The ranking is defined pair by pair (:mod:`csmae.retrieval.topk`: the float64 inner product of the
L2-normalised float32 vectors, ties broken by archive index), so the exact top-k over an archive is
the merge of the exact top-k over consecutive blocks of it (:func:`merge_topk` orders by score, then
index): the result is identical to one search over the whole archive, whatever the block sizes.

A source holds the per-row columns (ids, sensors, splits, labels: tens of bytes a row) and hands
out the vectors of chosen rows in blocks:

* :class:`MemorySource`: an in-memory :class:`Embeddings` (a block is a slice);
* :class:`FolderSource`: an embeddings folder read shard by shard (:mod:`emb_stream`; checksums
  verified on every read), never the whole folder's vectors at once;
* :class:`CrossSource`: cross-model pairs, each sensor's rows from its own source.

Peak memory of :func:`search_blocks` (the budgets below, at D = 768): one query chunk
(``QUERY_BYTES``, 256 MB), one block per archive read in the pass (``ARCHIVE_BYTES`` in all,
512 MB), :func:`exact_topk`'s copies of a block (up to 1.5x one block) and its score tile
(``TILE_BYTES``, 256 MB), one shard while reading, and the per-row columns (ids, sensors, splits,
labels: ~125 bytes a row measured). Archives under the budget are searched in one block, as before.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from csmae.retrieval.emb_stream import ShardedEmbeddings
from csmae.retrieval.embeddings import Embeddings
from csmae.retrieval.normalize import row_norms
from csmae.retrieval.topk import TopKStats, exact_topk, merge_topk

#: query vectors held at once (float32): the query side is searched in chunks of this size
QUERY_BYTES = 256 << 20
#: archive vectors held at once (float32), shared by the archives read in one pass (one block
#: each); exact_topk adds up to 1.5x a block (its padded / bf16 copies)
ARCHIVE_BYTES = 512 << 20
#: one score tile of exact_topk (queries per tile x archive block x 8 bytes)
TILE_BYTES = 256 << 20


class VectorSource(Protocol):
    """Per-row columns (``rows``: ``rows.vectors`` may have width 0) and vectors on demand."""

    rows: Embeddings
    dim: int
    finite: np.ndarray  # (M,) bool: the row's vector is all finite

    @property
    def manifest(self) -> dict[str, Any]: ...

    def blocks(
        self, wanted: Mapping[str, np.ndarray], rows: Mapping[str, int]
    ) -> Iterator[tuple[str, int, np.ndarray]]:
        """(name, offset, (R, D) float32 L2-normalised vectors of ``wanted[name][offset:offset+R]``)
        for every name, each name's blocks in order (ascending positions), of ``rows[name]``
        rows (the last one fewer)."""
        ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """:func:`~csmae.retrieval.topk.l2_normalize` of a float32 array in place (the same values,
    no second copy of a block); other float dtypes are normalised in their own precision."""
    np.divide(x, np.maximum(row_norms(x), 1e-12)[:, None], out=x)
    return x


def columns(rows: Embeddings, positions: np.ndarray) -> Embeddings:
    """The per-row columns of ``positions`` (vectors of width 0)."""
    empty = np.zeros((len(positions), 0), np.float32)
    return Embeddings(rows.ids[positions], rows.sensors[positions], rows.splits[positions],
                      rows.labels[positions], empty, rows.manifest)  # fmt: skip


@dataclass
class MemorySource:
    """An in-memory :class:`Embeddings` as a source (blocks are slices, normalised on the way)."""

    emb: Embeddings

    def __post_init__(self) -> None:
        from csmae.integrity import finite_rows

        self.rows, self.dim = self.emb, self.emb.dim
        self.finite = finite_rows(self.emb.vectors)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.emb.manifest

    def blocks(
        self, wanted: Mapping[str, np.ndarray], rows: Mapping[str, int]
    ) -> Iterator[tuple[str, int, np.ndarray]]:
        for name, pos in wanted.items():
            step = max(1, rows[name])
            for lo in range(0, len(pos), step):
                yield name, lo, normalize_rows(self.emb.vectors[pos[lo : lo + step]])  # a copy


@dataclass
class FolderSource:
    """An embeddings folder read shard by shard (:func:`csmae.retrieval.emb_stream.scan`)."""

    se: ShardedEmbeddings

    def __post_init__(self) -> None:
        self.rows, self.dim, self.finite = self.se.rows, self.se.dim, self.se.finite

    @property
    def manifest(self) -> dict[str, Any]:
        return self.se.manifest

    def fingerprint(self, positions: np.ndarray) -> str | None:
        """Digest of the shards' recorded checksums and ``positions``; None without checksums."""
        if any(c is None for _, c, _ in self.se.shards):
            return None
        h = hashlib.blake2b(digest_size=16)
        h.update(f"csmae-folder-rows-1|{self.dim}|".encode())
        h.update(json.dumps([c for _, c, _ in self.se.shards], sort_keys=True).encode())
        h.update(np.ascontiguousarray(positions, dtype=np.int64).tobytes())
        return h.hexdigest()

    def blocks(
        self, wanted: Mapping[str, np.ndarray], rows: Mapping[str, int]
    ) -> Iterator[tuple[str, int, np.ndarray]]:
        kept = self.se.kept
        if kept is not None:  # rows the scan kept (e.g. the queries): no pass over the folder
            at = {n: np.searchsorted(kept[0], p) for n, p in wanted.items()}
            have = {n: bool(len(p)) and bool((at[n] < len(kept[0])).all()) and
                    bool((kept[0][np.minimum(at[n], len(kept[0]) - 1)] == p).all())
                    for n, p in wanted.items()}  # fmt: skip
            for n in [n for n in wanted if have[n]]:
                step = max(1, rows[n])
                for lo in range(0, len(wanted[n]), step):
                    yield n, lo, normalize_rows(kept[1][at[n][lo : lo + step]])  # a copy
            wanted = {n: p for n, p in wanted.items() if not have[n]}
            if not wanted:
                return
        names = [n for n, p in wanted.items() if len(p)]
        block: dict[str, np.ndarray | None] = dict.fromkeys(names)
        fill = dict.fromkeys(names, 0)  # rows of the current block filled
        done = dict.fromkeys(names, 0)  # rows of the name handed out so far
        for start, v in self.se.vectors():  # one pass over the shards for every name
            for n in names:
                pos = wanted[n]
                lo, hi = (int(x) for x in np.searchsorted(pos, [start, start + len(v)]))
                while lo < hi:  # into one preallocated block per name: no concatenated copies
                    b = block[n]
                    if b is None:
                        b = block[n] = np.empty((min(rows[n], len(pos) - done[n]), self.dim), np.float32)
                    take = min(hi - lo, len(b) - fill[n])
                    b[fill[n] : fill[n] + take] = v[pos[lo : lo + take] - start]
                    fill[n] += take
                    lo += take
                    if fill[n] == len(b):
                        block[n], fill[n] = None, 0
                        yield n, done[n], normalize_rows(b)
                        done[n] += len(b)
                        del b
            del v


@dataclass
class CrossSource:
    """Cross-model pairs: rows of sensor ``s`` (one contiguous run of ``rows``) come from
    ``parts[s]``, at the part's positions ``where[s]``."""

    rows: Embeddings
    parts: dict[str, VectorSource]
    where: dict[str, np.ndarray]  # sensor -> positions in parts[s] of that sensor's rows, in order
    dim: int

    def __post_init__(self) -> None:
        self.first = {s: int(np.flatnonzero(self.rows.sensors == s)[0]) if len(self.where[s]) else 0
                      for s in self.parts}  # fmt: skip
        self.finite = np.ones(len(self.rows), bool)
        for s, pos in self.where.items():
            self.finite[self.first[s] : self.first[s] + len(pos)] = self.parts[s].finite[pos]

    @property
    def manifest(self) -> dict[str, Any]:
        return self.rows.manifest

    def blocks(
        self, wanted: Mapping[str, np.ndarray], rows: Mapping[str, int]
    ) -> Iterator[tuple[str, int, np.ndarray]]:
        for s, part in self.parts.items():
            lo, hi = self.first[s], self.first[s] + len(self.where[s])
            mine = {n: p for n, p in wanted.items() if len(p) and lo <= p[0] and p[-1] < hi}
            if mine:
                yield from part.blocks({n: self.where[s][p - lo] for n, p in mine.items()}, rows)

    def fingerprint(self, positions: np.ndarray) -> str | None:
        """The fingerprint of the part that holds ``positions`` (one sensor's rows)."""
        for s, part in self.parts.items():
            lo, hi = self.first[s], self.first[s] + len(self.where[s])
            if len(positions) and lo <= positions[0] and positions[-1] < hi:
                fp = getattr(part, "fingerprint", None)
                return None if fp is None else fp(self.where[s][positions - lo])
        return None


def as_source(emb: Embeddings | VectorSource) -> VectorSource:
    return MemorySource(emb) if isinstance(emb, Embeddings) else emb


def check_finite(source: VectorSource, positions: np.ndarray, what: str) -> None:
    """Refuse NaN/inf vectors among the rows an evaluation searches, naming a few."""
    bad = positions[~source.finite[positions]]
    if len(bad):
        rows = source.rows
        shown = ", ".join(f"{rows.ids[i]}/{rows.sensors[i]}" for i in bad[:5])
        raise ValueError(
            f"{len(bad)} {what} vector(s) have NaN/inf values (e.g. {shown}): the model or "
            "its input is broken; re-embed them or leave them out of the splits evaluated"
        )


def fingerprints(source: VectorSource, wanted: Mapping[str, np.ndarray]) -> dict[str, str]:
    """A key of each name's normalised vectors (what a finished search depends on, for resuming).

    A folder whose manifest records its shards' checksums (verified on every read): a digest of
    those checksums and the chosen rows, with no pass over the vectors. Otherwise the
    :func:`csmae.retrieval.resume.array_digest` of the normalised vectors (one pass)."""
    fp = getattr(source, "fingerprint", None)
    if fp is not None:
        got = {n: fp(pos) for n, pos in wanted.items()}
        if all(v is not None for v in got.values()):
            return got  # type: ignore[return-value]
    hs = {}
    for n, pos in wanted.items():
        hs[n] = hashlib.blake2b(digest_size=16)
        hs[n].update(f"{np.dtype(np.float32).str}{(len(pos), source.dim)}".encode())
    for n, _, v in source.blocks(wanted, dict.fromkeys(wanted, _rows_of(QUERY_BYTES // 4, source.dim))):
        hs[n].update(np.ascontiguousarray(v).view(np.uint8).reshape(-1).data)
    return {n: h.hexdigest() for n, h in hs.items()}


def _rows_of(nbytes: int, dim: int) -> int:
    return max(1, nbytes // (4 * max(dim, 1)))


def block_rows(n_rows: int, want: int, k: int) -> int:
    """Rows per archive block: about ``want``, equal blocks, the last one too holding >= k + 1
    rows (so that every block gives its full top-k with one own item excluded)."""
    n = max(1, n_rows // max(1, want))
    while n > 1:
        size = -(-n_rows // n)
        if n_rows - (n - 1) * size >= k + 1:
            return size
        n -= 1
    return max(1, n_rows)


@dataclass
class Direction:
    """One search of the protocol: the queries ``query`` over the archive ``archive``."""

    name: str
    k: int
    exclude: np.ndarray | None  # (Q, 1) archive position of each query's own item (-1: none)
    query: str  # key of the query positions in ``search_blocks``'s ``queries``
    archive: str  # key of the archive positions in ``search_blocks``'s ``archives``
    stats: TopKStats
    seconds: float = 0.0


def _rounds(queries: Mapping[str, np.ndarray], q_rows: int) -> list[list[tuple[str, int, int]]]:
    """Query chunks ``(name, start, stop)`` of at most ``q_rows`` rows, one name per round: the
    directions of a query sensor finish (and are kept for resuming) before the next one starts."""
    return [[(name, lo, min(len(pos), lo + q_rows))] for name, pos in queries.items()
            for lo in range(0, len(pos), q_rows)]  # fmt: skip


def search_blocks(
    source: VectorSource,
    queries: Mapping[str, np.ndarray],
    archives: Mapping[str, np.ndarray],
    directions: list[Direction],
    *,
    precision: str,
    block_size: int,
    query_bytes: int | None = None,
    archive_bytes: int | None = None,
    tile_bytes: int | None = None,
    progress: Callable[[str, int], None] | None = None,
    on_done: Callable[[Direction, tuple[np.ndarray, np.ndarray]], None] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact top-k of each direction's query rows over its archive rows, block by block.

    The queries are taken one query set at a time, in chunks of at most ``QUERY_BYTES`` (usually
    one); per chunk one pass over the source reads the queries and one more every archive block
    once; each block's exact top-k (:func:`exact_topk`) is merged into the running top-k of every
    direction whose queries are in the round. Blocks hold at least k + 1 rows (one own item may be
    excluded), so every block gives its full top-k. ``on_done`` is called as each direction
    finishes. Budgets default to :data:`QUERY_BYTES`, :data:`ARCHIVE_BYTES`, :data:`TILE_BYTES`.
    Returns name -> (scores (Q, k) float64, archive positions (Q, k) int64)."""
    q_rows = _rows_of(QUERY_BYTES if query_bytes is None else query_bytes, source.dim)
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    used_q = {d.query: queries[d.query] for d in directions}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for d in directions:
        n = len(queries[d.query])
        out[d.name] = (np.empty((n, d.k)), np.empty((n, d.k), np.int64))
    for rnd in _rounds(used_q, q_rows):
        wanted = {f"{name}:{lo}": used_q[name][lo:hi] for name, lo, hi in rnd}
        qv = {key: v for key, _, v in source.blocks(wanted, {k: len(p) for k, p in wanted.items()})}
        chunk = {name: (lo, hi, qv[f"{name}:{lo}"]) for name, lo, hi in rnd}
        todo = [d for d in directions if d.query in chunk]
        used = {d.archive: archives[d.archive] for d in todo}
        k_max = max(d.k for d in todo)
        a_rows = _rows_of(
            (ARCHIVE_BYTES if archive_bytes is None else archive_bytes) // len(used), source.dim
        )
        sizes = {a: block_rows(len(p), a_rows, k_max) for a, p in used.items()}
        best: dict[str, tuple[np.ndarray, np.ndarray] | None] = {d.name: None for d in todo}
        for a, off, av in source.blocks(used, sizes):  # one block per archive held at a time
            last = off + len(av) == len(used[a])
            tile = max(1, min(block_size, tile_bytes // (8 * len(av))))
            for d in (d for d in todo if d.archive == a):
                t0 = time.perf_counter()
                q_lo, q_hi, vecs = chunk[d.query]
                ex = None
                if d.exclude is not None:
                    e = d.exclude[q_lo:q_hi]
                    ex = np.where((e >= off) & (e < off + len(av)), e - off, -1)
                prog = (lambda n, _n=d.name: progress(_n, n)) if progress is not None and last else None
                s, i = exact_topk(vecs, av, d.k, exclude=ex, precision=precision, block_size=tile,
                                  progress=prog, stats=d.stats)  # fmt: skip
                prev = best[d.name]
                best[d.name] = (s, i + off) if prev is None else merge_topk([prev, (s, i)], [0, off], d.k)
                d.seconds += time.perf_counter() - t0
        for d in todo:
            top = best[d.name]
            assert top is not None
            q_lo, q_hi, _ = chunk[d.query]
            out[d.name][0][q_lo:q_hi], out[d.name][1][q_lo:q_hi] = top
            if on_done is not None and q_hi == len(queries[d.query]):
                on_done(d, out[d.name])
        del qv, chunk
    return out
