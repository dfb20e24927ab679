"""Read query images from files on disk (``csmae search --file``, :meth:`Retriever.search_by_files`).

This module owns the file side only: the paths exist, each file is within the size limit of a
band file, and it is read once into memory. Decoding (GeoTIFF band files, ``.npy``, ``.npz``),
the band order, the bounded decompression and the plausibility check are the shared decoder's,
:mod:`csmae.retrieval.query_images`, the same one the HTTP upload uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csmae.data.tiff import MAX_FILE_BYTES
from csmae.retrieval.query_images import (
    MAX_QUERY_ARRAY_BYTES,
    QueryFile,
    QueryImageError,
    decode_query_files,
    implausible_values,
)
from csmae.sensors import Sensor

__all__ = ["MAX_QUERY_ARRAY_BYTES", "QueryImageError", "implausible_values", "read_query"]


def read_query(paths: Sequence[str | os.PathLike[str]], sensor: Sensor) -> np.ndarray:
    """A raw (C, 120, 120) float32 query in ``sensor``'s band order from files.

    Accepted: one .npy holding (C, 120, 120) in the sensor's band order; one .npz with one array
    per band name (native sizes allowed, 20 m bands are upsampled) or a single (C, 120, 120) array;
    or GeoTIFF band files, one per band, band named by the file suffix (``_B02.tif``). Unused S2
    bands are ignored; missing or foreign bands, wrong sizes or mixed kinds raise ``ValueError``.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file that cannot be read or used (a :class:`QueryImageError` naming it).
    """
    files = [Path(p) for p in paths]
    if not files:
        raise QueryImageError("no query file given")
    for p in files:
        if not p.exists():
            raise FileNotFoundError(f"query file {p} does not exist")
    loaded = []
    for p in files:
        try:
            size = p.stat().st_size
            if size > MAX_FILE_BYTES:
                raise QueryImageError(f"{p}: file of {size} bytes is over the {MAX_FILE_BYTES}-byte limit",
                                      status=413)
            loaded.append(QueryFile(name=str(p), data=p.read_bytes()))
        except OSError as e:
            raise QueryImageError(f"{p}: cannot read ({e})") from None
    return decode_query_files(loaded, sensor)
