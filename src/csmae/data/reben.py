"""BigEarthNet v2.0 (reBEN): the folder layout and the authors' LMDB, both paired via metadata.parquet.

Folders: ``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif`` and
``BigEarthNet-S1/<product>/<s1_name>/<s1_name>_<band>.tif`` (the two-level trees are listed once at
open time, so no naming rule for ``<tile>``/``<product>`` is assumed).
LMDB: key ``patch_id`` -> safetensors blob of the S2 bands, key ``s1_name`` -> blob of VV/VH.
The environment is opened read-only (``lock=False, readahead=False``) lazily in each process, so a
dataset can be handed to DataLoader workers (an open environment is never pickled).

Geo keys (:mod:`csmae.geo.keys`): acquisition times come from the names (``..._20170613T101031_...``),
scenes from the name without its row/column suffix (both layouts give the same keys). Folders
get footprint, CRS and transform from the GeoTIFF georeferencing of B02 (S1-only: VV); the LMDB
has no georeferencing, so its samples have ``geometry`` None.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError
from csmae.data.records import PatchRecord, RecordDataset, finalize, labels_from_19, normalise_split
from csmae.data.tiff import read_band
from csmae.sensors import Sensor

log = logging.getLogger(__name__)

METADATA = "metadata.parquet"
S2_DIR, S1_DIR = "BigEarthNet-S2", "BigEarthNet-S1"
META_COLUMNS = ("country", "s1_name", "s2v1_name")


def find_metadata(path: Path) -> list[Path]:
    """``metadata.parquet`` inside ``path`` or next to it (its parent)."""
    for d in (path, path.parent):
        if (d / METADATA).is_file():
            return [d / METADATA]
    return []


def read_metadata(paths: list[Path]) -> dict[str, list[Any]]:
    """Columns (patch_id, labels, split, country, s1_name, s2v1_name) of one or more reBEN tables."""
    import pyarrow.parquet as pq

    cols: dict[str, list[Any]] = {}
    wanted = ("patch_id", "labels", "s1_name", "split", *META_COLUMNS)
    for p in paths:
        try:
            table = pq.read_table(p)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"cannot read reBEN metadata table ({exc})", path=str(p)) from None
        missing = {"patch_id", "labels", "s1_name"} - set(table.column_names)
        if missing:
            raise DataError(f"reBEN metadata table lacks column(s) {sorted(missing)}", path=str(p))
        for c in dict.fromkeys(wanted):
            values = table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
            cols.setdefault(c, []).extend(values)
    return cols


_ROW_COL = re.compile(r"_\d+_\d+$")


def _name_geo(pid: str, s1n: str | None) -> dict[str, Any]:
    """Times and scenes known from a pair's names."""
    from csmae.geo.keys import time_from_name

    return {"datetime": {"s1": time_from_name(s1n), "s2": time_from_name(pid)},
            "scene": {"s1": _ROW_COL.sub("", s1n) if s1n else None, "s2": _ROW_COL.sub("", pid)}}


def _records(cols: dict[str, list[Any]], *, source: str, has_s2: Any, has_s1: Any,
             sensors: dict[str, Sensor]) -> list[PatchRecord]:
    label_cache: dict[tuple[str, ...], tuple[np.ndarray | None, str | None]] = {}
    split_cache: dict[Any, str | None] = {}
    records = []
    for pid, labels_raw, s1n, split, *extra in zip(
            cols["patch_id"], cols["labels"], cols["s1_name"], cols["split"],
            *(cols[c] for c in META_COLUMNS), strict=True):
        key = tuple(labels_raw or ())
        if key not in label_cache:
            label_cache[key] = labels_from_19(key, where="")
        labels, problem = label_cache[key]
        if split not in split_cache:
            split_cache[split] = normalise_split(split, where=source)
        meta = {k: str(v) for k, v in zip(META_COLUMNS, extra, strict=True) if v is not None}
        rec = PatchRecord(id=pid, loc=(pid, s1n), labels=labels, problem=problem, meta=meta,
                          split=split_cache[split],
                          aliases=(meta["s2v1_name"],) if "s2v1_name" in meta else (),
                          geo=_name_geo(pid, s1n))
        if rec.problem is None:
            if "s2" in sensors and not has_s2(pid):
                rec.problem = "S2 patch missing from the source" + (
                    " (its S1 partner is present)" if has_s1(s1n) else "")
            elif "s1" in sensors and not has_s1(s1n):
                rec.problem = f"S1 partner {s1n} missing from the source" + (
                    " (the S2 patch is present)" if has_s2(pid) else "")
        records.append(rec)
    records.sort(key=lambda r: r.id)
    return records


