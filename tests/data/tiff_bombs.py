"""Cheap TIFF decompression bombs for the reader and upload tests (nothing large is written).

:func:`tiff_with_segments` writes a classic little-endian TIFF from scratch around given strip or
tile payloads, so a tiny file can declare a 120x120 image whose one strip inflates to a gigabyte.
The payloads compress only small buffers: deflate repeats one flushed 1 MiB block, LZMA and
Zstandard repeat one compressed 64 MiB frame (concatenated streams/frames are valid), LZW comes
from GDAL (an independent encoder) when rasterio is installed.
"""

from __future__ import annotations

import functools
import lzma
import struct
import zlib

import numpy as np

MiB = 1024 * 1024
# TIFF compression tag values
NONE, LZW, DEFLATE, PACKBITS, LZMA, ZSTD = 1, 5, 8, 32773, 34925, 50000
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3, "c": 6}


def tiff_with_segments(segments: list[bytes], *, width: int = 120, height: int = 120, dtype: str = "uint16",
                       compression: int = NONE, rows_per_strip: int | None = None,
                       tile: tuple[int, int] | None = None, predictor: int = 1) -> bytes:
    """A single-band classic TIFF whose strips (or tiles) hold ``segments`` as given."""
    dt = np.dtype(dtype)
    tags: list[tuple[int, int, list[int]]] = [  # (tag, type, values); types 3 = SHORT, 4 = LONG
        (256, 4, [width]), (257, 4, [height]), (258, 3, [dt.itemsize * 8]), (259, 3, [compression]),
        (262, 3, [1]), (277, 3, [1]), (284, 3, [1]), (317, 3, [predictor]),
        (339, 3, [_SAMPLE_FORMAT[dt.kind]]),
    ]
    header = 8
    data_start = header
    offsets, pos = [], data_start
    for s in segments:
        offsets.append(pos)
        pos += len(s)
    counts = [len(s) for s in segments]
    if tile is None:
        tags += [(273, 4, offsets), (278, 4, [rows_per_strip or height]), (279, 4, counts)]
    else:
        tags += [(322, 4, [tile[1]]), (323, 4, [tile[0]]), (324, 4, offsets), (325, 4, counts)]
    tags.sort()
    ifd_at = pos + (pos & 1)
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, typ, vals in tags:
        code, size = ("H", 2) if typ == 3 else ("I", 4)
        packed = struct.pack("<" + code * len(vals), *vals)
        if len(packed) <= 4:
            entries += struct.pack("<HHI", tag, typ, len(vals)) + packed.ljust(4, b"\0")
        else:
            entries += struct.pack("<HHII", tag, typ, len(vals), extra_at + len(extra))
            extra += packed
    body = b"".join(segments) + b"\0" * (ifd_at - pos)
    return (b"II*\0" + struct.pack("<I", ifd_at) + body + struct.pack("<H", len(tags)) + entries
            + b"\0\0\0\0" + extra)


@functools.lru_cache(maxsize=8)
def deflate_zeros(n: int) -> bytes:
    """A valid zlib stream of ``n`` zero bytes (a multiple of 1 MiB), built from one compressed MiB.

    After a full flush a deflate block refers to nothing before it, so the block of one MiB of
    zeros is repeated; the Adler-32 of ``n`` zeros is ``(n mod 65521) << 16 | 1``.
    """
    co = zlib.compressobj(9)
    chunk = bytes(MiB)
    head = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    tail = co.flush(zlib.Z_FINISH)
    adler = ((n % 65521) << 16) | 1
    return head + block * (n // MiB - 1) + tail[:-4] + adler.to_bytes(4, "big")


@functools.lru_cache(maxsize=8)
def lzma_zeros(n: int) -> bytes:
    """Concatenated XZ streams of 64 MiB of zeros each, ``n`` bytes in all (a multiple of 64 MiB)."""
    one = lzma.compress(bytes(64 * MiB), preset=0)
    return one * max(1, n // (64 * MiB))


@functools.lru_cache(maxsize=8)
def zstd_zeros(n: int) -> bytes:
    """Concatenated Zstandard frames of 64 MiB of zeros each (needs ``zstandard``)."""
    import zstandard

    one = zstandard.ZstdCompressor(level=1).compress(bytes(64 * MiB))
    return one * max(1, n // (64 * MiB))


def packbits_zeros(n: int) -> bytes:
    """PackBits runs of 128 zeros, ``n`` bytes decoded (64x smaller)."""
    return b"\x81\x00" * (n // 128)


@functools.lru_cache(maxsize=8)
def lzw_zeros_from_gdal(side: int) -> bytes:
    """One LZW strip of ``side`` x ``side`` uint8 zeros encoded by GDAL (needs rasterio)."""
    import warnings

    import tifffile
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mem.open(driver="GTiff", width=side, height=side, count=1, dtype="uint8", compress="lzw",
                          blockysize=side) as dst:
                dst.write(np.zeros((1, side, side), np.uint8))
        data = mem.read()
    import io

    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        page = tf.pages[0]
        assert len(page.dataoffsets) == 1
        off, cnt = page.dataoffsets[0], page.databytecounts[0]
    return data[off:off + cnt]
