"""Read query images from files: per-band GeoTIFFs or .npy/.npz arrays, in a sensor's band order.

Files are read with the bounded readers (:func:`csmae.data.tiff.read_tiff` with the patch size as
the largest side, :mod:`csmae.data.npyfiles`), so a decompression bomb or a header declaring a huge
shape is refused before it is decoded, and a query whose values no sensor can produce (wrong units,
a corrupt file) is refused by :func:`implausible_values` instead of giving an empty answer.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csmae.data.base import DataError
from csmae.data.npyfiles import read_npy, read_npz
from csmae.data.tiff import MAX_FILE_BYTES, read_tiff
from csmae.sensors import IMAGE_SIZE, Sensor

#: Raw values a band of each kind can hold: S1 backscatter in dB (measured values lie within
#: about -50..+40 dB), S2 reflectance x 10000 as in L2A products (uint16; down to -1 reflectance
#: for products with the radiometric offset applied).
PLAUSIBLE_RANGE = {"s1": (-100.0, 100.0), "s2": (-10_000.0, 65_535.0)}
#: Largest array read from a query .npy / .npz member: a (14, 120, 120) float64 image is 1.6 MB.
MAX_QUERY_ARRAY_BYTES = 4 * 1024 * 1024
_UNITS = {"s1": "backscatter in dB", "s2": "reflectance scaled by 10000 (L2A digital numbers)"}
_BAND_RE = re.compile(r"_(B\d\d|B8A|VV|VH)\.tiff?$", re.IGNORECASE)


def band_of(path: str | os.PathLike[str]) -> str:
    """Band name from a BigEarthNet-style file name (``..._B02.tif``, ``..._VV.tif``)."""
    m = _BAND_RE.search(Path(path).name)
    if not m:
        raise ValueError(
            f"{path}: cannot tell the band from the file name; expected a name ending in _<BAND>.tif "
            "(e.g. _B02.tif, _B8A.tif, _VV.tif)"
        )
    b = m.group(1).upper()
    return "B8A" if b == "B8A" else b


def implausible_values(arr: np.ndarray, sensor: Sensor) -> str | None:
    """Why a raw ``(C, 120, 120)`` query is outside its sensor's plausible range, or None.

    Such values come from wrong units or a corrupt file; far enough out they overflow the model
    (NaN descriptors), and closer in they give meaningless neighbours, so they are refused.
    """
    kind = "s1" if set(sensor.bands) <= {"VV", "VH"} else "s2"
    lo, hi = PLAUSIBLE_RANGE[kind]
    for i, band in enumerate(sensor.bands):
        vmin, vmax = float(np.min(arr[i])), float(np.max(arr[i]))
        if vmin < lo or vmax > hi:
            return (
                f"has band {band} values in [{vmin:.6g}, {vmax:.6g}], outside the plausible range "
                f"[{lo:g}, {hi:g}] of {sensor.name} {_UNITS[kind]}; check the units and the file"
            )
    return None


def _check_full(arr: np.ndarray, sensor: Sensor, what: str) -> np.ndarray:
    want = (sensor.num_channels, IMAGE_SIZE, IMAGE_SIZE)
    if arr.shape != want:
        raise ValueError(
            f"{what}: array of shape {tuple(arr.shape)}; {sensor.name} queries must be {want} "
            f"(bands {list(sensor.bands)} in this order, {IMAGE_SIZE}x{IMAGE_SIZE} px)"
        )
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: the array has NaN/inf values")
    return arr


def _stack_bands(bands: dict[str, np.ndarray], sensor: Sensor, what: str) -> np.ndarray:
    from csmae.data.base import upsample_stack

    missing = [b for b in sensor.bands if b not in bands]
    if missing:
        raise ValueError(
            f"{what}: missing band(s) {missing} for a {sensor.name} query; needs {list(sensor.bands)} "
            f"(got {sorted(bands)})"
        )
    out = []
    for b in sensor.bands:
        a = np.asarray(bands[b])
        native = sensor.native_side(b)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (native, IMAGE_SIZE):
            raise ValueError(
                f"{what}: band {b} has shape {tuple(a.shape)}; expected ({native}, {native})"
                + (f" or ({IMAGE_SIZE}, {IMAGE_SIZE})" if native != IMAGE_SIZE else "")
            )
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{what}: band {b} must be numeric, got dtype {a.dtype}")
        out.append(a.astype(np.float32))
    arr = upsample_stack(out)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: NaN/inf pixel values")
    return arr


def read_query(paths: Sequence[str | os.PathLike[str]], sensor: Sensor) -> np.ndarray:
    """A raw (C, 120, 120) float32 query in ``sensor``'s band order from files.

    Accepted: one .npy holding (C, 120, 120) in the sensor's band order; one .npz with one array
    per band name (native sizes allowed, 20 m bands are upsampled) or a single (C, 120, 120) array;
    or GeoTIFF band files, one per band, band named by the file suffix (``_B02.tif``). Extra bands
    are ignored; missing bands, wrong sizes or mixed kinds raise ``ValueError``.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("no query file given")
    for p in files:
        if not p.exists():
            raise FileNotFoundError(f"query file {p} does not exist")
    suffixes = {p.suffix.lower() for p in files}
    if suffixes <= {".tif", ".tiff"}:
        bands: dict[str, np.ndarray] = {}
        for p in files:
            b = band_of(p)
            if b in bands:
                raise ValueError(f"band {b} given twice ({p})")
            try:
                bands[b] = read_tiff(p, max_side=IMAGE_SIZE)
            except DataError as e:  # a ValueError: the CLI prints it without a traceback
                raise type(e)(f"cannot read as TIFF: {e.reason}", path=str(p)) from None
        what = files[0].name + (f" and {len(files) - 1} more file(s)" if len(files) > 1 else "")
        return _plausible(_stack_bands(bands, sensor, what), sensor, what)
    if len(files) != 1:
        raise ValueError(
            f"give either GeoTIFF band files or one .npy/.npz file, got {[str(p) for p in files]}"
        )
    p = files[0]
    kind = p.suffix.lower()
    if kind not in (".npy", ".npz"):
        raise ValueError(f"{p}: unsupported query file type {p.suffix!r}; use .tif band files, .npy or .npz")
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"file of {p.stat().st_size} bytes is over the {MAX_FILE_BYTES}-byte limit")
        data = p.read_bytes()
        if kind == ".npy":
            arr = read_npy(io.BytesIO(data), max_bytes=MAX_QUERY_ARRAY_BYTES)
            return _plausible(_check_full(arr, sensor, str(p)), sensor, str(p))
        arrays = read_npz(data, max_bytes=MAX_QUERY_ARRAY_BYTES)
    except OSError as e:
        raise ValueError(f"{p}: cannot read ({e})") from None
    except DataError as e:
        raise DataError(e.reason, path=str(p)) from None
    if len(arrays) == 1 and next(iter(arrays.values())).ndim == 3:
        return _plausible(_check_full(next(iter(arrays.values())), sensor, str(p)), sensor, str(p))
    raw = _stack_bands({k.upper(): v for k, v in arrays.items()}, sensor, str(p))
    return _plausible(raw, sensor, str(p))


def _plausible(arr: np.ndarray, sensor: Sensor, what: str) -> np.ndarray:
    problem = implausible_values(arr, sensor)
    if problem:
        raise ValueError(f"{what}: the {sensor.name} query {problem}")
    return arr