# ---------------------------------------------------------------------------------------------
# folders


def _index_tree(root: Path) -> dict[str, str]:
    """name -> folder for the two-level tree ``root/<group>/<name>/``."""
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    with os.scandir(root) as groups:
        for g in groups:
            if not g.is_dir():
                continue
            with os.scandir(g.path) as items:
                for it in items:
                    if it.is_dir():
                        out[it.name] = it.path
    return out


def is_reben_folders(path: Path) -> bool:
    return path.is_dir() and ((path / S2_DIR).is_dir() or (path / S1_DIR).is_dir())


class RebenFolderDataset(RecordDataset):
    """Samples read from the reBEN per-band GeoTIFFs (use :func:`open_reben_folders`)."""

    def __init__(self, *, s2_dirs: dict[str, str], s1_dirs: dict[str, str], **kw: Any):
        super().__init__(**kw)
        keep = set(self._ids)
        self._s2_dirs = {k: v for k, v in s2_dirs.items() if k in keep}
        s1_keep = {loc[1] for loc in self._locs}
        self._s1_dirs = {k: v for k, v in s1_dirs.items() if k in s1_keep}

    def geo(self, i: int) -> dict[str, Any] | None:
        """Geo keys of pair ``i``: times from the names, footprint from the GeoTIFF georeferencing."""
        from csmae.geo.footprint import footprint_wkb
        from csmae.geo.raster import read_georef

        out = super().geo(i) or {}
        pid, s1n = self._locs[i]
        s2_dir, s1_dir = self._s2_dirs.get(pid), self._s1_dirs.get(s1n)
        if "s2" in self.sensors and s2_dir:
            ref = os.path.join(s2_dir, f"{pid}_B02.tif")
        elif s1_dir:
            ref = os.path.join(s1_dir, f"{s1n}_VV.tif")
        else:
            return out
        georef = read_georef(ref, patch=pid)
        if georef is not None:
            crs, transform, width, height = georef
            out.update(crs=crs, transform=transform, geometry=footprint_wkb(crs, transform, width, height))
        return out

    def read_arrays(self, i: int) -> dict[str, Any]:
        pid, s1n = self._locs[i]
        out: dict[str, Any] = {"path": self._s2_dirs.get(pid, self.source)}
        for name, sensor in self.sensors.items():
            stem = pid if name == "s2" else s1n
            folder = (self._s2_dirs if name == "s2" else self._s1_dirs).get(stem)
            if folder is None:
                raise DataError(f"{name.upper()} folder {stem} is missing", patch=pid, path=self.source)
            out[name] = {b: read_band(os.path.join(folder, f"{stem}_{b}.tif"), band=b,
                                      expected_side=sensor.native_side(b), patch=pid)
                         for b in sensor.bands}
        return out


def open_reben_folders(
    root: Path, *, metadata: list[Path], sensors: dict[str, Sensor], ids: list[str] | None = None,
    split: set[str] | None = None, on_error: str = "raise",
) -> RebenFolderDataset:
    source = str(root)
    metadata = metadata or find_metadata(root)
    if not metadata:
        raise DataError(f"reBEN folders need {METADATA} (inside or next to the root, or as a source)",
                        path=source)
    s2_dirs = _index_tree(root / S2_DIR) if "s2" in sensors else {}
    s1_dirs = _index_tree(root / S1_DIR) if "s1" in sensors else {}
    if not s2_dirs and not s1_dirs:
        raise DataError("no reBEN patch folders found", path=source)
    records = _records(read_metadata(metadata), source=source, has_s2=s2_dirs.__contains__,
                       has_s1=s1_dirs.__contains__, sensors=sensors)
    records, problems = finalize(records, source=source, on_error=on_error, ids=ids, split=split)
    return RebenFolderDataset(records=records, sensors=sensors, source=source, kind="reben-folders",
                              problems=problems, s2_dirs=s2_dirs, s1_dirs=s1_dirs)


