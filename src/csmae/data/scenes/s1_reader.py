"""Sentinel-1 GRD scenes for the tiler: VV/VH warped onto the patch grid in linear power, then dB.

Terrain-corrected files (RTC COGs, BigEarthNet-style GeoTIFFs) are read here; raw GRD products
(``.SAFE`` / ``.zip``: calibration, noise removal, geocoding) through :mod:`.grd_reader`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from csmae.data.scenes.grd_reader import (
    check_grd,
    describe_grd,
    find_grd,
    grd_files,
    split_grd,
    terrain_message,
    warp_grd,
)
from csmae.data.scenes.grd_scene import GrdScene
from csmae.data.scenes.grid import PatchGrid, grid_from_s1
from csmae.data.scenes.job import SceneJob, SceneSource, StripPixels
from csmae.data.scenes.product_checksums import skipped, verify_product_checksums
from csmae.data.scenes.radiometry import linear_to_db, s1_to_linear
from csmae.data.scenes.rasters import Datasets, GridInfo, iso, read_window
from csmae.data.scenes.s1 import S1Scene, check_grid, find_s1_scenes
from csmae.data.store import ArrayGroup
from csmae.sensors import Sensor

log = logging.getLogger(__name__)

POLARISATIONS = ("VV", "VH")


class S1Reader:
    """S1 GRD: VV and VH files (or one 2-band file), linear power or dB."""

    label = "S1"
    invalid_note = "outside the S1 scene, border noise or nodata"
    flag_note = ""
    classifies = False
    max_side_px = 60000  # an IW swath is 25,000 px at 10 m; a few assembled slices stay below this

    def find(self, paths: list[str], sensor: Sensor, options: Mapping[str, Any]) -> list[Any]:
        grd, files = split_grd(paths)
        found: list[Any] = find_grd(grd, options)
        return found + (list(find_s1_scenes(files, options.get("s1_units"))) if files else [])

    def owns(self, scene: Any) -> bool:
        return isinstance(scene, (S1Scene, GrdScene))

    def claims(self, path: str) -> bool:
        from csmae.data.scenes.grd_safe import is_grd_product
        from csmae.data.scenes.s1 import claims_path

        return is_grd_product(path) or claims_path(path)

    def check(self, scene: Any) -> SceneSource:
        if isinstance(scene, GrdScene):
            return check_grd(scene)
        return SceneSource(scene=scene, grid=check_grid(scene))

    def footprint(self, source: SceneSource) -> Any | None:
        """The scene's lon/lat footprint when it is known better than its grid's box (a raw GRD)."""
        return source.scene.footprint() if isinstance(source.scene, GrdScene) else None

    def extent(self, source: SceneSource) -> GridInfo:
        return source.grid  # type: ignore[no-any-return]

    def patch_grid(self, source: SceneSource, stride: int) -> PatchGrid:
        return grid_from_s1(source.grid, stride)

    def check_cut(self, source: SceneSource, grid: PatchGrid, aoi: Any | None) -> None:
        """Checks of an S1 scene that defines the patch grid against the patches cut from it (``grid``,
        already cut down to ``aoi`` when given): with ``--dem``, the DEM must cover the whole product,
        or with ``--bbox`` / ``--aoi`` the part of it under the patches that intersect the area."""
        scene = source.scene
        if not isinstance(scene, GrdScene) or scene.dem is None:
            return
        if aoi is None:
            scene.check_dem_covers(scene.footprint(), f"the S1 product {scene.name}")
            return
        from csmae.data.scenes.aoi import patches_in

        scene.check_dem_covers(patches_in(grid, aoi), f"the part of S1 product {scene.name} under the "
                               "patches cut in the --bbox / --aoi area")

    def check_pair(self, source: SceneSource, area_lonlat: Any, over: str) -> None:
        """Checks of an S1 scene against the patch grid it is warped onto (``area_lonlat``, the grid's
        scene ``over``): with ``--dem``, the DEM must cover the part of a raw GRD under it."""
        if isinstance(source.scene, GrdScene):
            source.scene.check_dem_covers(area_lonlat,
                                          f"the part of S1 product {source.scene.name} under {over}")

    def check_masks(self, source: SceneSource, scl_codes: tuple[int, ...] | None) -> None:
        return None

    def read_strip(self, job: SceneJob, sensor: str, r: int, dss: Datasets, sec: dict[str, float]
                   ) -> StripPixels:
        """(2, size, W) float32 linear power (VV, VH) of strip ``r`` on the patch grid; NaN = nodata.

        Nodata is NaN through the warp: GDAL's bilinear kernel then gives NaN to every output pixel
        whose 2x2 source stencil touches nodata (no renormalised extrapolation at swath borders),
        and it runs GDAL's no-mask fast path (2.5x faster than declaring a nodata value, measured).
        Several S1 scenes fill each other's gaps, nearest in time first.
        """
        from affine import Affine
        from rasterio.enums import Resampling
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import from_bounds

        g = job.grid
        w = g.strip_width
        dst_t = g.strip_transform(r)
        out = np.full((2, g.size, w), np.nan, dtype=np.float32)
        left, top = dst_t.c, dst_t.f
        right, bottom = left + dst_t.a * w, top + dst_t.e * g.size
        resampling = getattr(Resampling, job.sensors[sensor].scene_resampling)
        for src in job.scenes[sensor]:
            if isinstance(src.scene, GrdScene):
                tmp = warp_grd(src, dst_crs=g.crs, dst_transform=dst_t, shape=(g.size, w), dss=dss, sec=sec)
                fill = np.isnan(out) & ~np.isnan(tmp)
                out[fill] = tmp[fill]
                continue
            t0 = time.perf_counter()
            sg = src.grid
            b = transform_bounds(g.crs, sg.crs, left, bottom, right, top, densify_pts=21)
            win = from_bounds(*b, transform=sg.transform)
            c0, r0 = int(np.floor(win.col_off)) - 2, int(np.floor(win.row_off)) - 2
            c1, r1 = int(np.ceil(win.col_off + win.width)) + 2, int(np.ceil(win.row_off + win.height)) + 2
            c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, sg.width), min(r1, sg.height)
            if c1 <= c0 or r1 <= r0:
                continue
            sc = src.scene
            lin = np.stack([s1_to_linear(read_window(dss, sc.bands[p].path, sc.bands[p].bidx, c0, r0, c1 - c0,
                                                     r1 - r0), units=sc.units, nodata=sc.nodata[p])
                            for p in POLARISATIONS])
            sec["decode"] = sec.get("decode", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            tmp = np.full_like(out, np.nan)
            src_t = sg.transform @ Affine.translation(c0, r0)
            reproject(lin, tmp, src_transform=src_t, src_crs=sg.crs, dst_transform=dst_t, dst_crs=g.crs,
                      resampling=resampling, init_dest_nodata=False)
            fill = np.isnan(out) & ~np.isnan(tmp)
            out[fill] = tmp[fill]
            sec["warp"] = sec.get("warp", 0.0) + time.perf_counter() - t0
        return StripPixels(data=out, valid=~np.isnan(out[0]) & ~np.isnan(out[1]))

    def records(self, job: SceneJob, group: ArrayGroup, data: Any, cols: list[int],
                sec: dict[str, float]) -> np.ndarray:
        g = job.grid
        rec = np.empty((len(cols), *group.record_shape()), dtype=group.dtype)
        db = linear_to_db(data)  # (2, size, W)
        pol = [POLARISATIONS.index(b) for b in group.bands]
        for j, c in enumerate(cols):
            rec[j] = db[pol, :, c * g.stride:c * g.stride + g.size]
        return rec

    def files(self, source: SceneSource) -> set[str]:
        if isinstance(source.scene, GrdScene):
            return grd_files(source)
        return {r.path for r in source.scene.bands.values()}

    def product_checksums(self, source: SceneSource, check: bool) -> dict[str, Any] | None:
        """A raw GRD product's own checksums (manifest.safe, MD5) of every member read: annotation,
        calibration, noise and measurement. None: calibrated GeoTIFF/COG inputs carry no manifest."""
        if not isinstance(source.scene, GrdScene):
            return None
        product = source.scene.product
        where = product.zip_path or product.source
        if not check:
            return skipped(where)
        members = sorted({getattr(f, kind) for f in product.files.values()
                          for kind in ("annotation", "calibration", "noise", "measurement")})
        if product.from_stac:
            return stac_product_checksums(product, members)
        res = verify_product_checksums(where, members)
        if res.manifest is None:
            log.warning("%s: no manifest.safe; the product's files cannot be checked", where)
        elif res.unlisted:
            log.warning("%s: manifest.safe has no checksum for %s", where, ", ".join(res.unlisted))
        return res.to_dict()

    def describe(self, sources: Sequence[SceneSource]) -> Any | None:
        return [describe_grd(s) if isinstance(s.scene, GrdScene) else
                {"source": s.scene.source, "name": s.scene.name, "units": s.scene.units,
                 "units_from": s.scene.units_from, "datetime": iso(s.scene.datetime),
                 "crs": s.grid.crs.to_string(), "pixel": list(s.grid.res)} for s in sources]

    def options_used(self, sources: Sequence[SceneSource], options: Mapping[str, Any], *,
                     strict: bool = True) -> dict[str, Any]:
        """The raw-GRD options, when a raw GRD product is among the sources (for the resume key and the
        ingest record); ``{}`` without one, where ``strict`` refuses a ``--dem`` that then does nothing."""
        dem = options.get("dem")
        if not any(isinstance(s.scene, GrdScene) for s in sources):
            if dem and strict:
                raise ValueError("--dem terrain-corrects raw S1 GRD products (.SAFE / .zip / STAC GRD "
                                 "items); none among the S1 scenes used")
            return {}
        import os

        return {"s1_calibration": options.get("s1_calibration") or "sigma0",
                "s1_geocoding": options.get("s1_geocoding") or "tps",
                "dem": os.path.abspath(dem) if dem else None}

    def messages(self, sources: Sequence[SceneSource]) -> list[str]:
        """Lines for the user about these scenes (the expected terrain error of ellipsoid geocoding)."""
        out = [terrain_message(s.scene) for s in sources if isinstance(s.scene, GrdScene)]
        return [m for m in out if m]

    def notes(self, sensor: Sensor) -> dict[str, str]:
        return {"s1_resampling": f"{sensor.scene_resampling} (GDAL warp, in linear power; an output pixel "
                                 "whose source stencil touches nodata is nodata), then 10*log10"}


def stac_product_checksums(product: Any, members: list[str]) -> dict[str, Any]:
    """A STAC item's GRD assets against the ``manifest.safe`` of its ``safe-manifest`` asset: the assets
    that are files of that SAFE folder are checked; others (e.g. COGs converted from the measurement,
    renamed) are listed as unlisted."""
    from pathlib import Path

    if not product.item_manifest:
        return {"product": product.source, "manifest": None, "checked": False, "files_checked": 0,
                "algorithms": [], "unlisted": members, "reason": "the STAC item has no safe-manifest asset"}
    root = Path(product.item_manifest).parent.resolve()
    inside = [m for m in members if Path(m).resolve().is_relative_to(root)]
    res = verify_product_checksums(root, inside).to_dict()
    res["unlisted"] = sorted(set(res["unlisted"]) | {m for m in members if m not in inside})
    res["checked"] = res["checked"] and not res["unlisted"]
    res["item"] = product.source
    if res["unlisted"]:
        log.warning("%s: no checksum in %s for %s", product.source, product.item_manifest,
                    ", ".join(res["unlisted"]))
    return res
