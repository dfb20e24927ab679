"""An on-disk, memory-mapped copy of the vectors by row id, for exact re-ranking beyond RAM.

Rows are append-only, so the store is a list of immutable chunk files, each holding a contiguous
range of row ids (``vectors-000000.f16``: raw little-endian float16 or float32, C order, no header).
``index add`` writes one new chunk; existing chunks are never rewritten, which keeps every older
index manifest valid (crash safety) and the cost of an add proportional to what is added.
Only the pages a query touches are read (the OS page cache keeps the hot ones); large gathers read
with ``preadv`` instead of the map (:data:`PREAD_ROWS`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import atomic_path

_DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class Chunk:
    file: str
    start: int  # first row id
    rows: int


#: a gather of at least this many rows reads them with ``preadv`` (as a batch re-rank does, e.g. the
#: tuning's, whatever its size): a read through the map brings whole page-cache folios (up to 2 MB,
#: and fault-around) into this process's RSS, so 2,000 scattered rows of a 500k x 768 float16 store
#: mapped all of its 0.73 GB (Linux 6.18); fewer rows (one query's candidates) come from the map,
#: about twice as quick for 1,000 rows.
PREAD_ROWS = 4096


class VectorStore:
    """Memory-mapped vectors (N, D) by row id, in chunk files of one folder."""

    def __init__(self, folder: Path, *, dim: int, dtype: str, chunks: list[Chunk]):
        if dtype not in _DTYPES:
            raise ValueError(f"vector store dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        self.folder = Path(folder)
        self.dim = dim
        self.dtype = dtype
        self.chunks = chunks
        self._maps: list[np.ndarray] = []
        for c in chunks:
            f = self.folder / c.file
            want = c.rows * dim * np.dtype(_DTYPES[dtype]).itemsize
            if not f.exists():
                raise ValueError(f"{self.folder}: vector file {c.file} is missing")
            if f.stat().st_size != want:
                raise ValueError(
                    f"{f}: {f.stat().st_size} bytes, expected {want} ({c.rows} rows x D={dim} {dtype})"
                )
            self._maps.append(np.memmap(f, dtype=_DTYPES[dtype], mode="r", shape=(c.rows, dim)))
        self._starts = np.array([c.start for c in chunks], dtype=np.int64)
        self._scratch: weakref.finalize | None = None

    @classmethod
    def scratch(cls, *, dim: int, dtype: str) -> VectorStore:
        """An empty store in a new temporary folder, removed with the store (or by :meth:`release`)
        unless the vectors are saved into an index folder first."""
        folder = Path(tempfile.mkdtemp(prefix="csmae-vectors-"))
        store = cls(folder, dim=dim, dtype=dtype, chunks=[])
        store._scratch = weakref.finalize(store, shutil.rmtree, str(folder), True)
        return store

    def release(self) -> None:
        """Remove the temporary folder of a :meth:`scratch` store (nothing for a store in an index)."""
        if self._scratch is not None:
            self._scratch()

    def link_into(self, folder: Path) -> None:
        """Hard-link (or copy) every chunk into ``folder`` (an index folder being written)."""
        for c in self.chunks:
            dst = Path(folder) / c.file
            if dst.exists():
                continue
            try:
                os.link(self.folder / c.file, dst)
            except OSError:
                shutil.copy2(self.folder / c.file, dst)

    def moved_to(self, folder: Path) -> None:
        """The chunks now live in ``folder``: a scratch folder is removed (open maps stay valid)."""
        self.release()
        self._scratch = None
        self.folder = Path(folder)

    @property
    def n_rows(self) -> int:
        return int(self.chunks[-1].start + self.chunks[-1].rows) if self.chunks else 0

    @property
    def nbytes(self) -> int:
        return sum(c.rows for c in self.chunks) * self.dim * np.dtype(_DTYPES[self.dtype]).itemsize

    def gather(self, rows: np.ndarray, *, read: bool | None = None, stored: bool = False) -> np.ndarray:
        """(R,) row ids -> (R, D) float32 (any order, repeats allowed); ``stored``: in the store's
        own dtype (float16: half the memory). ``read``: True reads with ``preadv`` (nothing
        mapped), False through the map, None: by :data:`PREAD_ROWS`."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=_DTYPES[self.dtype] if stored else np.float32)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise IndexError(f"row ids outside the vector store (0..{self.n_rows - 1})")
        which = np.searchsorted(self._starts, rows, side="right") - 1
        for ci in np.unique(which):
            sel = np.flatnonzero(which == ci)
            local = rows[sel] - self._starts[ci]
            order = np.argsort(local, kind="stable")  # sequential page reads
            if read or (read is None and len(rows) >= PREAD_ROWS):
                out[sel[order]] = self._read_rows(int(ci), local[order])
            else:
                out[sel[order]] = self._maps[ci][local[order]]
        return out

    def _read_rows(self, ci: int, local: np.ndarray) -> np.ndarray:
        """(R, D) rows ``local`` (sorted) of chunk ``ci``, read with ``preadv`` a run of consecutive
        rows at a time into one buffer (nothing mapped, so nothing of the file counted in RSS)."""
        row_bytes = self.dim * np.dtype(_DTYPES[self.dtype]).itemsize
        buf = np.empty((len(local), self.dim), dtype=_DTYPES[self.dtype])
        view = memoryview(buf.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # (R * D * itemsize,) bytes
        cut = np.flatnonzero(np.diff(local) != 1) + 1  # (runs - 1,) where a run of rows ends
        firsts, lasts = np.r_[0, cut].tolist(), np.r_[cut, len(local)].tolist()
        path = self.folder / self.chunks[ci].file
        with open(path, "rb", buffering=0) as f:
            for a, b in zip(firsts, lasts, strict=True):
                want = (b - a) * row_bytes
                got = os.preadv(f.fileno(), [view[a * row_bytes : b * row_bytes]], int(local[a]) * row_bytes)
                if got != want:
                    raise ValueError(f"{path}: short read ({got} of {want} bytes at row {int(local[a])})")
        return buf

    def append(self, start: int, vectors: np.ndarray) -> Chunk:
        """Write ``vectors`` as a new chunk for rows [start, start + R) (atomically) and map it."""
        if start != self.n_rows:
            raise ValueError(f"new rows must start at {self.n_rows}, got {start}")
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"vectors-{start:012d}.{'f16' if self.dtype == 'float16' else 'f32'}"
        with atomic_path(self.folder / name) as tmp:
            np.ascontiguousarray(vectors, dtype=_DTYPES[self.dtype]).tofile(tmp)
        c = Chunk(file=name, start=start, rows=len(vectors))
        self.chunks.append(c)
        self._maps.append(
            np.memmap(self.folder / name, dtype=_DTYPES[self.dtype], mode="r", shape=(c.rows, self.dim))
        )
        self._starts = np.append(self._starts, start)
        return c

    def describe(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "dim": self.dim,
            "chunks": [{"file": c.file, "start": c.start, "rows": c.rows} for c in self.chunks],
        }

    @classmethod
    def from_entry(cls, folder: Path, entry: dict[str, Any]) -> VectorStore:
        chunks = [Chunk(file=c["file"], start=int(c["start"]), rows=int(c["rows"])) for c in entry["chunks"]]
        return cls(folder, dim=int(entry["dim"]), dtype=str(entry["dtype"]), chunks=chunks)
