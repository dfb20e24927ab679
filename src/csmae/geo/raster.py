"""Georeferencing of a raster file (GeoTIFF / COG) through rasterio."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from csmae.errors import DataError


def read_georef(
    path: str | Path, *, patch: str | None = None
) -> tuple[str, tuple[float, ...], int, int] | None:
    """(crs "EPSG:..." , affine (a, b, c, d, e, f), width, height) of a raster, or None without a CRS.

    Raises:
        DataError: the file is missing or not a raster rasterio can open.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from csmae.geo.footprint import crs_string

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                crs: Any = src.crs
                tr = src.transform
                width, height = src.width, src.height
    except RasterioIOError as exc:
        raise DataError(f"cannot read the georeferencing ({str(exc)[:200]})", patch=patch,
                        path=str(path)) from None
    if crs is None:
        return None
    return crs_string(crs), (tr.a, tr.b, tr.c, tr.d, tr.e, tr.f), int(width), int(height)
