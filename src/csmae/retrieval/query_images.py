"""The one decoder of query images, shared by ``csmae search --file`` and the HTTP upload.

A query is a list of :class:`QueryFile` (a name for messages and the band token, and the bytes),
decoded entirely in memory into one raw ``(C, 120, 120)`` float32 array in a sensor's band order:

- GeoTIFF band files as in BigEarthNet, one file per band, the band named at the end of the file
  name (``..._B04.tif``, ``..._VV.tiff``); 20 m / 60 m bands at native size are upsampled like every
  reader does. Bands of the product the model does not use (the spec's
  ``skippable_query_bands``, e.g. S2 B01, B09) are ignored; other foreign bands are refused.
- one ``.npy`` array ``(C, 120, 120)`` in the sensor's band order, or one ``.npz`` holding either a
  single such array, an array named after the sensor, or one array per band name.

Nothing is decoded before its declared size is checked: TIFF strips/tiles are decompressed with
their output capped at what the declared (at most 120 px) band needs (:func:`csmae.data.tiff.decode_tiff`),
``.npy`` headers and ``.npz`` members are checked before their data is read, never unpickled
(:mod:`csmae.data.npyfiles`). Images whose values are outside the sensor's
:attr:`~csmae.sensors.Sensor.plausible_range` (wrong units, corrupt data) are refused.

Every refusal is a :class:`QueryImageError` (a ``ValueError``) naming the file, with the HTTP status a
service answers: 415 for a file type that is not accepted, 413 for data that decodes past a size
limit (bombs, huge declared shapes), 400 for everything else.
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
from csmae.sensors import IMAGE_SIZE, Sensor

#: File types a query may come in.
QUERY_SUFFIXES = (".tif", ".tiff", ".npy", ".npz")
#: Largest array read from a query .npy / .npz member: a (14, 120, 120) float64 image is 1.6 MB.
MAX_QUERY_ARRAY_BYTES = 4 * 1024 * 1024
_BAND_RE = re.compile(r"(?:^|[_\-.\s])(B0[1-9]|B1[0-2]|B8A|VV|VH)\.tiff?$", re.IGNORECASE)


class QueryImageError(ValueError):
    """A query image that cannot be used; the message names the file. ``status`` is for HTTP."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class QueryFile:
    """One query file: its name (for messages and the band token, never opened) and its bytes."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        base = re.split(r"[\\/]", self.name)[-1]
        dot = base.rfind(".")
        return base[dot:].lower() if dot >= 0 else ""


def band_from_name(name: str) -> str | None:
    """The band token at the end of a file name (``x_B02.tif`` -> ``B02``), None without one."""
    m = _BAND_RE.search(re.split(r"[\\/]", name)[-1])
    return m.group(1).upper() if m else None


def implausible_values(arr: np.ndarray, sensor: Sensor) -> str | None:
    """Why a raw ``(C, 120, 120)`` query is outside its sensor's plausible range, or None.

    Such values come from wrong units or a corrupt file; far enough out they overflow the model
    (NaN descriptors), and closer in they give meaningless neighbours, so they are refused.
    """
    if sensor.plausible_range is None:
        return None
    lo, hi = sensor.plausible_range
    for i, band in enumerate(sensor.bands):
        vmin, vmax = float(np.min(arr[i])), float(np.max(arr[i]))
        if vmin < lo or vmax > hi:
            return (
                f"has band {band} values in [{vmin:.6g}, {vmax:.6g}], outside the plausible range "
                f"[{lo:g}, {hi:g}] of {sensor.name} {sensor.quantity}; check the units and the file"
            )
    return None


def decode_query_files(files: Sequence[QueryFile], sensor: Sensor) -> np.ndarray:
    """Raw ``(C, 120, 120)`` float32 pixels in ``sensor`` band order from query files.

    Raises:
        QueryImageError: unsupported file type (415), data past a size limit (413), unreadable
            content, missing, doubled or foreign bands, wrong shapes, NaN or implausible values (400).
    """
    if not files:
        raise QueryImageError("no query file given; send GeoTIFF band files or one .npy/.npz")
    for f in files:
        if f.suffix not in QUERY_SUFFIXES:
            raise QueryImageError(
                f"{f.name}: unsupported file type {f.suffix or '(none)'}; "
                f"allowed: {', '.join(QUERY_SUFFIXES)} (GeoTIFF band files, or one .npy/.npz)",
                status=415,
            )
    arrays = [f for f in files if f.suffix in (".npy", ".npz")]
    if arrays:
        if len(files) != 1:
            raise QueryImageError("give either GeoTIFF band files or exactly one .npy/.npz file, not a mix")
        f = arrays[0]
        what = f.name
        out = _from_npy(f, sensor) if f.suffix == ".npy" else _from_npz(f, sensor)
    else:
        what = files[0].name + (f" and {len(files) - 1} more file(s)" if len(files) > 1 else "")
        out = _from_tiffs(files, sensor, what)
    if not np.isfinite(out).all():
        raise QueryImageError(f"{what}: the {sensor.name} image has NaN or infinite pixel values")
    problem = implausible_values(out, sensor)
    if problem:
        raise QueryImageError(f"{what}: the {sensor.name} query {problem}")
    return out


def _status(e: DataError) -> int:
    """413 for input that decodes past a size limit (bombs, huge declared shapes), else 400."""
    return 413 if isinstance(e, TooLargeError) else 400


def _check_full(arr: np.ndarray, sensor: Sensor, what: str) -> np.ndarray:
    want = (sensor.num_channels, IMAGE_SIZE, IMAGE_SIZE)
    if arr.dtype.kind not in "fiu":
        raise QueryImageError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    if tuple(arr.shape) != want:
        raise QueryImageError(
            f"{what}: array of shape {tuple(arr.shape)}; {sensor.name} queries must be {want} "
            f"(bands {list(sensor.bands)} in this order, {IMAGE_SIZE}x{IMAGE_SIZE} px)"
        )
    return arr.astype(np.float32)


def _from_npy(f: QueryFile, sensor: Sensor) -> np.ndarray:
    if not f.data.startswith(NPY_MAGIC):
        raise QueryImageError(f"{f.name}: not a .npy file (bad magic bytes)")
    try:
        arr = read_npy(io.BytesIO(f.data), max_bytes=MAX_QUERY_ARRAY_BYTES)
    except DataError as e:
        raise QueryImageError(f"{f.name}: cannot read .npy: {e.reason}", status=_status(e)) from None
    return _check_full(arr, sensor, f.name)


def _from_npz(f: QueryFile, sensor: Sensor) -> np.ndarray:
    if not f.data.startswith(ZIP_MAGIC):
        raise QueryImageError(f"{f.name}: not a .npz file (bad magic bytes)")
    try:
        data = read_npz(f.data, max_bytes=MAX_QUERY_ARRAY_BYTES)
    except DataError as e:
        raise QueryImageError(f"{f.name}: cannot read .npz: {e.reason}", status=_status(e)) from None
    by_band = {key.upper(): arr for key, arr in data.items()}
    if all(b in by_band for b in sensor.bands):
        return _stack_bands({b: by_band[b] for b in sensor.bands}, sensor, f.name)
    if sensor.name in data:
        return _check_full(data[sensor.name], sensor, f"{f.name}[{sensor.name}]")
    if len(data) == 1:
        key = next(iter(data))
        return _check_full(data[key], sensor, f"{f.name}[{key}]")
    missing = [b for b in sensor.bands if b not in by_band]
    raise QueryImageError(
        f"{f.name}: missing band(s) {missing} for a {sensor.name} query; expected one array, an array "
        f"named {sensor.name!r}, or one array per band ({', '.join(sensor.bands)}); "
        f"found keys {sorted(data)[:20]}"
    )


def _read_tiff_band(f: QueryFile) -> np.ndarray:
    """One band from a GeoTIFF: a single page, at most 120 px a side, bounded decompression."""
    import tifffile

    if f.data[:4] not in TIFF_MAGIC:
        raise QueryImageError(f"{f.name}: cannot read as TIFF: not a TIFF file (starts with {f.data[:4]!r})")
    try:
        with tifffile.TiffFile(io.BytesIO(f.data)) as tif:
            pages = len(tif.pages)
    except Exception as e:  # tifffile raises many types for corrupt files
        raise QueryImageError(f"{f.name}: cannot read as TIFF: {type(e).__name__}: {e}") from None
    if pages != 1:
        raise QueryImageError(f"{f.name}: expected a single-band GeoTIFF (1 page), got {pages}")
    try:
        return decode_tiff(f.data, max_side=IMAGE_SIZE)
    except DataError as e:
        raise QueryImageError(f"{f.name}: cannot read as TIFF: {e.reason}", status=_status(e)) from None


def _from_tiffs(files: Sequence[QueryFile], sensor: Sensor, what: str) -> np.ndarray:
    bands: dict[str, np.ndarray] = {}
    for f in files:
        band = band_from_name(f.name)
        if band is None:
            raise QueryImageError(
                f"{f.name}: cannot tell the band from the file name; name band files like "
                f"'<patch>_{sensor.bands[0]}.tif' (bands of {sensor.name}: {', '.join(sensor.bands)})"
            )
        if band not in sensor.bands:
            if band in sensor.skippable_query_bands:
                continue  # a band of the product this model does not use (e.g. S2 B01, B09)
            raise QueryImageError(
                f"{f.name}: band {band} is not a band of {sensor.name} ({', '.join(sensor.bands)})"
            )
        if band in bands:
            raise QueryImageError(f"band {band} given twice ({f.name})")
        bands[band] = _read_tiff_band(f)
    missing = [b for b in sensor.bands if b not in bands]
    if missing:
        raise QueryImageError(
            f"{what}: missing band(s) {missing} for a {sensor.name} query; needs {list(sensor.bands)} "
            f"(got {sorted(bands)})"
        )
    return _stack_bands(bands, sensor, what)


def _stack_bands(bands: dict[str, np.ndarray], sensor: Sensor, what: str) -> np.ndarray:
    from csmae.data.base import upsample_stack

    ordered = []
    for b in sensor.bands:
        arr = np.asarray(bands[b])
        native = sensor.native_side(b)
        if arr.dtype.kind not in "fiu":
            raise QueryImageError(f"{what}: band {b} must be numeric, got dtype {arr.dtype}")
        if arr.shape not in ((native, native), (IMAGE_SIZE, IMAGE_SIZE)):
            raise QueryImageError(
                f"{what}: band {b} has shape {tuple(arr.shape)}; expected ({native}, {native})"
                + (f" or ({IMAGE_SIZE}, {IMAGE_SIZE})" if native != IMAGE_SIZE else "")
            )
        ordered.append(arr.astype(np.float32))
    return upsample_stack(ordered)  # (C, 120, 120)
