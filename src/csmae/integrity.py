"""Checksums of artefact files, recorded in manifests when written and verified before use.

Every artefact folder csmae writes (prepared store, embeddings, index, model) lists its files in
``manifest.json`` under ``"checksums"``::

    "checksums": {"index.faiss": {"bytes": 3072000045, "sha256": "9f2c..."}, ...}

and a training checkpoint ``X.ckpt`` has the same record in ``X.ckpt.checksum.json`` beside it.

Why SHA-256: measured on the dev CPU (Zen 4, SHA-NI) hashlib's OpenSSL SHA-256 streams at
~1.9 GB/s against ~1.3 GB/s for BLAKE2b (bench/README.md "## integrity"). xxHash3 is ~10x faster
still but is another dependency and no standard tool checks it, while ``sha256sum`` does.
Files are read in 4 MiB chunks (constant memory); several files are hashed on threads
(hashlib releases the GIL).

Artefacts written before checksums existed still load; a warning is logged once per folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.errors import IntegrityError as IntegrityError

log = logging.getLogger(__name__)

ALGORITHM = "sha256"
CHECKSUMS = "checksums"
CHUNK = 4 << 20
_warned: set[str] = set()
_cache: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> digest


@dataclass(frozen=True)
class FileCheck:
    """The outcome of checking one file: ``ok`` or the ``reason`` it failed."""

    name: str
    ok: bool
    reason: str = ""
    bytes: int = 0


def file_digest(path: str | os.PathLike[str], *, algorithm: str = ALGORITHM) -> str:
    """Hex digest of a file, read in chunks (memoised per process on inode, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (f"{algorithm}:{p.resolve()}", st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    h = hashlib.new(algorithm)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(p, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    digest = h.hexdigest()
    if len(_cache) > 256:
        _cache.clear()
    _cache[key] = digest
    return digest


def file_entry(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"bytes": size, "sha256": digest}`` of one file."""
    return {"bytes": Path(path).stat().st_size, ALGORITHM: file_digest(path)}


def _threads(n_files: int) -> int:
    return max(1, min(n_files, os.cpu_count() or 1, 8))


def checksum_files(folder: str | os.PathLike[str], names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Checksum entries of ``names`` (paths relative to ``folder``), hashed on threads."""
    folder = Path(folder)
    names = list(dict.fromkeys(names))
    with ThreadPoolExecutor(_threads(len(names))) as pool:
        entries = list(pool.map(lambda n: file_entry(folder / n), names))
    return dict(zip(names, entries, strict=True))


def _expected_digest(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    for algo in (ALGORITHM, "blake2b", "sha512", "sha1"):
        if isinstance(entry.get(algo), str):
            return algo, entry[algo]
    return None


def check_file(path: Path, entry: Mapping[str, Any], *, full: bool = True) -> FileCheck:
    """Check one file against its checksum entry (size always; digest when ``full``)."""
    name = path.name
    if not path.is_file():
        return FileCheck(name, False, "missing")
    size = path.stat().st_size
    want = entry.get("bytes")
    if want is not None and size != int(want):
        what = "truncated" if size < int(want) else "longer than recorded"
        return FileCheck(name, False, f"{what}: {size} bytes, the manifest records {int(want)}", size)
    if full:
        exp = _expected_digest(entry)
        if exp is None:
            return FileCheck(name, False, "the manifest records no digest for it", size)
        algo, digest = exp
        got = file_digest(path, algorithm=algo)
        if got != digest:
            return FileCheck(name, False, f"{algo} mismatch: the bytes changed since it was written "
                             f"(expected {digest[:12]}..., got {got[:12]}...)", size)
    return FileCheck(name, True, "", size)


def verify_files(folder: str | os.PathLike[str], checksums: Mapping[str, Mapping[str, Any]], *,
                 full: bool = True, only: Iterable[str] | None = None) -> list[FileCheck]:
    """Check the files of ``checksums`` in ``folder`` (threads over files); one result per file."""
    folder = Path(folder)
    names = list(checksums) if only is None else [n for n in only if n in checksums]
    with ThreadPoolExecutor(_threads(len(names))) as pool:
        return list(pool.map(lambda n: check_file(folder / n, checksums[n], full=full), names))


def read_verified(path: str | os.PathLike[str], entry: Mapping[str, Any], *, what: str = "file",
                  alloc: Callable[[int], Any] = bytearray) -> Any:
    """The bytes of a small file (a shard), read once and checked against its checksum entry.

    Parsing the returned buffer (not the file again) means what was checked is what is used.
    ``alloc(size)`` makes the writable buffer to read into (e.g. ``pyarrow.allocate_buffer``, so
    that Arrow owns the memory it parses: Arrow threads releasing a Python-owned buffer while the
    interpreter exits aborted the process now and then).
    """
    p = Path(path)
    size = p.stat().st_size
    want = entry.get("bytes")
    if want is not None and size != int(want):
        what_ = "truncated" if size < int(want) else "longer than recorded"
        raise IntegrityError(f"{what} {p} is damaged ({what_}: {size} bytes, the manifest "
                             f"records {int(want)}); re-create it", path=p)
    buf = alloc(size)
    view = memoryview(buf).cast("B")
    with open(p, "rb", buffering=0) as f:
        n = 0
        while n < size and (k := f.readinto(view[n:])):
            n += k
    if n != size:
        raise IntegrityError(f"{what} {p} changed while being read ({n} of {size} bytes)", path=p)
    exp = _expected_digest(entry)
    if exp is not None:
        algo, digest = exp
        got = hashlib.new(algo, view).hexdigest()
        if got != digest:
            raise IntegrityError(f"{what} {p} is damaged ({algo} mismatch: its bytes changed since it "
                                 "was written); re-create it", path=p)
    return buf


def recorded(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The manifest's checksum entries, or None when it records none (an older artefact)."""
    sums = manifest.get(CHECKSUMS)
    return dict(sums) if isinstance(sums, Mapping) and sums else None


def warn_unverified(folder: str | os.PathLike[str], what: str) -> None:
    """Log once per folder that an artefact has no checksums (written before csmae recorded them)."""
    key = str(Path(folder).resolve())
    if key not in _warned:
        _warned.add(key)
        log.warning("%s: this %s records no checksums (written by an older csmae); its files are "
                    "used unverified. Rewrite it to get them checked.", folder, what)


def verify_manifest_files(folder: str | os.PathLike[str], manifest: Mapping[str, Any], *,
                          what: str = "artefact", full: bool = True,
                          only: Iterable[str] | None = None) -> bool:
    """Verify ``folder``'s files against ``manifest["checksums"]`` before trusting their bytes.

    Args:
        folder: the artefact folder. manifest: its parsed manifest.json.
        what: the kind of artefact, for messages ("index", "model folder", ...).
        full: hash the files (True) or only compare sizes (False: cheap).
        only: check just these files (names in the checksums).

    Returns:
        True if verified, False when the manifest records no checksums (logged once).

    Raises:
        IntegrityError: naming every file that is missing, resized or changed.
    """
    sums = recorded(manifest)
    if sums is None:
        warn_unverified(folder, what)
        return False
    bad = [c for c in verify_files(folder, sums, full=full, only=only) if not c.ok]
    if bad:
        first = Path(folder) / bad[0].name
        lines = "; ".join(f"{Path(folder) / c.name}: {c.reason}" for c in bad)
        raise IntegrityError(
            f"{what} {folder} is corrupted: {lines}. Do not use it: rebuild it, or restore it from a "
            f"copy (`csmae verify {folder}` lists every file)", path=first,
        )
    return True


def finite_rows(vectors: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """(N,) bool: rows of an (N, D) array whose values are all finite (chunked: little memory)."""
    n = len(vectors)
    out = np.ones(n, dtype=bool)
    for lo in range(0, n, chunk):
        out[lo:lo + chunk] = np.isfinite(vectors[lo:lo + chunk]).all(axis=1)
    return out
