"""What the tiler passes around: a checked scene, a scene job ``{sensor: scenes}``, a strip's pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from csmae.data.scenes.grid import PatchGrid
from csmae.data.store import ArrayGroup
from csmae.sensors import Sensor


@dataclass(frozen=True)
class SceneSource:
    """One found scene and its checked grid(s), as its sensor's reader made them.

    ``scene`` has at least ``name``, ``source`` (the path the user gave) and ``datetime``;
    ``grid`` is the reader's own checked georeferencing (e.g. the S2 10 m / 20 m grids).
    """

    scene: Any
    grid: Any


@dataclass(frozen=True)
class SceneJob:
    """Everything needed to cut the strips of one scene (picklable, no open files).

    ``scenes`` maps each sensor to its sources: first the sensor whose scene defines ``grid``
    (one source), then the others warped onto it (nearest in time first, filling each other's gaps).
    """

    name: str
    grid: PatchGrid
    row_base: int
    scenes: dict[str, tuple[SceneSource, ...]]
    sensors: dict[str, Sensor]
    groups: tuple[ArrayGroup, ...]
    min_valid: float
    scl_codes: tuple[int, ...] | None = None

    @property
    def patches(self) -> int:
        return self.grid.rows * self.grid.cols


@dataclass
class StripPixels:
    """One sensor's pixels of one strip on the patch grid.

    ``data`` is the reader's own form (handed back to its ``records``), ``valid`` the (size, W)
    valid-pixel mask, ``flags`` an optional (size, W) mask of pixels flagged invalid by class
    (S2 SCL with ``--scl``), reported apart in the skip reasons.
    """

    data: Any
    valid: np.ndarray
    flags: np.ndarray | None = None
