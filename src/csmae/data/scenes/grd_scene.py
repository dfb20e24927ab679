"""A raw Sentinel-1 GRD product as a scene: calibrated, noise-removed, geocoded onto any target grid.

:func:`open_grd_scene` checks the product and parses its tables once (no pixel read);
:func:`scene_of_product` does the same for a product made of a STAC item's assets.
:meth:`GrdScene.warp` fills a target grid (the patch strip of the tiler) with VV and VH linear
backscatter: the target is cut into segments of ``SEGMENT`` columns; for each, the radar window
that covers it is found through the geolocation grid, its DN are read (GDAL, ``/vsizip/`` for a
zipped product), calibrated and noise-removed (:mod:`csmae.data.scenes.grd_radiometry`) and warped
(:mod:`csmae.data.scenes.grd_geocode`). Memory is bounded by one segment's radar window (a few MB);
with a DEM, the radar coordinates of the whole strip are solved first (:mod:`.grd_dem`: 2 x 4 bytes
per target pixel, 10 MB for a 120 x 10,980 strip) and each segment takes its columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from csmae.data.scenes.grd_dem import DemGeometry, check_covers, check_dem
from csmae.data.scenes.grd_geocode import (
    GEOCODINGS,
    GcpGrid,
    coords_window,
    radar_coords,
    sample,
    terrain_error_m,
)
from csmae.data.scenes.grd_radiometry import (
    BORDER_LIMIT,
    IPF_BORDER_REMOVED,
    RadiometrySteps,
    calibrate_window,
    steps_for,
)
from csmae.data.scenes.grd_safe import GRD_POLS, GrdProduct, open_grd
from csmae.data.scenes.grd_tables import (
    CALIBRATIONS,
    Annotation,
    NoiseTables,
    VectorTable,
    read_annotation,
    read_calibration,
    read_noise,
)
from csmae.errors import DataError

log = logging.getLogger(__name__)

#: target columns warped at once (bounds the radar window read per step)
SEGMENT = 1200


@dataclass(frozen=True)
class GrdScene:
    """Everything needed to read one GRD product onto target grids (picklable, no open files)."""

    product: GrdProduct
    annotation: dict[str, Annotation]
    luts: dict[str, VectorTable]
    noise: dict[str, NoiseTables | None]
    grid: GcpGrid
    calibration: str
    geocoding: str
    steps: RadiometrySteps
    measurement: dict[str, str] = field(default_factory=dict)  # pol -> GDAL path
    dem: DemGeometry | None = None  # terrain correction (``--dem``); None: ellipsoid geocoding
    dem_info: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.product.name

    @property
    def source(self) -> str:
        return self.product.source

    @property
    def datetime(self) -> datetime | None:
        return self.product.start

    @property
    def samples(self) -> int:
        return self.annotation["VV"].samples

    @property
    def lines(self) -> int:
        return self.annotation["VV"].lines

    def footprint(self) -> Any:
        """The product's footprint (shapely, lon/lat): the geolocation grid's outline."""
        return self.grid.outline()

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this scene's processing."""
        return {"product": self.name, "source": self.source, "kind": "S1 GRD (raw)",
                "ipf_version": self.product.ipf_version, "mode": self.product.mode,
                "resolution": self.product.resolution, "radiometry": self.steps.to_dict(),
                "geocoding": self.geocoding_info()}

    def geocoding_info(self) -> dict[str, Any]:
        if self.dem is not None:
            return {"method": "terrain (DEM): orbit zero-Doppler geometry through sarsen "
                              f"{_version('sarsen')} / xarray-sentinel {_version('xarray-sentinel')}",
                    "dem": self.dem_info}
        return {"method": "ellipsoid (no DEM): GDAL GCP warp over the geolocation grid, "
                          + ("thin-plate spline" if self.geocoding == "tps" else "3rd-order polynomial"),
                "gcps": int(len(self.grid.points)), "expected_terrain_error": terrain_error_m(self.grid)}

    def check_dem_covers(self, area_lonlat: Any, what: str) -> None:
        """With ``--dem``: DataError naming the DEM when it does not cover ``area_lonlat`` of this product."""
        if self.dem is not None and self.dem_info is not None:
            check_covers(self.dem_info, self.footprint().intersection(area_lonlat), what)

    def check_measurements(self, open_dataset: Callable[[str], Any]) -> None:
        """Open both measurement files and check their size against the annotation."""
        for pol in GRD_POLS:
            path = self.measurement[pol]
            ds = open_dataset(path)
            ann = self.annotation[pol]
            if (ds.width, ds.height) != (ann.samples, ann.lines) or ds.count < 1:
                raise DataError(f"the measurement is {ds.width}x{ds.height} pixels, the annotation says "
                                f"{ann.samples}x{ann.lines}", path=self.product.member(
                                    self.product.files[pol].measurement))
            if np.dtype(ds.dtypes[0]).kind not in "u":
                raise DataError(f"the measurement is {ds.dtypes[0]}: a GRD holds unsigned integer DN",
                                path=self.product.member(self.product.files[pol].measurement))

    def _read(self, open_dataset: Callable[[str], Any], pol: str, l0: int, l1: int, p0: int, p1: int
              ) -> np.ndarray:
        from rasterio.windows import Window

        path = self.measurement[pol]
        try:
            return open_dataset(path).read(1, window=Window(p0, l0, p1 - p0, l1 - l0))
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - GDAL errors of a damaged file / zip member
            raise DataError(f"cannot read lines {l0}..{l1} ({str(e)[:200]})",
                            path=self.product.member(self.product.files[pol].measurement)) from None

    def coords(self, *, dst_crs: Any, dst_transform: Any, shape: tuple[int, int]) -> np.ndarray:
        """(2, *shape) radar (line, pixel) of a target grid's pixels (the DEM's, else the GCPs')."""
        if self.dem is not None:
            return self.dem.coords(dst_crs=dst_crs, dst_transform=dst_transform, shape=shape)
        return radar_coords(self.grid, method=self.geocoding, dst_crs=dst_crs, dst_transform=dst_transform,
                            shape=shape, lines=self.lines, samples=self.samples)

    def warp(self, *, dst_crs: Any, dst_transform: Any, shape: tuple[int, int],
             open_dataset: Callable[[str], Any], seconds: dict[str, float] | None = None) -> np.ndarray:
        """(2, *shape) float32 calibrated linear backscatter (VV, VH) on a target grid; NaN = nodata."""
        from affine import Affine

        sec = seconds if seconds is not None else {}
        h, w = shape
        out = np.full((2, h, w), np.nan, dtype=np.float32)
        trim = bool(self.product.ipf) and self.product.ipf < IPF_BORDER_REMOVED
        strip = None
        if self.dem is not None:  # the DEM geometry is solved once per strip (its lattice spans it)
            t0 = time.perf_counter()
            strip = self.dem.coords(dst_crs=dst_crs, dst_transform=dst_transform, shape=shape)
            sec["geocode"] = sec.get("geocode", 0.0) + time.perf_counter() - t0
        for x0 in range(0, w, SEGMENT):
            x1 = min(w, x0 + SEGMENT)
            seg_t = dst_transform @ Affine.translation(x0, 0)
            t0 = time.perf_counter()
            coords = strip[:, :, x0:x1] if strip is not None else \
                self.coords(dst_crs=dst_crs, dst_transform=seg_t, shape=(h, x1 - x0))
            win = coords_window(coords, lines=self.lines, samples=self.samples)
            sec["geocode"] = sec.get("geocode", 0.0) + time.perf_counter() - t0
            if win is None:
                continue
            l0, l1, p0, p1 = win
            if trim:  # the border trim needs each edge zone whole
                if p0 < BORDER_LIMIT:
                    p0 = 0
                if p1 > self.samples - BORDER_LIMIT:
                    p1 = self.samples
            lin = np.empty((2, l1 - l0, p1 - p0), dtype=np.float32)
            for k, pol in enumerate(GRD_POLS):
                t0 = time.perf_counter()
                dn = self._read(open_dataset, pol, l0, l1, p0, p1)
                sec["decode"] = sec.get("decode", 0.0) + time.perf_counter() - t0
                lin[k] = calibrate_window(dn, l0, p0, lut=self.luts[pol], noise=self.noise[pol],
                                          samples=self.samples, trim_border=trim, seconds=sec)
            t0 = time.perf_counter()
            out[:, :, x0:x1] = sample(lin, l0, p0, coords)
            sec["warp"] = sec.get("warp", 0.0) + time.perf_counter() - t0
        return out


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _check_options(calibration: str, geocoding: str) -> None:
    if calibration not in CALIBRATIONS:
        raise ValueError(f"--s1-calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if geocoding not in GEOCODINGS:
        raise ValueError(f"geocoding must be one of {GEOCODINGS}, got {geocoding!r}")


def open_grd_scene(path: str, *, calibration: str = "sigma0", geocoding: str = "tps",
                   thermal_noise: bool = True, dem: str | None = None) -> GrdScene:
    """Check a GRD product (folder or zip) and read its tables; no pixel is read.

    Args:
        path: the ``.SAFE`` folder or its ``.zip``.
        calibration: ``sigma0`` (default), ``gamma0`` or ``beta0``.
        geocoding: ``tps`` (thin-plate spline, default) or ``poly3`` (3rd-order polynomial).
        thermal_noise: remove thermal noise (default; off only to compare).
        dem: a DEM GeoTIFF/COG: terrain-correct through sarsen (folder or zip).
    """
    _check_options(calibration, geocoding)
    return scene_of_product(open_grd(path), calibration=calibration, geocoding=geocoding,
                            thermal_noise=thermal_noise, dem=dem)


def scene_of_product(product: GrdProduct, *, calibration: str = "sigma0", geocoding: str = "tps",
                     thermal_noise: bool = True, dem: str | None = None) -> GrdScene:
    """A checked :class:`GrdProduct` (a SAFE, a zip or a STAC item's assets) with its tables read."""
    _check_options(calibration, geocoding)
    ann = {p: read_annotation(product, p) for p in GRD_POLS}
    if (ann["VV"].samples, ann["VV"].lines) != (ann["VH"].samples, ann["VH"].lines):
        raise DataError(f"VV is {ann['VV'].samples}x{ann['VV'].lines} and VH {ann['VH'].samples}x"
                        f"{ann['VH'].lines} samples x lines",
                        path=product.member(product.files["VH"].annotation))
    luts = {p: read_calibration(product, p, calibration) for p in GRD_POLS}
    noise = {p: (read_noise(product, p) if thermal_noise else None) for p in GRD_POLS}
    steps = steps_for(product.ipf, calibration, noise["VV"])
    grid = GcpGrid(ann["VV"].gcps)
    geometry = info = None
    if dem is not None:
        info, geoid = check_dem(dem, grid.outline())
        if product.zip_path is not None:
            geometry = DemGeometry(dem_path=dem, product_path=product.zip_path, zip_inner=product.inner_root,
                                   geoid=geoid)
        elif product.safe_folder is not None:
            geometry = DemGeometry(dem_path=dem, product_path=product.safe_folder, geoid=geoid)
        else:
            raise DataError("--dem needs the product's manifest.safe (sarsen opens the product through it): "
                            "this STAC item has no 'safe-manifest' asset", path=product.source)
    return GrdScene(product=product, annotation=ann, luts=luts, noise=noise, grid=grid,
                    calibration=calibration, geocoding=geocoding, steps=steps,
                    measurement={p: product.gdal_path(product.files[p].measurement) for p in GRD_POLS},
                    dem=geometry, dem_info=info)
