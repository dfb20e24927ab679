"""Sentinel-2 L2A scenes for the tiler: the 10 m grid defines the patches, DN to BigEarthNet's."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError, upsample_stack
from csmae.data.scenes.grid import PatchGrid, grid_from_s2
from csmae.data.scenes.job import SceneJob, SceneSource, StripPixels
from csmae.data.scenes.product_checksums import skipped, verify_product_checksums
from csmae.data.scenes.radiometry import s2_to_ben_dn
from csmae.data.scenes.rasters import Datasets, GridInfo, iso, read_window
from csmae.data.scenes.s2 import MTD, S2Scene, check_grids, find_s2_scenes
from csmae.data.store import ArrayGroup
from csmae.sensors import IMAGE_SIZE, Sensor

log = logging.getLogger(__name__)

#: SCL classes dropped by ``--scl`` by default: nodata, defective, cloud shadow, clouds, cirrus, snow
DEFAULT_SCL_CODES = (0, 1, 3, 8, 9, 10, 11)


class S2Reader:
    """S2 L2A: SAFE products, per-band files or a stack; optional SCL class masks."""

    label = "S2"
    invalid_note = ""
    flag_note = "SCL cloud/snow/invalid"
    classifies = True
    max_side_px = 10980  # an S2 tile: 109.8 km at 10 m

    def find(self, paths: list[str], sensor: Sensor, options: Mapping[str, Any]) -> list[Any]:
        return list(find_s2_scenes(paths, sensor.bands, options.get("boa_offset")))

    def owns(self, scene: Any) -> bool:
        return isinstance(scene, S2Scene)

    def claims(self, path: str) -> bool:
        from csmae.data.scenes.s2 import claims_path

        return claims_path(path)

    def check(self, scene: Any) -> SceneSource:
        return SceneSource(scene=scene, grid=check_grids(scene))

    def extent(self, source: SceneSource) -> GridInfo:
        return source.grid.g10  # type: ignore[no-any-return]

    def patch_grid(self, source: SceneSource, stride: int) -> PatchGrid:
        return grid_from_s2(source.grid.g10, stride)

    def check_masks(self, source: SceneSource, scl_codes: tuple[int, ...] | None) -> None:
        if scl_codes is not None and source.scene.scl is None:
            raise DataError("--scl given but the scene has no SCL band (a *_SCL_20m file or an 'scl' asset)",
                            path=source.scene.source)

    def read_strip(self, job: SceneJob, sensor: str, r: int, dss: Datasets, sec: dict[str, float]
                   ) -> StripPixels:
        """Native bands of strip ``r`` (BigEarthNet DN), the 10 m valid mask and the 10 m SCL-flag mask."""
        (src,) = job.scenes[sensor]
        scene: S2Scene = src.scene
        grids = src.grid
        g = job.grid
        y, w = (g.row_offset + r) * g.stride, g.strip_width
        x = g.col_offset * g.stride  # a grid cut out by --bbox / --aoi starts inside the raster
        t0 = time.perf_counter()
        bands: dict[str, np.ndarray] = {}
        for b, ref in scene.bands.items():
            if grids.at20[b]:
                bands[b] = read_window(dss, ref.path, ref.bidx, x // 2, y // 2, w // 2, g.size // 2)
            else:
                a = read_window(dss, ref.path, ref.bidx, x, y, w, g.size)
                if job.sensors[sensor].native_side(b) != IMAGE_SIZE:  # a 20 m band stacked at 10 m
                    a = np.rint(a.reshape(g.size // 2, 2, w // 2, 2).mean(axis=(1, 3))).astype(a.dtype)
                bands[b] = a
        flags = None
        if job.scl_codes is not None and scene.scl is not None:
            ref = scene.scl
            at10 = dss.get(ref.path).width == grids.g10.width
            scl = read_window(dss, ref.path, ref.bidx, x, y, w, g.size) if at10 else \
                read_window(dss, ref.path, ref.bidx, x // 2, y // 2, w // 2, g.size // 2)
            flags = np.isin(scl, job.scl_codes)
            if not at10:
                flags = flags.repeat(2, axis=0).repeat(2, axis=1)  # nearest, as SCL must be resampled
        sec["decode"] = sec.get("decode", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        valid = np.ones((g.size, w), dtype=bool)
        for b, a in bands.items():
            if a.dtype != np.uint16:
                raise DataError(f"band {b} is {a.dtype}; S2 L2A bands are uint16 DN",
                                path=scene.bands[b].path)
            bands[b] = s2_to_ben_dn(a, scene.radiometry_of(b))
            nz = bands[b] != 0
            valid &= nz if nz.shape == valid.shape else nz.repeat(2, axis=0).repeat(2, axis=1)
        sec["harmonise"] = sec.get("harmonise", 0.0) + time.perf_counter() - t0
        return StripPixels(data=bands, valid=valid, flags=flags)

    def records(self, job: SceneJob, group: ArrayGroup, data: Any, cols: list[int],
                sec: dict[str, float]) -> np.ndarray:
        """Bands stored at their native side are copied; lower-resolution bands of a float32 group
        are upsampled to 120x120 with :func:`csmae.data.base.upsample_stack` (BigEarthNet's bicubic),
        all patches of the strip in one call."""
        g = job.grid
        rec = np.empty((len(cols), *group.record_shape()), dtype=group.dtype)
        sides = [job.sensors[group.sensor].native_side(b) for b in group.bands]
        low = [k for k, side in enumerate(sides) if side != group.side]
        for k, (b, side) in enumerate(zip(group.bands, sides)):
            if side != group.side:
                continue
            for j, c in enumerate(cols):
                x = c * g.stride * side // g.size
                rec[j, k] = data[b][:, x:x + side]
        if low:
            t0 = time.perf_counter()
            natives = []
            for c in cols:
                for k in low:
                    x = c * g.stride * sides[k] // g.size
                    natives.append(data[group.bands[k]][:, x:x + sides[k]])
            up = upsample_stack(natives, group.side)  # (len(cols) * len(low), side, side)
            rec[:, low] = up.reshape(len(cols), len(low), group.side, group.side)
            dt = time.perf_counter() - t0
            sec["upsample"] = sec.get("upsample", 0.0) + dt
            sec["_up"] = sec.get("_up", 0.0) + dt
        return rec

    def files(self, source: SceneSource) -> set[str]:
        scene = source.scene
        return {r.path for r in scene.bands.values()} | ({scene.scl.path} if scene.scl else set())

    def product_checksums(self, source: SceneSource, check: bool) -> dict[str, Any] | None:
        """The SAFE product's own checksums of every file read (bands, SCL, MTD_MSIL2A.xml)."""
        product = source.scene.product
        if product is None:
            return None
        if not check:
            return skipped(product)
        if Path(product).is_file():  # a zipped product: names relative to the .SAFE inside it
            members = sorted(_zip_member(f) for f in self.files(source)) + _zip_mtd(product)
        else:
            mtd = Path(product) / MTD
            members = sorted(self.files(source) | ({str(mtd)} if mtd.is_file() else set()))
        res = verify_product_checksums(product, members)
        if res.manifest is None:
            log.warning("%s: no manifest.safe; the product's files cannot be checked", product)
        elif res.unlisted:
            log.warning("%s: manifest.safe has no checksum for %s", product, ", ".join(res.unlisted))
        return res.to_dict()

    def describe(self, sources: Sequence[SceneSource]) -> Any | None:
        if not sources:
            return None
        scene = sources[0].scene
        return {"source": scene.source, "datetime": iso(scene.datetime), "scl": scene.scl is not None,
                "radiometry": {b: scene.radiometry_of(b).to_dict() for b in scene.bands}}

    def notes(self, sensor: Sensor) -> dict[str, str]:
        return {"s2_radiometry": "BigEarthNet pre-PB04.00 DN: round((DN*scale+offset)*10000), valid >= 1, "
                                 "0 = nodata"}


def _zip_member(gdal_path: str) -> str:
    """``/vsizip/x.zip/X.SAFE/GRANULE/...`` -> ``GRANULE/...`` (the name inside the product)."""
    inner = gdal_path.split(".zip/", 1)[-1]
    root, _, rest = inner.partition("/")
    return rest if root.upper().endswith(".SAFE") else inner


def _zip_mtd(product: str) -> list[str]:
    """``[MTD_MSIL2A.xml]`` when the zipped product has it beside its manifest, else []."""
    import zipfile

    with zipfile.ZipFile(product) as z:
        return [MTD] if any(n.count("/") <= 1 and n.rsplit("/", 1)[-1] == MTD for n in z.namelist()) else []
