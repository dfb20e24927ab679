"""Atomic checkpoint writes and checks of a checkpoint before resuming from it.

Lightning's local checkpoint write goes through an fsspec transaction that writes a file in the
system temp folder and then *moves* it into place: across file systems that is a copy, so a crash
can leave a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes ``<path>.tmp-<pid>`` next
to the target, fsyncs it and ``os.replace``s it, so a checkpoint file is either whole or absent.
Its size and SHA-256 (hashed as it is written) go to ``<path>.checksum.json``, checked on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from csmae.atomic import write_json_atomic
from csmae.integrity import ALGORITHM, CHECKSUMS, IntegrityError, check_file, file_entry, warn_unverified

SIDECAR_SUFFIX = ".checksum.json"
REQUIRED_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step", "epoch")


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes to a temp file beside the target and renames it."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                w = _HashingWriter(f)  # integrity: digest of the bytes as written (no re-read)
                torch.save(checkpoint, w)  # type: ignore[arg-type]  # a write-only file object
                f.flush()
                os.fsync(f.fileno())
            entry = w.entry() if tmp.stat().st_size == w.n else file_entry(tmp)
            write_sidecar(path, entry)  # before the rename: see verify_checkpoint_file
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)

    def remove_checkpoint(self, path: _PATH) -> None:
        super().remove_checkpoint(path)
        sidecar_path(Path(path)).unlink(missing_ok=True)


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (torch.save writes sequentially)."""

    def __init__(self, f: Any):
        self.f, self.h, self.n = f, hashlib.new(ALGORITHM), 0

    def write(self, b: Any) -> int:
        self.h.update(b)
        self.n += memoryview(b).nbytes
        return int(self.f.write(b))

    def flush(self) -> None:
        self.f.flush()

    def entry(self) -> dict[str, Any]:
        return {"bytes": self.n, ALGORITHM: self.h.hexdigest()}


def sidecar_path(path: Path) -> Path:
    """``X.ckpt`` -> ``X.ckpt.checksum.json``: the checkpoint's size and SHA-256."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        d = json.loads(side.read_text())
        if not isinstance(d, dict) or path.name not in (d.get("checksums") or {}):
            raise ValueError("no entry for the checkpoint")
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{side} is damaged ({e}); delete it to resume from {path} unverified",
                             path=side) from None
    return d


def write_sidecar(path: Path, entry: dict[str, Any]) -> None:
    """Record ``entry`` for ``path``, keeping the entry it replaces as ``previous``.

    The sidecar is replaced just before the checkpoint; a kill between the two renames leaves the
    old checkpoint with the new sidecar, which still verifies against ``previous``.
    """
    try:
        old = _read_sidecar(path)
    except IntegrityError:
        old = None
    prev = (old or {}).get("checksums", {}).get(path.name)
    write_json_atomic(sidecar_path(path), {
        "kind": "csmae-checkpoint-checksum", "file": path.name,
        CHECKSUMS: {path.name: entry}, "previous": prev,
    })


def verify_checkpoint_file(path: str | Path) -> bool:
    """Check a checkpoint against its sidecar; False (warned once) when it has none.

    Raises:
        IntegrityError: the file does not match its recorded size and SHA-256.
    """
    path = Path(path)
    side = _read_sidecar(path)
    if side is None:
        warn_unverified(path, "checkpoint")
        return False
    entry = side[CHECKSUMS][path.name]
    check = check_file(path, entry)
    if check.ok:
        return True
    prev = side.get("previous")
    if isinstance(prev, dict) and check_file(path, prev).ok:
        return True  # killed between the sidecar's and the checkpoint's rename
    raise IntegrityError(f"checkpoint {path} is corrupted or unreadable ({check.reason}); resume from "
                         "another checkpoint or restore this one", path=path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint on CPU and check it has everything a resume needs.

    Raises:
        FileNotFoundError: no such file (the message lists the checkpoints that exist).
        RuntimeError: unreadable/corrupted file or missing training state.
    """
    path = Path(path)
    others = (
        sorted(str(p.name) for p in path.parent.glob("*.ckpt") if p != path) if path.parent.is_dir() else []
    )
    hint = (
        f"; other checkpoints in {path.parent}: {others} (resume from one with --resume PATH)"
        if others
        else ""
    )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}{hint}")
    try:
        verify_checkpoint_file(path)  # integrity: size + SHA-256 recorded when it was written
    except IntegrityError as e:
        raise RuntimeError(f"{e}{hint}; nothing was changed in the run folder") from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise RuntimeError(
            f"checkpoint {path} is corrupted or unreadable ({type(e).__name__}: {str(e)[:200]}){hint}; "
            "nothing was changed in the run folder"
        ) from None
    missing = [k for k in REQUIRED_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(REQUIRED_KEYS)
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint (missing {missing}){hint}")
    if "csmae" not in ckpt:
        raise RuntimeError(f"{path} was not written by `csmae fit` (no 'csmae' section){hint}")
    return ckpt
