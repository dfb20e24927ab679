"""Users' own Sentinel-1/Sentinel-2 scenes -> a prepared store of 120x120 patches (``csmae tile``).

Modules: :mod:`.rasters` (opening files), :mod:`.s2` / :mod:`.s1` / :mod:`.stac` (finding bands),
:mod:`.radiometry` (BigEarthNet DN, dB), :mod:`.grid` (patch grid, ids, footprints), :mod:`.readers`
(the per-sensor reader table: :mod:`.s2_reader`, :mod:`.s1_reader`), :mod:`.job` (a scene job is
``{sensor: scenes}``), :mod:`.plan` (pairing and checks), :mod:`.cut` (one strip of patches),
:mod:`.run` (resumable store writing). Only the readers know a sensor; scenes of a new sensor are a
:class:`~csmae.sensors.Sensor` spec plus a reader in :data:`.readers.SCENE_READERS`.
"""

from csmae.data.scenes.run import TileResult, tile_scenes

__all__ = ["TileResult", "tile_scenes"]
