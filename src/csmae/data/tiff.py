"""Reading single-band GeoTIFF band files (BigEarthNet v1 and reBEN folders) without GDAL.

BigEarthNet band files are small baseline TIFFs: one uncompressed band in strips. For those a
minimal parser (:func:`_read_baseline`) reads the file in one call and views the strips with
``np.frombuffer`` (about 10x faster than opening a ``tifffile.TiffFile``); anything else
(compressed, tiled, BigTIFF, ...) is parsed by ``tifffile`` and decoded strip by strip (or tile by
tile) here, with every segment's decompression capped at what the declared image needs
(:mod:`csmae.data.tiff_codecs`): a small file cannot make the reader allocate more than the
declared image, and the declared image itself must fit ``max_side``. Both paths give the same
array; errors are :class:`~csmae.data.base.DataError` naming the file, the patch and the problem.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError, check_band
from csmae.data.tiff_codecs import decompress_segment
from csmae.sensors import IMAGE_SIZE

#: Largest image side (px) :func:`read_tiff` accepts by default: 10x a patch (bands are 20-120 px).
MAX_SIDE = 10 * IMAGE_SIZE
#: Largest TIFF file read (a 1200 x 1200 float64 band is 11 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024

# TIFF tag ids used by the fast path.
_WIDTH, _LENGTH, _BITS, _COMPRESSION = 256, 257, 258, 259
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS = 273, 277, 278, 279
_PLANAR, _PREDICTOR, _SAMPLE_FORMAT, _TILE_WIDTH = 284, 317, 339, 322
# TIFF field type -> (struct code, size in bytes) for the integer types the fast path needs.
_FIELD = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
# (SampleFormat, BitsPerSample) -> numpy dtype char.
_DTYPES = {(1, 8): "u1", (1, 16): "u2", (1, 32): "u4", (2, 16): "i2", (2, 32): "i4", (3, 32): "f4",
           (3, 64): "f8"}


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class _NotBaseline(Exception):
    """The file is a valid TIFF the fast path does not handle; use tifffile."""


def _check_side(height: int, width: int, max_side: int) -> None:
    if not (0 < height <= max_side and 0 < width <= max_side):
        raise DataError(
            f"the TIFF declares a {height}x{width} px image; at most {max_side}x{max_side} px is "
            "accepted here (refused before decoding)"
        )


def _read_baseline(data: bytes, max_side: int) -> np.ndarray:
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
            or tags.get(_PREDICTOR, (1,))[0] != 1
            or _TILE_WIDTH in tags or _STRIP_OFFSETS not in tags or _STRIP_COUNTS not in tags):
        raise _NotBaseline
    width, height = tags[_WIDTH][0], tags[_LENGTH][0]
    _check_side(height, width, max_side)
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


def _segment_grid(page: Any, height: int, width: int, max_side: int) -> tuple[int, int, int, int]:
    """(segment rows, segment cols, segments down, segments across) of a strip or tile layout."""
    if page.is_tiled:
        sh, sw = int(page.tilelength), int(page.tilewidth)
        most = max(512, 2 * max_side)  # GDAL's default 256 px tiles on a 120 px image are fine
        if not (0 < sh <= most and 0 < sw <= most) or int(page.tiledepth) != 1:
            raise DataError(f"TIFF tiles of {sh}x{sw} px do not fit a {height}x{width} px image")
    else:
        rps = int(page.rowsperstrip or height)
        sh, sw = max(1, min(rps, height)), width
    return sh, sw, -(-height // sh), -(-width // sw)


def _segment(raw: bytes, dt: np.dtype, rows: int, cols: int, predictor: int) -> np.ndarray:
    """(rows, cols) native-order pixels of a decompressed segment, its TIFF predictor undone.

    Predictor 2 (horizontal differencing) adds up each row in the integer type of the sample's
    width (floats by their bit pattern, as libtiff does); predictor 3 (floating point) adds up the
    bytes of a row, whose values are stored as byte planes, most significant plane first.
    """
    native = dt.newbyteorder("=")
    if predictor == 1:
        return np.frombuffer(raw, dtype=dt, count=rows * cols).reshape(rows, cols).astype(native)
    if predictor == 2:
        as_int = np.dtype(f"u{dt.itemsize}").newbyteorder(dt.byteorder)
        seg = np.frombuffer(raw, dtype=as_int, count=rows * cols).reshape(rows, cols)
        return np.cumsum(seg.astype(as_int.newbyteorder("=")), axis=1, dtype=f"=u{dt.itemsize}").view(native)
    if predictor == 3 and dt.kind == "f":
        planes = np.frombuffer(raw, dtype=np.uint8, count=rows * cols * dt.itemsize)
        planes = np.cumsum(planes.reshape(rows, dt.itemsize * cols), axis=1, dtype=np.uint8)
        big = np.ascontiguousarray(planes.reshape(rows, dt.itemsize, cols).transpose(0, 2, 1))
        return big.view(f">f{dt.itemsize}").reshape(rows, cols).astype(native)
    raise DataError(f"TIFF predictor {predictor} is not supported for {dt.newbyteorder('=')} pixels")


def decode_tiff(data: bytes, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """The first image of a TIFF (its bytes) as a 2-D array, with bounded decompression.

    Only single-band images (one sample per pixel, 8-64 bit integer or float) are decoded. The
    declared size must be at most ``max_side`` px a side, and each strip/tile is decompressed with
    its output capped at the bytes that segment needs, so a bomb is refused without decoding it.

    Raises:
        DataError: not a TIFF, unsupported layout or codec, truncated/corrupt data, oversized
            image or a segment that decompresses to more than the image needs.
    """
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page: Any = tf.pages[0]
            byteorder = tf.byteorder
            fields = (int(page.imagelength), int(page.imagewidth), int(page.imagedepth or 1),
                      int(page.samplesperpixel), page.dtype, int(page.compression),
                      int(page.predictor), int(page.fillorder), tuple(page.dataoffsets),
                      tuple(page.databytecounts))
            height, width = fields[0], fields[1]
            _check_side(height, width, max_side)
            grid = _segment_grid(page, height, width, max_side)
            tiled = bool(page.is_tiled)
    except DataError:
        raise
    except Exception as e:  # tifffile raises many types for corrupt headers
        raise DataError(f"not a readable TIFF file ({type(e).__name__}: {e})") from None
    _, _, depth, samples, dtype, compression, predictor, fillorder, offsets, counts = fields
    if depth != 1 or samples != 1:
        raise DataError(f"expected a single-band TIFF, got {samples} samples per pixel and depth {depth}")
    if dtype is None or np.dtype(dtype).kind not in "iuf" or np.dtype(dtype).itemsize not in (1, 2, 4, 8):
        raise DataError(f"unsupported TIFF pixel type ({dtype}); expected 8-64 bit integers or floats")
    if fillorder != 1:
        raise DataError("TIFF with reversed bit order (FillOrder 2) is not supported")
    dt = np.dtype(dtype).newbyteorder(byteorder)
    sh, sw, ny, nx = grid
    if len(offsets) != ny * nx or len(counts) != ny * nx:
        raise DataError(f"the TIFF has {len(offsets)} strips/tiles, its layout needs {ny * nx}")
    kind = "tile" if tiled else "strip"
    out = np.zeros((ny * sh, nx * sw), dtype=dt.newbyteorder("="))  # (H', W') padded to whole segments
    seg_bytes = sh * sw * dt.itemsize
    for k, (off, cnt) in enumerate(zip(offsets, counts, strict=True)):
        if cnt == 0:
            continue  # a sparse (all-zero) segment
        if off + cnt > len(data):
            raise DataError(f"truncated file: {kind} {k} ends at byte {off + cnt}, the file has {len(data)}")
        r, c = divmod(k, nx)
        rows = sh if kind == "tile" else min(sh, height - r * sh)  # a last strip may be short
        raw = decompress_segment(compression, data[off:off + cnt], seg_bytes, f"{kind} {k}")
        if len(raw) < rows * sw * dt.itemsize:
            raise DataError(f"{kind} {k} holds {len(raw)} bytes, {rows * sw * dt.itemsize} expected")
        out[r * sh:r * sh + rows, c * sw:(c + 1) * sw] = _segment(raw, dt, rows, sw, predictor)
    return out[:height, :width].copy()


def read_tiff(path: str | Path, *, patch: str | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
    """Read the first image of a single-band TIFF file as a 2-D numpy array (native dtype).

    Args:
        path: the file.
        patch: patch name for error messages.
        max_side: largest declared image side accepted (checked before decoding).

    Raises:
        DataError: missing, non-TIFF, truncated or corrupt file, an image over ``max_side`` or a
            decompression bomb (message names the file and patch).
    """
    p = str(path)
    try:
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            data = f.read(min(size, MAX_FILE_BYTES) + 1) if size <= MAX_FILE_BYTES else b""
    except FileNotFoundError:
        raise DataError("band file is missing", patch=patch, path=p) from None
    except OSError as exc:
        raise DataError(f"cannot read band file ({exc.strerror})", patch=patch, path=p) from None
    try:
        if len(data) > MAX_FILE_BYTES or size > MAX_FILE_BYTES:
            raise DataError(f"file of {size} bytes is over the {MAX_FILE_BYTES}-byte limit of a band file")
        if data[:4] not in TIFF_MAGIC:
            raise DataError(f"not a TIFF file (starts with {data[:4]!r})")
        try:
            return _read_baseline(data, max_side)
        except (_NotBaseline, struct.error):
            return decode_tiff(data, max_side=max_side)
    except DataError as exc:
        raise type(exc)(exc.reason, patch=patch, path=p) from None


def read_band(path: str | Path, *, band: str, expected_side: int, patch: str) -> np.ndarray:
    """Read one band file and check its shape (``expected_side`` square) and finiteness.

    Returns the band in its on-disk dtype (uint16 for S2, float32 for S1). A file declaring an
    image larger than ``expected_side`` is refused before it is decoded.
    """
    arr = read_tiff(path, patch=patch, max_side=expected_side)
    check_band(arr, band=band, expected_side=expected_side, patch=patch, path=str(path))
    return arr
