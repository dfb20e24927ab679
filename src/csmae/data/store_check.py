"""Checks of a prepared store's files against its manifest: cheap ones on open, full ones on demand.

On open (:func:`read_table` hashes the small pairs table it parses, so labels and splits are never
read unverified; :func:`check_store_files` takes milliseconds): every record file exists, its
``.npy`` header gives the manifest's shape and dtype, its size is exactly header + records (a
truncated file would otherwise fail later as ``mmap length is greater than file size`` with no
file name), sizes match the recorded checksums, and ``pairs.parquet`` holds the manifest's pair
count with rows inside the record files. ``csmae verify STORE`` (:func:`verify_store`) adds the
SHA-256 of every file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError
from csmae.integrity import FileCheck, check_file, member, recorded, verify_files

__all__ = ["check_rows", "check_store_files", "npy_layout", "read_table", "verify_store"]


def read_table(folder: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Any:
    """The pairs table (a pyarrow Table), its bytes checked against the recorded SHA-256 first.

    The table is small (tens of MB at full BigEarthNet scale) and holds the labels and splits, so
    it is verified on every open; its bytes are parsed from the verified buffer.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.integrity import read_verified

    path = member(folder, manifest.get("table", "pairs.parquet"), what="store", field='manifest.json "table"')
    entry = (recorded(manifest) or {}).get(path.name)
    source: Any = path
    if entry is not None:  # IntegrityError (a ValueError naming the file) when damaged
        source = pa.BufferReader(read_verified(path, entry, what="store table", alloc=pa.allocate_buffer))
    try:
        return pq.read_table(source)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for damaged files
        raise DataError(f"cannot read the pairs table ({e}); the store is damaged",
                        path=str(path)) from None


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from an ``.npy`` header, without reading the records."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise DataError(f"not a readable .npy record file ({e}); the store is damaged: re-run "
                        "`csmae prepare`", path=str(path)) from None
    if fortran:
        raise DataError("record file is Fortran-ordered; the store is damaged", path=str(path))
    return tuple(int(x) for x in shape), np.dtype(dtype), offset


def _check_group(folder: Path, g: Mapping[str, Any], sums: Mapping[str, Any] | None) -> None:
    path = member(folder, g.get("file"), what="store", field='manifest.json "groups"')
    if not path.is_file():
        raise DataError("record file listed in manifest.json is missing; the store is incomplete",
                        path=str(path))
    shape, dtype, offset = npy_layout(path)
    want = tuple(int(x) for x in g.get("shape") or ())
    if want and shape != want:
        raise DataError(f"record file holds shape {shape}, manifest.json says {want} (fewer or other "
                        "records than the store was written with); re-run `csmae prepare`",
                        path=str(path))
    if dtype != np.dtype(g["dtype"]):
        raise DataError(f"record file has dtype {dtype}, manifest.json says {g['dtype']}", path=str(path))
    need = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != need:
        what = "truncated" if size < need else "longer than its records"
        raise DataError(f"record file is {what}: {size} bytes, its {shape} {dtype} records need {need}; "
                        "re-run `csmae prepare` (or restore the store)", path=str(path))
    entry = (sums or {}).get(g["file"])
    if entry is not None and not check_file(path, entry, full=False).ok:
        raise DataError(f"record file is {size} bytes, the manifest records {entry.get('bytes')}",
                        path=str(path))


def check_store_files(folder: str | os.PathLike[str], manifest: Mapping[str, Any], *,
                      table_rows: int | None = None) -> None:
    """The cheap open-time checks (see the module docstring); raises DataError naming the file."""
    folder = Path(folder)
    sums = recorded(manifest)
    for g in manifest.get("groups") or []:
        _check_group(folder, g, sums)
    pairs = (manifest.get("counts") or {}).get("pairs")
    table = folder / manifest.get("table", "pairs.parquet")
    if table_rows is not None and pairs is not None and table_rows != int(pairs):
        raise DataError(f"table has {table_rows} pairs, manifest.json says {pairs}; the store is damaged",
                        path=str(table))


def check_rows(folder: str | os.PathLike[str], manifest: Mapping[str, Any], rows: np.ndarray) -> None:
    """Every table row index points inside the record files."""
    n = int((manifest.get("counts") or {}).get("rows", -1))
    groups = manifest.get("groups") or []
    if groups:
        n = int(groups[0].get("shape", [n])[0])
    if len(rows) and n >= 0 and (rows.min() < 0 or rows.max() >= n):
        bad = int(rows.max()) if rows.max() >= n else int(rows.min())
        raise DataError(f"table row {bad} lies outside the {n} records of the store",
                        path=str(Path(folder) / manifest.get("table", "pairs.parquet")))


def verify_store(folder: str | os.PathLike[str], manifest: Mapping[str, Any]) -> list[FileCheck] | None:
    """Structure and SHA-256 of every file (``csmae verify``); None when no checksums are recorded.

    Raises:
        DataError: a structural problem (missing, truncated, resized record file).
    """
    import pyarrow.parquet as pq

    folder = Path(folder)
    table = member(folder, manifest.get("table", "pairs.parquet"), what="store",
                   field='manifest.json "table"')
    sums = recorded(manifest)
    checks = verify_files(folder, sums) if sums is not None else None
    if checks is not None and not all(c.ok for c in checks):
        return checks  # the digests already say which files are damaged
    try:
        pf = pq.ParquetFile(table)
        n_rows = pf.metadata.num_rows
        rows = pf.read(columns=["row"]).column("row").to_numpy()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for damaged files
        raise DataError(f"cannot read the pairs table ({e})", path=str(table)) from None
    check_store_files(folder, manifest, table_rows=n_rows)
    check_rows(folder, manifest, np.asarray(rows))
    return checks
