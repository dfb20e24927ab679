"""Decode uploaded query images into one raw ``(C, 120, 120)`` array, entirely in memory.

Accepted uploads (for the query sensor's band order, see :class:`csmae.sensors.Sensor`):

- GeoTIFF band files as in BigEarthNet, one file per band, the band named at the end of the file
  name (``..._B04.tif``, ``..._VV.tiff``); 20 m / 60 m bands at native size are upsampled like every
  reader does. Extra bands the model does not use (e.g. B01, B09) are ignored.
- one ``.npy`` array ``(C, 120, 120)`` in the sensor's band order, or one ``.npz`` holding either a
  single such array or one array per band name.

Uploads are never written to disk and file names are never used as paths: only a band token taken
from a fixed list is read from them. Nothing is decoded before its declared size is checked: TIFF
strips/tiles are decompressed with their output capped at what the declared (at most 120 px) band
needs (:func:`csmae.data.tiff.decode_tiff`), ``.npy`` headers and ``.npz`` members are checked
before their data is read, never unpickled (:mod:`csmae.data.npyfiles`). Decoded images whose
values are outside the sensor's plausible range (wrong units, corrupt data) are refused.
Size-limit refusals are 413, every other bad upload a 400 naming the file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from csmae.data.base import DataError
from csmae.data.npyfiles import NPY_MAGIC, ZIP_MAGIC, read_npy, read_npz
from csmae.data.tiff import TIFF_MAGIC, decode_tiff
from csmae.data.tiff_codecs import TooLargeError
from csmae.retrieval.queryfiles import MAX_QUERY_ARRAY_BYTES, implausible_values
from csmae.sensors import BAND_STATS, IMAGE_SIZE, Sensor

ALLOWED_SUFFIXES = (".tif", ".tiff", ".npy", ".npz")
_BAND_RE = re.compile(r"(?:^|[_\-.\s])(B0[1-9]|B1[0-2]|B8A|VV|VH)\.tiff?$", re.IGNORECASE)
#: Largest decoded array accepted from a .npy or an .npz member (guards against "zip bombs").
MAX_DECODED_BYTES = MAX_QUERY_ARRAY_BYTES


class UploadError(ValueError):
    """An upload the service cannot use; the message says what was expected. ``status`` is HTTP."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file: the client's base name (display only) and its bytes."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        dot = self.name.rfind(".")
        return self.name[dot:].lower() if dot >= 0 else ""


