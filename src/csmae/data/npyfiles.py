"""Bounded, pickle-free reading of untrusted ``.npy`` / ``.npz`` bytes (uploads and query files).

``np.load`` trusts the file: a 100-byte ``.npy`` can declare a terabyte shape, and an ``.npz``
member can be a corrupt, encrypted or exotic ZIP entry whose error escapes as ``zlib.error``,
``lzma.LZMAError``, ``RuntimeError`` or ``NotImplementedError``. Here every header is read and
checked before any pixel is allocated (numeric dtype, at most ``max_bytes`` per array, few
members, declared member sizes) and every failure is a :class:`~csmae.data.base.DataError` saying
what is wrong (callers add the file name).
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
import zlib
from typing import IO

import numpy as np

from csmae.data.base import DataError
from csmae.data.tiff_codecs import TooLargeError

#: Largest array (bytes) read from a .npy or an .npz member; a (12, 120, 120) float64 is 1.4 MB.
MAX_ARRAY_BYTES = 64 * 1024 * 1024
#: Most members an .npz may have (one per band is 14 at most).
MAX_MEMBERS = 64
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
# what zipfile and its codecs raise for a broken archive or member
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, struct.error, KeyError, IndexError)


def read_npy(fp: IO[bytes], *, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """One array from a binary stream positioned at a ``.npy`` header (never unpickles).

    Raises:
        DataError: bad magic/header, object or structured dtype, over ``max_bytes``, truncated.
    """
    fmt = np.lib.format
    try:
        if fp.read(6) != NPY_MAGIC:
            raise DataError("not a .npy array (bad magic bytes)")
        major, minor = fp.read(2)
        if (major, minor) == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif (major, minor) == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise DataError(f"unsupported .npy format version {major}.{minor}; save with numpy.save")
    except DataError:
        raise
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise DataError(f"not a valid .npy array ({type(e).__name__}: {e})") from None
    if dtype.hasobject or dtype.names is not None or dtype.kind not in "biufc":
        raise DataError(f"dtype {dtype} is not a plain numeric type (object arrays would need pickle)")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > max_bytes:
        raise TooLargeError(
            f"array of shape {tuple(shape)} {dtype} is {nbytes} bytes, over the {max_bytes}-byte limit"
        )
    data = fp.read(nbytes)
    if len(data) != nbytes:
        raise DataError(f"truncated array: {len(data)} of {nbytes} data bytes")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _central_directory_count(data: bytes) -> int:
    """Number of entries the ZIP's end-of-central-directory record declares (-1 if not found)."""
    at = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return -1
    return int(struct.unpack_from("<H", data, at + 10)[0])


def read_npz(data: bytes, *, max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (its bytes) by key (member name without ``.npy``).

    Member count, each member's encryption flag, compression method and declared size are checked
    before anything is decompressed; decompression stops at the declared size (zipfile).

    Raises:
        DataError: not a ZIP, too many/large members, encrypted or unsupported members, corrupt
            compressed data or a bad ``.npy`` member (the member is named).
    """
    if not data.startswith(ZIP_MAGIC):
        raise DataError("not a .npz file (bad magic bytes)")
    count = _central_directory_count(data)
    if count > MAX_MEMBERS or count == 0xFFFF:
        raise DataError(f"the archive declares {count} members; at most {MAX_MEMBERS} are accepted")
    out: dict[str, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as e:
        raise DataError(f"not a readable .npz (ZIP) archive ({type(e).__name__}: {e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DataError(f"the archive has {len(infos)} members; at most {MAX_MEMBERS} are accepted")
        total = 0
        for info in infos:
            name = info.filename[:80]
            if info.flag_bits & 0x1:
                raise DataError(f"member {name!r} is encrypted; save the arrays with numpy.savez")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                          zipfile.ZIP_LZMA):
                raise DataError(f"member {name!r} uses unsupported ZIP compression method "
                                f"{info.compress_type}; save the arrays with numpy.savez(_compressed)")
            total += info.file_size
            if info.file_size > max_bytes + 4096 or total > max_bytes + 4096 * len(infos):
                raise TooLargeError(f"member {name!r} decompresses to {info.file_size} bytes, over the "
                                f"{max_bytes}-byte limit")
        for info in infos:
            name = info.filename[:80]
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            try:
                with zf.open(info) as member:
                    out[key] = read_npy(member, max_bytes=max_bytes)
                    if member.read(1):
                        raise DataError("extra bytes after the array data")
            except DataError as e:
                raise type(e)(f"member {name!r}: {e.reason}") from None
            except _ZIP_ERRORS as e:
                kind = "zlib.error" if isinstance(e, zlib.error) else type(e).__name__
                raise DataError(f"member {name!r} is corrupt ({kind}: {e})") from None
    return out
