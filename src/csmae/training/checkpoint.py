"""Atomic checkpoint writes and checks of a checkpoint before resuming from it.

Lightning's local checkpoint write goes through an fsspec transaction that writes a file in the
system temp folder and then *moves* it into place: across file systems that is a copy, so a crash
can leave a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes ``<path>.tmp-<pid>`` next
to the target, fsyncs it and ``os.replace``s it, so a checkpoint file is either whole or absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

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
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)


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
