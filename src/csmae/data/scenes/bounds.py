"""Bounded work for ``csmae tile``: declared raster sizes and the bytes to write, checked up front.

A raster may declare any size for a few bytes of content (a sparse GeoTIFF of 200000 x 200000 px),
and ``--stride 2`` stores every pixel 3600 times. Before anything is written the tiler says what
it would write and refuses: scenes larger than any product of their sensor (each reader's
``max_side_px``) and outputs past :data:`MAX_OUTPUT_BYTES` or stored more than :data:`MAX_OVERLAP`
times, unless the user says ``--yes``; outputs larger than the free disk always.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from csmae.errors import TooLargeError
from csmae.sensors import IMAGE_SIZE

if TYPE_CHECKING:
    from csmae.data.scenes.plan import Plan

log = logging.getLogger(__name__)

#: record bytes past which ``--yes`` is needed (a full S2 tile with S1 at stride 120 is ~6.7 GB)
MAX_OUTPUT_BYTES = 64 * 2**30
#: times each 10 m pixel may be stored ((patch side / stride)^2) before ``--yes`` is needed
MAX_OVERLAP = 16


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_scene_sizes(plan: Plan, *, yes: bool) -> None:
    """Every scene's declared size against the largest product of its sensor (TooLargeError)."""
    from csmae.data.scenes.readers import reader_of

    for job in plan.jobs:
        for sensor, sources in job.scenes.items():
            reader = reader_of(sensor)
            for src in sources:
                g = reader.extent(src)
                side = max(g.width, g.height)
                if side <= reader.max_side_px:
                    continue
                msg = (f"the {reader.label} raster declares {g.width:,} x {g.height:,} pixels: larger than "
                       f"any {reader.label} product ({reader.max_side_px:,} px a side)")
                if not yes:
                    raise TooLargeError(f"{msg}; pass --yes if it really is one scene", path=g.path)
                log.warning("%s: %s; going ahead (--yes)", g.path, msg)


def _allocated(folder: Path) -> int:
    """Bytes already on disk in an unfinished ``folder`` (its sparse record files count as written)."""
    if folder.is_symlink() or not folder.is_dir():
        return 0
    return sum(p.stat().st_blocks * 512 for p in folder.glob("*.npy") if p.is_file() and not p.is_symlink())


def _free(path: Path) -> int:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_output_size(plan: Plan, out: str | os.PathLike[str], *, stride: int, yes: bool) -> int:
    """Say what the store will take and refuse past the bounds (module docstring); the bytes to write."""
    out = Path(out)
    per = sum(int(np.prod(g.record_shape())) * np.dtype(g.dtype).itemsize for g in plan.groups)
    patches = plan.patches
    need = patches * per
    todo = max(0, need - _allocated(out.with_name(out.name + ".partial")))
    free = _free(out.parent)
    what = (f"{patches:,} patches of {per / 1e6:.2f} MB = {_gb(need)} of records to write "
            f"({_gb(free)} free)")
    log.info("%s: %s", out, what)
    if todo > free:
        raise TooLargeError(f"{what}: more than the free disk; free space or choose fewer scenes / a larger "
                            "--stride", path=str(out))
    why = []
    if need > MAX_OUTPUT_BYTES:
        why.append(f"more than {_gb(MAX_OUTPUT_BYTES)}")
    overlap = (IMAGE_SIZE / stride) ** 2
    if overlap > MAX_OVERLAP:
        why.append(f"--stride {stride} stores every pixel {overlap:,.0f} times (more than {MAX_OVERLAP})")
    if why and not yes:
        raise TooLargeError(f"{what}: {'; '.join(why)}; pass --yes to go ahead", path=str(out))
    return need
