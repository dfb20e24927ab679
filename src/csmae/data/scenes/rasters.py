"""Opening user rasters with rasterio, with errors that name the file and say what is wrong."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError


def rasterio_module() -> Any:
    """``rasterio``, or an error saying how to install the geo extra."""
    try:
        import rasterio
    except ImportError:  # pragma: no cover - rasterio is installed in the dev env
        raise RuntimeError("reading scenes needs rasterio: pip install 'csmae[geo]'") from None
    return rasterio


@dataclass(frozen=True)
class BandRef:
    """One band of one raster file (``bidx`` is rasterio's 1-based band index)."""

    path: str
    bidx: int = 1


@dataclass(frozen=True)
class GridInfo:
    """The georeferencing of a raster: CRS, affine transform and size."""

    crs: Any  # rasterio.crs.CRS
    transform: Any  # affine.Affine
    width: int
    height: int
    path: str

    @property
    def res(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the raster's CRS."""
        from rasterio.transform import array_bounds

        b = array_bounds(self.height, self.width, self.transform)  # (west, south, east, north)
        return (b[0], b[1], b[2], b[3])


def open_raster(path: str | Path) -> Any:
    """``rasterio.open(path)`` with a clear error for a missing file or one that is not a raster."""
    rasterio = rasterio_module()
    p = str(path)
    if "://" not in p and not Path(p).exists():
        raise DataError("file not found", path=p)
    try:
        return rasterio.open(p)
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"not a raster GDAL can read ({str(e).splitlines()[0][:200]})", path=p) from None


def grid_of(path: str | Path) -> GridInfo:
    """The grid of a raster file; DataError if it has no CRS or no (or a rotated) transform."""
    with open_raster(path) as src:
        if src.crs is None:
            raise DataError("the raster has no CRS (not georeferenced): a scene needs one", path=str(path))
        t = src.transform
        if t.is_identity:
            raise DataError("the raster has no geotransform (not georeferenced)", path=str(path))
        if t.b != 0 or t.d != 0:
            raise DataError("rotated/sheared geotransforms are not supported; warp the raster to a "
                            "north-up grid first (gdalwarp)", path=str(path))
        return GridInfo(crs=src.crs, transform=t, width=src.width, height=src.height, path=str(path))


def check_bands_in_file(ref: BandRef) -> None:
    with open_raster(ref.path) as src:
        if not 1 <= ref.bidx <= src.count:
            raise DataError(f"band {ref.bidx} asked for, the file has {src.count}", path=ref.path)


_STAMP = re.compile(r"(?<!\d)(\d{8})T(\d{4,6})(?!\d)")


def datetime_from_name(name: str) -> datetime | None:
    """The first ``YYYYMMDDTHHMMSS`` stamp in a product or file name, as UTC (Sentinel names are UTC)."""
    m = _STAMP.search(name)
    if not m:
        return None
    day, time = m.group(1), m.group(2).ljust(6, "0")
    try:
        return datetime.strptime(day + time, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` (the seam's format), or None."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Datasets(threading.local):
    """rasterio datasets opened once per thread (handles are not thread-safe)."""

    def __init__(self) -> None:
        self.open: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        if path not in self.open:
            self.open[path] = open_raster(path)
        return self.open[path]

    def close(self) -> None:
        for ds in self.open.values():
            ds.close()
        self.open.clear()


def read_window(dss: Datasets, path: str, bidx: int, col: int, row: int, w: int, h: int) -> np.ndarray:
    """Band ``bidx`` of ``path``, columns ``col..col+w``, rows ``row..row+h`` (clear error if unreadable)."""
    from rasterio.windows import Window

    src = dss.get(path)
    try:
        return src.read(bidx, window=Window(col, row, w, h), boundless=False)
    except Exception as e:  # rasterio raises RasterioIOError / CPLE_* for corrupt blocks
        raise DataError(f"cannot read rows {row}..{row + h} ({str(e)[:200]})", path=path) from None
