"""Finished searches of an evaluation, kept on disk so that a killed run resumes where it stopped.

A full-scale evaluation searches four sensor pairs for minutes each. Each finished search (the exact
top-k scores and archive rows of every query) is written atomically to ``DIR/<q>-<a>.npz`` with a
key: a digest of everything its result depends on (query and archive vectors, k, exclusions). A
later run with the same inputs loads it instead of searching again; a file with another key, or one
that cannot be read, is searched again (and replaced).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from csmae.atomic import atomic_path

log = logging.getLogger(__name__)


def array_digest(x: np.ndarray) -> str:
    """Digest of an array's dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=16)
    x = np.ascontiguousarray(x)
    h.update(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def search_key(query_digest: str, archive_digest: str, k: int, exclude: np.ndarray | None) -> str:
    """Key of one exact search: inputs and k (the candidate precision does not change results)."""
    excl = "none" if exclude is None else array_digest(np.asarray(exclude, dtype=np.int64))
    return hashlib.blake2b(f"{query_digest}|{archive_digest}|{k}|{excl}".encode(), digest_size=16).hexdigest()


class SearchCache:
    """Folder of finished searches (see module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name.replace('->', '-')}.npz"

    def load(self, name: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored (scores, rows) of search ``name`` if it was made from the same inputs."""
        path = self._path(name)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    log.info("%s: made from other inputs; searching again", path)
                    return None
                return z["scores"], z["rows"].astype(np.int64)
        except Exception as e:  # a damaged file is redone, never trusted
            log.warning("%s cannot be read (%s); searching again", path, e)
            return None

    def save(self, name: str, key: str, scores: np.ndarray, rows: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(name)) as tmp:
            small = rows.size == 0 or int(rows.max()) < 2**31
            np.savez(tmp, key=np.array(key), scores=scores, rows=rows.astype(np.int32) if small else rows)
