"""Raw Sentinel-1 GRD products (``.SAFE`` folder or ``.zip``) as scenes of the S1 sensor.

The S1 entry of the reader table (:class:`csmae.data.scenes.s1_reader.S1Reader`) hands GRD
products to this reader and keeps terrain-corrected files (RTC COGs, BigEarthNet-style GeoTIFFs)
for itself; a job may hold both kinds. A GRD source's ``grid`` is a lon/lat box around the
geolocation grid (for the S1-only patch grid; across the antimeridian its longitudes run on past
180 deg, one continuous box); overlap with a patch grid is decided on the grid's real footprint
(split at +-180 deg). Pixels: :meth:`csmae.data.scenes.grd_scene.GrdScene.warp` (calibration,
thermal noise, border noise, geocoding by the GCPs or, with ``--dem``, by the orbit and the DEM).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from csmae.data.scenes.grd_safe import is_grd_product
from csmae.data.scenes.grd_scene import GrdScene, open_grd_scene
from csmae.data.scenes.job import SceneSource
from csmae.data.scenes.rasters import Datasets, GridInfo, iso

log = logging.getLogger(__name__)


def split_grd(paths: list[str]) -> tuple[list[str], list[str]]:
    """(GRD products, other paths) of the user's ``--s1`` paths."""
    grd = [p for p in paths if is_grd_product(p)]
    return grd, [p for p in paths if p not in grd]


def find_grd(paths: list[str], options: Mapping[str, Any]) -> list[GrdScene]:
    return [open_grd_scene(p, calibration=options.get("s1_calibration") or "sigma0",
                           geocoding=options.get("s1_geocoding") or "tps", dem=options.get("dem"))
            for p in paths]


def check_grd(scene: GrdScene) -> SceneSource:
    """Open both measurement files (size, type) and give the source its lon/lat extent."""
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.rasters import open_raster

    opened: dict[str, Any] = {}

    def open_dataset(p: str) -> Any:
        opened[p] = open_raster(p)
        return opened[p]

    try:
        scene.check_measurements(open_dataset)
    finally:
        for ds in opened.values():
            ds.close()
    from csmae.geo.antimeridian import unwrap

    # across the antimeridian the box is continuous: lon from the west edge past 180 (not -180..180)
    w, s, e, n = unwrap(scene.footprint()).bounds
    res = 1e-4  # ~10 m: only the box matters
    width, height = int(np.ceil((e - w) / res)), int(np.ceil((n - s) / res))
    grid = GridInfo(crs=CRS.from_epsg(4326), transform=Affine(res, 0, w, 0, -res, n), width=width,
                    height=height, path=scene.source)
    return SceneSource(scene=scene, grid=grid)


def warp_grd(source: SceneSource, *, dst_crs: Any, dst_transform: Any, shape: tuple[int, int], dss: Datasets,
             sec: dict[str, float]) -> np.ndarray:
    """(2, *shape) linear backscatter (VV, VH) of a GRD source on a target grid; NaN = nodata."""
    scene: GrdScene = source.scene
    return scene.warp(dst_crs=dst_crs, dst_transform=dst_transform, shape=shape, open_dataset=dss.get,
                      seconds=sec)


def grd_files(source: SceneSource) -> set[str]:
    """The files a GRD source's pixels come from (the zip, or the measurement TIFFs)."""
    scene: GrdScene = source.scene
    p = scene.product
    if p.zip_path is not None:
        return {p.zip_path}
    return {p.gdal_path(f.measurement) for f in p.files.values()}


def describe_grd(source: SceneSource) -> dict[str, Any]:
    scene: GrdScene = source.scene
    return {**scene.describe(), "name": scene.name, "datetime": iso(scene.datetime)}


def terrain_message(scene: GrdScene) -> str | None:
    """What the user should know about geocoding without a DEM (None with a DEM)."""
    if scene.dem is not None:
        return None
    e = scene.geocoding_info()["expected_terrain_error"]
    return (f"S1 {scene.name}: ellipsoid geocoding (no --dem) through the GCP grid (heights "
            f"{e['height_min_m']:.0f}-{e['height_max_m']:.0f} m): where the terrain departs from the grid "
            f"by dh, positions are off by about dh / tan(incidence) = {e['near_range_m']:.0f} m (near range, "
            f"{e['incidence_min_deg']:.0f} deg) to {e['far_range_m']:.0f} m (far range, "
            f"{e['incidence_max_deg']:.0f} deg) per 100 m; give --dem DEM.tif where relief matters")
