"""Read query images from files: per-band GeoTIFFs or .npy/.npz arrays, in a sensor's band order."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csmae.sensors import IMAGE_SIZE, Sensor

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


def _check_full(arr: np.ndarray, sensor: Sensor, what: str) -> np.ndarray:
    want = (sensor.num_channels, IMAGE_SIZE, IMAGE_SIZE)
    if arr.shape != want:
        raise ValueError(
            f"{what}: array of shape {tuple(arr.shape)}; {sensor.name} queries must be {want} "
            f"(bands {list(sensor.bands)} in this order, {IMAGE_SIZE}x{IMAGE_SIZE} px)"
        )
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
        import tifffile

        bands: dict[str, np.ndarray] = {}
        for p in files:
            b = band_of(p)
            if b in bands:
                raise ValueError(f"band {b} given twice ({p})")
            try:
                bands[b] = tifffile.imread(p)
            except Exception as e:
                raise ValueError(f"{p}: cannot read as TIFF ({e})") from None
        what = files[0].name + (f" and {len(files) - 1} more file(s)" if len(files) > 1 else "")
        return _stack_bands(bands, sensor, what)
    if len(files) != 1:
        raise ValueError(
            f"give either GeoTIFF band files or one .npy/.npz file, got {[str(p) for p in files]}"
        )
    p = files[0]
    try:
        if p.suffix.lower() == ".npy":
            return _check_full(np.load(p, allow_pickle=False), sensor, str(p))
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            if len(data) == 1 and next(iter(data.values())).ndim == 3:
                return _check_full(next(iter(data.values())), sensor, str(p))
            return _stack_bands({k.upper(): v for k, v in data.items()}, sensor, str(p))
    except (OSError, EOFError) as e:
        raise ValueError(f"{p}: cannot read ({e})") from None
    raise ValueError(f"{p}: unsupported query file type {p.suffix!r}; use .tif band files, .npy or .npz")
