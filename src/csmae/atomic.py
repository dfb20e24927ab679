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
from collections.abc import Callable, Iterator
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


#: files whose ``"kind"`` says which csmae artefact a folder is, in the order they are asked
KIND_FILES = ("manifest.json", "config.json", "synth.json")


def artefact_kind(folder: str | os.PathLike[str]) -> str | None:
    """The ``kind`` a csmae artefact folder records (``"csmae-store"``...), None if it records none."""
    folder = Path(folder)
    for name in KIND_FILES:
        f = folder / name
        if f.is_symlink() or not f.is_file():
            continue
        try:
            kind = json.loads(f.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(kind, str) and kind.startswith("csmae-"):
            return kind
    return None


def check_replaceable(dst: str | os.PathLike[str], kind: str | None) -> None:
    """Raise FileExistsError unless ``dst`` may be replaced by a csmae artefact of ``kind``.

    Absent, an empty folder, or a folder whose manifest says ``kind``: fine. A symlink, a file, or
    a folder of anything else (user files, another kind of artefact) is never replaced.
    """
    dst = Path(dst)
    if not os.path.lexists(dst):
        return
    what = f"a csmae {kind.removeprefix('csmae-')}" if kind else "a csmae artefact"
    advice = "nothing was replaced; move it away or choose another output"
    if dst.is_symlink():
        raise FileExistsError(f"{dst} is a symbolic link; --overwrite replaces only {what} folder ({advice})")
    if not dst.is_dir():
        raise FileExistsError(f"{dst} is not a folder; --overwrite replaces only {what} folder ({advice})")
    if not any(dst.iterdir()):
        return
    got = artefact_kind(dst)
    if got is None or got != kind:
        says = f"its manifest says {got!r}" if got else "it holds no csmae manifest"
        raise FileExistsError(f"{dst} is not {what} ({says}); --overwrite replaces only {what} ({advice})")


def replace_folder(src: Path, dst: Path, *, kind: str | None = None) -> None:
    """Move the complete folder ``src`` to ``dst``; an old ``dst`` is swapped out, then deleted.

    An existing ``dst`` is replaced only if it is a csmae artefact of the same ``kind`` (default: the
    kind ``src`` records) or an empty folder (:func:`check_replaceable`).
    """
    if os.path.lexists(dst):
        check_replaceable(dst, kind or artefact_kind(src))
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


#: written into every unfinished ``OUT.partial`` folder: which csmae command it belongs to
PARTIAL_MARKER = ".csmae-partial.json"


def check_partial(tmp: str | os.PathLike[str], what: str, *, legacy: Callable[[Path], bool] | None = None
                  ) -> bool:
    """Whether ``tmp`` (an ``OUT.partial`` folder) exists; raise if it is not one of ``what``'s.

    A symlink, a file, or a folder without the marker of an unfinished csmae ``what`` (or, for
    folders of an older csmae, without what ``legacy`` recognises) is refused, naming it; nothing in
    it is read further or deleted. An empty folder is taken over.
    """
    tmp = Path(tmp)
    if not os.path.lexists(tmp):
        return False
    advice = (f"it is not an unfinished csmae {what}; nothing was deleted: move it away or choose "
              "another --out")
    if tmp.is_symlink():
        raise FileExistsError(f"{tmp} is a symbolic link ({advice})")
    if not tmp.is_dir():
        raise FileExistsError(f"{tmp} is not a folder ({advice})")
    marker = tmp / PARTIAL_MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            got = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            got = None
        if got == what:
            return True
        raise FileExistsError(f"{tmp} is an unfinished csmae {got!r}, not a {what} ({advice})")
    entries = [p for p in tmp.iterdir() if p.name != ".lock"]
    if not entries or (legacy is not None and legacy(tmp)):
        return True
    raise FileExistsError(f"{tmp} exists and has no {PARTIAL_MARKER} ({advice})")


def claim_partial(tmp: str | os.PathLike[str], what: str, *,
                  legacy: Callable[[Path], bool] | None = None) -> Any:
    """Create or take over ``tmp`` for an unfinished ``what``, marked; an exclusive lock on ``tmp/.lock``.

    Raises FileExistsError for a folder that is not ``what``'s (:func:`check_partial`), RuntimeError
    when another run holds the lock. Returns the lock's open file (close it when the run ends).
    """
    import fcntl

    tmp = Path(tmp)
    check_partial(tmp, what, legacy=legacy)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(tmp / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise FileExistsError(f"{tmp / '.lock'} cannot be opened as a lock file ({e.strerror})") from None
    f = os.fdopen(fd, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise RuntimeError(f"another csmae {what} is writing {tmp}") from None
    marker = tmp / PARTIAL_MARKER
    if not marker.is_file():
        write_json_atomic(marker, {"kind": what, "host": socket.gethostname(), "pid": os.getpid()})
    return f


def clear_partial(tmp: str | os.PathLike[str]) -> None:
    """Remove what a claimed ``tmp`` holds except its lock and marker (no symlink is followed)."""
    for p in Path(tmp).iterdir():
        if p.name in (".lock", PARTIAL_MARKER):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