# ---------------------------------------------------------------------------------------------
# LMDB


def is_lmdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


def open_lmdb_env(path: str) -> Any:
    """Read-only LMDB environment safe to open in many processes at once."""
    import lmdb

    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                         subdir=os.path.isdir(path), max_readers=512)
    except lmdb.Error as exc:
        raise DataError(f"cannot open LMDB ({exc})", path=path) from None


_ENVS: dict[str, tuple[int, Any]] = {}  # realpath -> (pid, env): py-lmdb allows one env per path


def shared_env(path: str) -> Any:
    """The process-wide read-only environment of ``path`` (reopened after a fork).

    py-lmdb refuses to open one environment twice in a process (and a forked child inherits that
    state), so every reader of a path goes through this function.
    """
    key = os.path.realpath(path)
    pid, env = _ENVS.get(key, (-1, None))
    if env is None or pid != os.getpid():
        if env is not None:  # inherited through fork: py-lmdb refuses a second open until it is closed
            try:
                env.close()
            except Exception:  # noqa: BLE001 - best effort on the child's copy
                log.debug("closing an inherited LMDB environment failed", exc_info=True)
        env = open_lmdb_env(path)
        _ENVS[key] = (os.getpid(), env)
    return env


class LazyLmdb:
    """An LMDB handle opened on first use in the current process; pickles as its path only."""

    def __init__(self, path: str):
        self.path = path

    def env(self) -> Any:
        return shared_env(self.path)

    def get(self, key: str) -> bytes | None:
        with self.env().begin(buffers=True) as txn:
            v = txn.get(key.encode())
            return None if v is None else bytes(v)

    def keys(self) -> set[str]:
        with self.env().begin() as txn:
            return {bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)}



def decode_safetensors(blob: bytes, *, key: str, path: str, patch: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"value of key {key!r} is not a valid safetensors blob ({exc})",
                        patch=patch, path=path) from None


class RebenLmdbDataset(RecordDataset):
    """Samples read from the reBEN LMDB of safetensors blobs (use :func:`open_reben_lmdb`)."""

    def __init__(self, *, lmdb_path: str, **kw: Any):
        super().__init__(**kw)
        self._db = LazyLmdb(lmdb_path)

    def read_arrays(self, i: int) -> dict[str, Any]:
        pid, s1n = self._locs[i]
        out: dict[str, Any] = {"path": self._db.path}
        for name in self.sensors:
            key = pid if name == "s2" else s1n
            blob = self._db.get(key)
            if blob is None:
                raise DataError(f"key {key!r} ({name.upper()}) missing from the LMDB", patch=pid,
                                path=self._db.path)
            out[name] = decode_safetensors(blob, key=key, path=self._db.path, patch=pid)
        return out


def open_reben_lmdb(
    path: Path, *, metadata: list[Path], sensors: dict[str, Sensor], ids: list[str] | None = None,
    split: set[str] | None = None, on_error: str = "raise",
) -> RebenLmdbDataset:
    source = str(path)
    metadata = metadata or find_metadata(path)
    if not metadata:
        raise DataError(f"the reBEN LMDB needs {METADATA} (next to it, or passed as a second source)",
                        path=source)
    db = LazyLmdb(source)
    keys = db.keys()
    if not keys:
        raise DataError("the LMDB is empty", path=source)
    records = _records(read_metadata(metadata), source=source, has_s2=keys.__contains__,
                       has_s1=keys.__contains__, sensors=sensors)
    records, problems = finalize(records, source=source, on_error=on_error, ids=ids, split=split)
    return RebenLmdbDataset(records=records, sensors=sensors, source=source, kind="reben-lmdb",
                            problems=problems, lmdb_path=source)
