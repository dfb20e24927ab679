"""Small helpers for artefact folders: atomic writes, manifests, file hashes."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from csmae.atomic import OWNER_FILE, clean_stale_temps, mark_owner, replace_folder, write_json_atomic
from csmae.integrity import file_digest
from csmae.version import __version__

__all__ = [
    "AtomicFolder", "base_manifest", "read_manifest", "replace_folder", "sha256_file", "write_json_atomic"
]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file (see :func:`csmae.integrity.file_digest`)."""
    return file_digest(path, algorithm="sha256")


def read_manifest(folder: str | os.PathLike[str], *, kind: str) -> dict[str, Any]:
    """Read ``folder/manifest.json`` and check its kind; clear errors for missing/half-written folders."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (expected a {kind} folder with manifest.json)")
    mpath = folder / "manifest.json"
    if not mpath.exists():
        hint = " (it looks half-written: an interrupted run?)" if any(folder.iterdir()) else ""
        raise ValueError(f"{folder} has no manifest.json: not a complete {kind} folder{hint}")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{mpath} is corrupted (not valid JSON: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        got = manifest.get("kind") if isinstance(manifest, dict) else None
        raise ValueError(f"{folder} is not a {kind} folder (manifest kind is {got!r})")
    return manifest


def manifest_label_names(manifest: dict[str, Any]) -> list[str]:
    """Label names an artefact's manifest records (the BigEarthNet 19 classes when it records none)."""
    names = manifest.get("label_names")
    if names:
        return list(names)
    from csmae.labels import LABELS_19

    return list(LABELS_19)


def base_manifest(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "format_version": 1,
        "csmae_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }


class AtomicFolder:
    """Write a folder under a temporary name and move it into place only when complete.

    ``with AtomicFolder(out, overwrite=False) as tmp: ...write into tmp...``. An existing ``out`` is
    an error unless ``overwrite``; then it is replaced only after the new folder is complete (never
    modified in place). On an exception the temporary folder is removed.
    """

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False):
        self.out = Path(out)
        self.overwrite = overwrite
        self.tmp = self.out.with_name(f"{self.out.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        if self.out.exists() and not self.overwrite:
            raise FileExistsError(f"{self.out} already exists; choose another output or pass --overwrite")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.out)  # folders of killed earlier runs
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        mark_owner(self.tmp)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        (self.tmp / OWNER_FILE).unlink(missing_ok=True)
        replace_folder(self.tmp, self.out)

