"""Bounded decompression of TIFF strips and tiles (the decompression-bomb guard).

Every codec here stops as soon as its output passes ``limit`` bytes (what the declared image needs
for that segment) and raises :class:`~csmae.data.base.DataError`: a strip that claims to be
120x120 pixels cannot make the reader allocate a gigabyte. Deflate, LZMA and Zstandard stream
with a capped output length; PackBits and LZW are decoded here (small pure-Python loops over
segments of at most a few MB, with their input length bounded by the worst-case expansion of
a valid encoding first).
"""

from __future__ import annotations

import lzma
import zlib
from typing import Any

from csmae.errors import DataError
from csmae.errors import TooLargeError as TooLargeError

#: TIFF Compression tag value -> name, for the codecs :func:`decompress_segment` decodes.
CODECS = {1: "none", 5: "LZW", 8: "Deflate", 32946: "Deflate", 32773: "PackBits", 34925: "LZMA",
          50000: "Zstandard"}
#: Largest memory the LZMA decoder may use (its dictionary); presets 0-9 need at most ~65 MiB.
LZMA_MEMLIMIT = 128 * 1024 * 1024
#: Largest Zstandard window accepted (the same bound for the decoder's own buffer).
ZSTD_MAX_WINDOW = 64 * 1024 * 1024


def _too_large(what: str, limit: int) -> DataError:
    return TooLargeError(
        f"{what} decompresses to more than the {limit} bytes the declared image needs "
        "(a decompression bomb or a corrupt file); refused before decoding it"
    )


def _zlib(raw: bytes, limit: int, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as e:
        raise DataError(f"{what}: corrupt Deflate data ({e})") from None
    if len(out) > limit:
        raise _too_large(what, limit)
    return out


def _lzma(raw: bytes, limit: int, what: str) -> bytes:
    """LZMA/XZ like ``lzma.decompress`` (concatenated streams, trailing junk ignored), capped."""
    out = bytearray()
    rest = raw
    while rest:
        d = lzma.LZMADecompressor(memlimit=LZMA_MEMLIMIT)
        try:
            out += d.decompress(rest, max_length=limit + 1 - len(out))
        except lzma.LZMAError as e:
            if out:
                break  # data after a complete stream that is not a stream: ignored, as lzma does
            raise DataError(f"{what}: corrupt LZMA data ({e})") from None
        if len(out) > limit:
            raise _too_large(what, limit)
        if not d.eof:
            break  # truncated stream: the caller finds the segment short
        rest = d.unused_data
    return bytes(out)


def _zstd(raw: bytes, limit: int, what: str) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise DataError(
            f"{what}: Zstandard-compressed TIFF needs the 'zstandard' package (pip install zstandard), "
            "or save the file with Deflate or LZW compression"
        ) from None
    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    chunks: list[bytes] = []
    size = 0
    try:
        with dctx.stream_reader(raw, read_across_frames=True) as reader:
            while size <= limit:
                chunk = reader.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except zstandard.ZstdError as e:
        raise DataError(f"{what}: corrupt Zstandard data ({e})") from None
    if size > limit:
        raise _too_large(what, limit)
    return b"".join(chunks)


def _packbits(raw: bytes, limit: int, what: str) -> bytes:
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        i += 1
        if c < 128:  # c + 1 literal bytes
            out += raw[i:i + c + 1]
            i += c + 1
        elif c > 128:  # the next byte repeated 257 - c times
            out += raw[i:i + 1] * (257 - c)
            i += 1
        if len(out) > limit:
            raise _too_large(what, limit)
    return bytes(out)


def _lzw(raw: bytes, limit: int, what: str) -> bytes:
    """TIFF LZW (MSB-first codes of 9-12 bits, 'early change'), stopped past ``limit`` bytes."""
    clear, eoi = 256, 257
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    out = bytearray()
    padded = raw + b"\x00\x00\x00"
    total_bits = len(raw) * 8
    pos, width = 0, 9
    prev: bytes | None = None
    while pos + width <= total_bits:
        byte = pos >> 3
        chunk = (padded[byte] << 16) | (padded[byte + 1] << 8) | padded[byte + 2]
        code = (chunk >> (24 - (pos & 7) - width)) & ((1 << width) - 1)
        pos += width
        if code == eoi:
            break
        if code == clear:
            del table[258:]
            width, prev = 9, None
            continue
        if prev is None:
            if code > 255:
                raise DataError(f"{what}: corrupt LZW data (code {code} after a clear code)")
            entry = table[code]
        elif code < len(table):
            entry = table[code]
            if len(table) < 4096:
                table.append(prev + entry[:1])
        elif code == len(table) and len(table) < 4096:
            entry = prev + prev[:1]
            table.append(entry)
        else:
            raise DataError(f"{what}: corrupt LZW data (code {code} not in the table)")
        out += entry
        if len(out) > limit:
            raise _too_large(what, limit)
        prev = entry
        if len(table) + 1 >= (1 << width) and width < 12:
            width += 1
    return bytes(out)


_DECODERS: dict[int, Any] = {5: _lzw, 8: _zlib, 32946: _zlib, 32773: _packbits, 34925: _lzma, 50000: _zstd}
#: Pure-Python decoders: a valid encoding is at most this many times (plus a little) its output.
_MAX_EXPANSION = {5: 2, 32773: 2}


def decompress_segment(compression: int, raw: bytes, limit: int, what: str) -> bytes:
    """Decode one strip/tile, refusing output over ``limit`` bytes (``what`` names it in errors).

    Raises:
        DataError: unsupported compression, corrupt data, or more output than ``limit``.
    """
    if compression == 1:
        return raw[:limit]
    if compression not in _DECODERS:
        names = ", ".join(sorted({v for k, v in CODECS.items() if k != 1}))
        raise DataError(
            f"unsupported TIFF compression {compression}; use no compression or one of {names}"
        )
    factor = _MAX_EXPANSION.get(compression)
    if factor is not None and len(raw) > factor * limit + 1024:
        raise TooLargeError(f"{what}: {len(raw)} compressed bytes, more than a {limit}-byte segment can need")
    out: bytes = _DECODERS[compression](raw, limit, what)
    return out
