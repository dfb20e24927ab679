"""Atomic artefact writes: a file or folder is either complete under its final name or absent.

Everything csmae writes for users (manifests, shards, reports, pictures, model folders) goes
through these helpers: write under a hidden temporary name beside the target, then ``os.replace``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: written into every temporary artefact folder: who is writing it (host, pid)
OWNER_FILE = ".csmae-writer.json"
#: a temporary folder without an owner file is removed only if its pid is dead and it is this old
LEGACY_STALE_S = 3600.0


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); it replaces ``path`` if the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def replace_folder(src: Path, dst: Path) -> None:
    """Move the complete folder ``src`` to ``dst``; an old ``dst`` is swapped out, then deleted."""
    if dst.exists():
        old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists on this machine (or we may not signal it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_owner(tmp: Path) -> None:
    """Record this host and process in a temporary folder (see :func:`clean_stale_temps`)."""
    (tmp / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "started": time.time()}))


def _is_stale(folder: Path, pid: int) -> bool:
    if pid == os.getpid() or pid_alive(pid):
        return False
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        owner = None
    if isinstance(owner, dict):  # another host's pid says nothing about processes here
        return owner.get("host") == socket.gethostname() and int(owner.get("pid", -1)) == pid
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return False
    return age > LEGACY_STALE_S


def clean_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Remove ``TARGET.tmp-PID`` / ``TARGET.old-PID`` folders left by killed writers of ``target``.

    Only folders whose name matches exactly that pattern and whose writer process is dead are
    removed: the owner file must name this host and that pid (folders from before owner files:
    the pid is dead here and the folder is over an hour old). Returns the folders removed.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(target.name)}\.(?:tmp|old)-(\d+)$")
    removed = []
    for p in parent.iterdir():
        m = pattern.match(p.name)
        if m is None or not p.is_dir() or p.is_symlink():
            continue
        if _is_stale(p, int(m.group(1))):
            log.warning("removing %s, left by a csmae process that was killed while writing %s",
                        p, target)
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
