"""The per-sensor scene readers: how each sensor's scenes are found, checked, read and described.

The tiler (:mod:`.plan`, :mod:`.cut`, :mod:`.run`) names no sensor: it asks this table. Which
present sensor defines the patch grid and how the others are resampled onto it come from the
:class:`~csmae.sensors.Sensor` spec (``scene_grid_priority``, ``scene_resampling``). Scenes of a
third sensor: a new spec in :mod:`csmae.sensors` and a reader registered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from csmae.data.scenes.grid import PatchGrid
from csmae.data.scenes.job import SceneJob, SceneSource, StripPixels
from csmae.data.scenes.rasters import Datasets, GridInfo
from csmae.data.scenes.s1_reader import S1Reader
from csmae.data.scenes.s2_reader import DEFAULT_SCL_CODES, S2Reader
from csmae.data.store import ArrayGroup
from csmae.sensors import Sensor, get_sensor

__all__ = ["DEFAULT_SCL_CODES", "SCENE_READERS", "SceneReader", "by_priority", "reader_of", "scene_of_item",
           "sensor_of_input"]


class SceneReader(Protocol):
    """What the tiler needs from one sensor's scenes."""

    #: how skip reasons name the sensor ("S2")
    label: str
    #: why pixels of this sensor are invalid, added to a skip reason ("" for none)
    invalid_note: str
    #: what ``StripPixels.flags`` marks, in a skip reason ("SCL cloud/snow/invalid")
    flag_note: str
    #: whether ``--scl`` (per-pixel class masks) applies to this sensor's scenes
    classifies: bool
    #: the largest side, in pixels of the 10 m grid, of any product of this sensor (bigger needs --yes)
    max_side_px: int

    def find(self, paths: list[str], sensor: Sensor, options: Mapping[str, Any]) -> list[Any]:
        """The scenes in the user's paths (files, folders, products); errors name the path."""

    def owns(self, scene: Any) -> bool:
        """Whether ``scene`` (e.g. from a STAC item) is one of this sensor's scenes."""

    def claims(self, path: str) -> bool:
        """Whether the user's input ``path`` (a file, folder or product) looks like this sensor's
        (by its name, or the names of the files in a folder; no pixels read)."""

    def check(self, scene: Any) -> SceneSource:
        """Open the scene's rasters and check their georeferencing (no pixels read)."""

    def extent(self, source: SceneSource) -> GridInfo:
        """The grid whose footprint says where the scene has pixels."""

    def patch_grid(self, source: SceneSource, stride: int) -> PatchGrid:
        """The 120x120 patch grid this scene defines when its sensor has the highest priority."""

    def check_masks(self, source: SceneSource, scl_codes: tuple[int, ...] | None) -> None:
        """Raise when class masks were asked for and the scene has none."""

    def read_strip(self, job: SceneJob, sensor: str, r: int, dss: Datasets, sec: dict[str, float]
                   ) -> StripPixels:
        """Strip ``r`` of the job's scenes of this sensor, on the patch grid (``sec``: timings)."""

    def records(self, job: SceneJob, group: ArrayGroup, data: Any, cols: list[int],
                sec: dict[str, float]) -> np.ndarray:
        """(len(cols), bands, side, side) records of ``group`` for the kept patches ``cols``."""

    def files(self, source: SceneSource) -> set[str]:
        """Every file the scene's pixels come from."""

    def product_checksums(self, source: SceneSource, check: bool) -> dict[str, Any] | None:
        """Check the scene's files against its product's own checksums (``manifest.safe``, see
        :mod:`.product_checksums`) when ``check``; the store manifest's entry (None: no product)."""

    def describe(self, sources: Sequence[SceneSource]) -> Any | None:
        """The manifest entry of this sensor's scenes in one job (None: no entry)."""

    def notes(self, sensor: Sensor) -> dict[str, str]:
        """Manifest lines on how this sensor's pixels are resampled and converted."""


#: sensor name -> reader, in the store's sensor order
SCENE_READERS: dict[str, SceneReader] = {"s1": S1Reader(), "s2": S2Reader()}


def reader_of(sensor: str) -> SceneReader:
    """The scene reader of ``sensor``; a clear error for a sensor without one."""
    if sensor not in SCENE_READERS:
        raise ValueError(f"no scene reader for sensor {sensor!r}; scenes can be read for "
                         f"{sorted(SCENE_READERS)}")
    return SCENE_READERS[sensor]


def by_priority(sensors: Iterable[str]) -> list[str]:
    """``sensors`` ordered by ``scene_grid_priority``, highest (the patch-grid sensor) first."""
    return sorted(sensors, key=lambda s: -get_sensor(s).scene_grid_priority)


def sensor_of_input(path: str) -> str:
    """The sensor whose reader claims an input path (:meth:`SceneReader.claims`); ``.json`` files
    are STAC items (``"stac"``). ValueError naming the path when no reader or several do."""
    if str(path).lower().endswith(".json"):
        return "stac"
    owners = [s for s in by_priority(SCENE_READERS) if SCENE_READERS[s].claims(str(path))]
    if len(owners) != 1:
        why = "no scene reader recognises it" if not owners else f"it looks like {owners} scenes"
        raise ValueError(f"{path}: {why}; give the sensor explicitly (--s2 PATH / --s1 PATH)")
    return owners[0]


def scene_of_item(path: str, options: Mapping[str, Any]) -> tuple[str, Any]:
    """The sensor and the scene of one local STAC Item JSON file."""
    from csmae.data.scenes.stac import scene_from_item

    scene = scene_from_item(path, bands=get_sensor("s2").bands, s1_units=options.get("s1_units"),
                            options=options)
    return next(name for name, reader in SCENE_READERS.items() if reader.owns(scene)), scene