def safe_name(name: str | None) -> str:
    """The last component of a client file name, printable and short (for messages only)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:120]
    return base or "upload"


def decode_upload(files: Sequence[UploadedFile], sensor: Sensor) -> np.ndarray:
    """Raw ``(C, 120, 120)`` float32 pixels in ``sensor`` band order from uploaded files.

    Raises:
        UploadError: unsupported format (415), bad content, missing or foreign bands (400).
    """
    if not files:
        raise UploadError("no file uploaded; send GeoTIFF band files or one .npy/.npz", status=400)
    for f in files:
        if f.suffix not in ALLOWED_SUFFIXES:
            raise UploadError(
                f"{f.name}: unsupported file type {f.suffix or '(none)'}; "
                f"allowed: {', '.join(ALLOWED_SUFFIXES)}",
                status=415,
            )
    arrays = [f for f in files if f.suffix in (".npy", ".npz")]
    if arrays:
        if len(files) != 1:
            raise UploadError("send either GeoTIFF band files or exactly one .npy/.npz file, not a mix")
        f = arrays[0]
        if f.suffix == ".npy" and not f.data.startswith(NPY_MAGIC):
            raise UploadError(f"{f.name}: not a .npy file (bad magic bytes)")
        if f.suffix == ".npz" and not f.data.startswith(ZIP_MAGIC):
            raise UploadError(f"{f.name}: not a .npz file (bad magic bytes)")
        out = _from_npy(f, sensor) if f.suffix == ".npy" else _from_npz(f, sensor)
    else:
        out = _from_tiffs(files, sensor)
    if not np.isfinite(out).all():
        raise UploadError(f"the uploaded {sensor.name} image has NaN or infinite pixels")
    problem = implausible_values(out, sensor)
    if problem:
        raise UploadError(f"the uploaded {sensor.name} image {problem}")
    return out


def _check_full(arr: np.ndarray, sensor: Sensor, where: str) -> np.ndarray:
    expected = (sensor.num_channels, IMAGE_SIZE, IMAGE_SIZE)
    if arr.dtype.kind not in "fiu":
        raise UploadError(f"{where}: expected a numeric array, got dtype {arr.dtype}")
    if tuple(arr.shape) != expected:
        raise UploadError(
            f"{where}: expected shape {expected} (bands {', '.join(sensor.bands)} in this order), "
            f"got {tuple(arr.shape)}"
        )
    return arr.astype(np.float32)


def _status(e: DataError) -> int:
    """413 for input that decodes past a size limit (bombs, huge declared shapes), else 400."""
    return 413 if isinstance(e, TooLargeError) else 400


def _from_npy(f: UploadedFile, sensor: Sensor) -> np.ndarray:
    try:
        arr = read_npy(io.BytesIO(f.data), max_bytes=MAX_DECODED_BYTES)
    except DataError as e:
        raise UploadError(f"{f.name}: cannot read .npy: {e.reason}", status=_status(e)) from None
    return _check_full(arr, sensor, f.name)


def _from_npz(f: UploadedFile, sensor: Sensor) -> np.ndarray:
    try:
        data = read_npz(f.data, max_bytes=MAX_DECODED_BYTES)
    except DataError as e:
        raise UploadError(f"{f.name}: cannot read .npz: {e.reason}", status=_status(e)) from None
    by_band = {key.upper(): arr for key, arr in data.items()}  # band names as in read_query
    if all(b in by_band for b in sensor.bands):
        return _stack_bands({b: by_band[b] for b in sensor.bands}, sensor, f.name)
    if sensor.name in data:
        return _check_full(data[sensor.name], sensor, f"{f.name}[{sensor.name}]")
    if len(data) == 1:
        key = next(iter(data))
        return _check_full(data[key], sensor, f"{f.name}[{key}]")
    raise UploadError(
        f"{f.name}: expected one array, an array named {sensor.name!r}, or one array per band "
        f"({', '.join(sensor.bands)}); found keys {sorted(data)[:20]}"
    )


def _read_tiff(f: UploadedFile) -> np.ndarray:
    """One band from a GeoTIFF upload: at most 120 px a side, decoded with bounded decompression."""
    import tifffile

    if f.data[:4] not in TIFF_MAGIC:
        raise UploadError(f"{f.name}: not a TIFF file (bad magic bytes)")
    try:
        with tifffile.TiffFile(io.BytesIO(f.data)) as tif:
            pages = len(tif.pages)
    except Exception as e:  # tifffile raises many types for corrupt files
        raise UploadError(f"{f.name}: cannot read TIFF: {type(e).__name__}: {e}") from None
    if pages != 1:
        raise UploadError(f"{f.name}: expected a single-band GeoTIFF (1 page), got {pages}")
    try:
        return decode_tiff(f.data, max_side=IMAGE_SIZE)
    except DataError as e:
        raise UploadError(f"{f.name}: cannot read TIFF: {e.reason}", status=_status(e)) from None


def _from_tiffs(files: Sequence[UploadedFile], sensor: Sensor) -> np.ndarray:
    bands: dict[str, np.ndarray] = {}
    for f in files:
        m = _BAND_RE.search(f.name)
        if not m:
            raise UploadError(
                f"{f.name}: cannot tell the band from the file name; name band files like "
                f"'<patch>_{sensor.bands[0]}.tif' (bands of {sensor.name}: {', '.join(sensor.bands)})"
            )
        band = m.group(1).upper()
        if band not in sensor.bands:
            if band in BAND_STATS and sensor.name == "s2" and band.startswith("B"):
                continue  # an S2 band this model does not use (e.g. B01, B09): ignore
            raise UploadError(
                f"{f.name}: band {band} is not a band of {sensor.name} ({', '.join(sensor.bands)})"
            )
        if band in bands:
            raise UploadError(f"band {band} was uploaded twice")
        bands[band] = _read_tiff(f)
    missing = [b for b in sensor.bands if b not in bands]
    if missing:
        raise UploadError(f"missing {sensor.name} band file(s): {', '.join(missing)}")
    return _stack_bands(bands, sensor, "upload")


def _stack_bands(bands: dict[str, np.ndarray], sensor: Sensor, where: str) -> np.ndarray:
    from csmae.data.base import upsample_stack

    ordered = []
    for b in sensor.bands:
        arr = np.asarray(bands[b])
        native = sensor.native_side(b)
        if arr.dtype.kind not in "fiu":
            raise UploadError(f"{where}: band {b} must be numeric, got dtype {arr.dtype}")
        if arr.shape not in ((native, native), (IMAGE_SIZE, IMAGE_SIZE)):
            raise UploadError(
                f"{where}: band {b} has shape {tuple(arr.shape)}, expected ({native}, {native}) or "
                f"({IMAGE_SIZE}, {IMAGE_SIZE})"
            )
        ordered.append(arr.astype(np.float32))
    return upsample_stack(ordered)  # (C, 120, 120)
