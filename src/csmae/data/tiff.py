"""Reading single-band GeoTIFF band files (BigEarthNet v1 and reBEN folders) without GDAL.

BigEarthNet band files are small baseline TIFFs: one uncompressed band in strips. For those a
minimal parser (:func:`_read_baseline`) reads the file in one call and views the strips with
``np.frombuffer`` (about 10x faster than opening a ``tifffile.TiffFile``); anything else
(compressed, tiled, BigTIFF, multi-sample, ...) goes through ``tifffile``. Both paths give the same
array; errors are :class:`~csmae.data.base.DataError` naming the file, the patch and the problem.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from csmae.data.base import DataError, check_band

# TIFF tag ids used by the fast path.
_WIDTH, _LENGTH, _BITS, _COMPRESSION = 256, 257, 258, 259
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS = 273, 277, 278, 279
_PLANAR, _SAMPLE_FORMAT, _TILE_WIDTH = 284, 339, 322
# TIFF field type -> (struct code, size in bytes) for the integer types the fast path needs.
_FIELD = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
# (SampleFormat, BitsPerSample) -> numpy dtype char.
_DTYPES = {(1, 8): "u1", (1, 16): "u2", (1, 32): "u4", (2, 16): "i2", (2, 32): "i4", (3, 32): "f4",
           (3, 64): "f8"}


class _NotBaseline(Exception):
    """The file is a valid TIFF the fast path does not handle; use tifffile."""


def _read_baseline(data: bytes) -> np.ndarray:
    """Decode an uncompressed, single-sample, stripped classic TIFF from its bytes."""
    order = data[:2]
    if order == b"II":
        e = "<"
    elif order == b"MM":
        e = ">"
    else:
        raise DataError("not a TIFF file (bad byte-order mark)")
    if len(data) < 8:
        raise DataError("truncated TIFF header")
    magic, ifd = struct.unpack_from(e + "HI", data, 2)
    if magic != 42:
        raise _NotBaseline  # BigTIFF (43) or garbage: let tifffile decide
    if ifd + 2 > len(data):
        raise DataError("truncated file: the image directory lies past the end of the file")
    (n,) = struct.unpack_from(e + "H", data, ifd)
    if ifd + 2 + 12 * n > len(data):
        raise DataError("truncated file: the image directory lies past the end of the file")
    tags: dict[int, tuple[int, ...]] = {}
    for k in range(n):
        tag, typ, count, value = struct.unpack_from(e + "HHI4s", data, ifd + 2 + 12 * k)
        if typ not in _FIELD:
            continue
        code, size = _FIELD[typ]
        if size * count <= 4:
            vals = struct.unpack_from(e + code * count, value)
        else:
            (off,) = struct.unpack_from(e + "I", value)
            if off + size * count > len(data):
                raise DataError("truncated file: a TIFF tag lies past the end of the file")
            vals = struct.unpack_from(e + code * count, data, off)
        tags[tag] = vals
    if (tags.get(_COMPRESSION, (1,))[0] != 1 or tags.get(_SAMPLES, (1,))[0] != 1
            or _TILE_WIDTH in tags or _STRIP_OFFSETS not in tags or _STRIP_COUNTS not in tags):
        raise _NotBaseline
    width, height = tags[_WIDTH][0], tags[_LENGTH][0]
    key = (tags.get(_SAMPLE_FORMAT, (1,))[0], tags.get(_BITS, (1,))[0])
    if key not in _DTYPES:
        raise _NotBaseline
    dtype = np.dtype(e + _DTYPES[key])
    offsets, counts = tags[_STRIP_OFFSETS], tags[_STRIP_COUNTS]
    need = width * height * dtype.itemsize
    end = max(o + c for o, c in zip(offsets, counts, strict=False))
    if end > len(data):
        raise DataError(f"truncated file: pixel data needs {end} bytes, the file has {len(data)}")
    start = offsets[0]
    if all(offsets[i + 1] == offsets[i] + counts[i] for i in range(len(offsets) - 1)):
        buf = data[start:start + need]
    else:
        buf = b"".join(data[o:o + c] for o, c in zip(offsets, counts, strict=False))[:need]
    if len(buf) != need:
        raise DataError(f"pixel data has {len(buf)} bytes, expected {need} for {height}x{width} {dtype}")
    return np.frombuffer(buf, dtype=dtype).reshape(height, width).astype(dtype.newbyteorder("="))


def _read_tifffile(path: str) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            if len(tf.pages) == 0:
                raise DataError("TIFF file has no image")
            arr = tf.pages[0].asarray()  # type: ignore[union-attr]
    except tifffile.TiffFileError as exc:
        raise DataError(f"not a readable TIFF file ({exc})") from None
    except (ValueError, EOFError, struct.error) as exc:
        raise DataError(f"truncated or corrupt TIFF file ({exc})") from None
    return np.asarray(arr)


def read_tiff(path: str | Path, *, patch: str | None = None) -> np.ndarray:
    """Read the first image of a TIFF file as a numpy array (native dtype and shape).

    Raises:
        DataError: missing file, non-TIFF or truncated file (message names the file and patch).
    """
    p = str(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError("band file is missing", patch=patch, path=p) from None
    except OSError as exc:
        raise DataError(f"cannot read band file ({exc.strerror})", patch=patch, path=p) from None
    try:
        if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            raise DataError(f"not a TIFF file (starts with {data[:4]!r})")
        try:
            return _read_baseline(data)
        except (_NotBaseline, struct.error):
            return _read_tifffile(p)
    except DataError as exc:
        raise DataError(exc.reason, patch=patch, path=p) from None


def read_band(path: str | Path, *, band: str, expected_side: int, patch: str) -> np.ndarray:
    """Read one band file and check its shape (``expected_side`` square) and finiteness.

    Returns the band in its on-disk dtype (uint16 for S2, float32 for S1).
    """
    arr = read_tiff(path, patch=patch)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    check_band(arr, band=band, expected_side=expected_side, patch=patch, path=str(path))
    return arr
