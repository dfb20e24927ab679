"""Uploaded query images: the HTTP side of :mod:`csmae.retrieval.query_images`.

Accepted uploads are those of the shared query decoder (GeoTIFF band files named ``..._B04.tif``,
or one ``.npy`` / ``.npz``), decoded entirely in memory into one raw ``(C, 120, 120)`` array in the
query sensor's band order. This module owns what is particular to uploads: the client's file name
is reduced to a printable base name used in messages only (never as a path; only a band token from
a fixed list is read from it), uploads are never written to disk, and a refusal is an
:class:`UploadError` carrying its HTTP status: 415 for a file type that is not accepted, 413 for
data that decodes past a size limit, 400 for every other bad upload, naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from csmae.retrieval.query_images import (
    MAX_QUERY_ARRAY_BYTES,
    QUERY_SUFFIXES,
    QueryFile,
    QueryImageError,
    decode_query_files,
)
from csmae.sensors import Sensor

ALLOWED_SUFFIXES = QUERY_SUFFIXES
#: Largest decoded array accepted from a .npy or an .npz member (guards against "zip bombs").
MAX_DECODED_BYTES = MAX_QUERY_ARRAY_BYTES
#: One uploaded file: the client's base name (display only) and its bytes.
UploadedFile = QueryFile


class UploadError(ValueError):
    """An upload the service cannot use; the message says what was expected. ``status`` is HTTP."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


def safe_name(name: str | None) -> str:
    """The last component of a client file name, printable and short (for messages only)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:120]
    return base or "upload"


def decode_upload(files: Sequence[UploadedFile], sensor: Sensor) -> np.ndarray:
    """Raw ``(C, 120, 120)`` float32 pixels in ``sensor`` band order from uploaded files.

    Raises:
        UploadError: unsupported format (415), past a size limit (413), bad content, missing or
            foreign bands (400).
    """
    if not files:
        raise UploadError("no file uploaded; send GeoTIFF band files or one .npy/.npz", status=400)
    try:
        return decode_query_files(files, sensor)
    except QueryImageError as e:
        raise UploadError(str(e), status=e.status) from None
