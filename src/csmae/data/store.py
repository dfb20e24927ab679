"""The prepared store: fixed-size records in memory-mapped ``.npy`` files, one file per band group.

Layout of a store folder::

    manifest.json      {"kind": "csmae-store", version, layout, source, sensors (band order), groups,
                        units, resampling, counts, created, producer, checksums: size + sha256 per
                        file; sizes and counts checked on open, digests by ``csmae verify``}
    pairs.parquet      one row per pair: id, row (record index in the arrays), split, labels
                       (fixed-size list<bool>[19]) and the source's metadata columns (country, ...);
                       with a georeferenced source also the geo columns of csmae.geo.columns
                       (geometry WKB EPSG:4326, crs, transform, datetime_s1/_s2, scene_s1/_s2;
                       manifest "geo": true), returned as the sample geo keys
    <group>.npy        (rows, bands, side, side) records. Layout "float32" (default):
                         s1.npy float32 (R, 2, 120, 120) dB; s2.npy float32 (R, 10, 120, 120) DN,
                         20 m bands already upsampled (bicubic, align_corners=True)
                       layout "native": s1.npy float32; s2_10m.npy uint16 (R, 4, 120, 120);
                         s2_20m.npy uint16 (R, 6, 60, 60); s2_60m.npy uint16 (R, 2, 20, 20) (12-band
                         set only); upsampled at read time, batched, in :meth:`StoreDataset.get_batch`
    skipped.csv        patch, file, reason of every patch ``csmae prepare`` skipped

Both layouts give exactly the source reader's float32 samples (same bicubic on the same uint16
input; tested bit for bit). Why this format and why "float32" is the default (measured with
bench/bench_store.py, table in bench/README.md "## data store"): a record is one contiguous slice of a
memory-mapped file, so reading is a page-cache copy with no decoding and no per-file open. With
upsampling done once at prepare time ("float32") a sample costs one ~690 KB copy: 12-30x the
reference per-sample pipeline (pickled LMDB records + per-band bicubic + normalisation) in one
process, measured in the same runs (3,000-4,800 samples/s on the loaded 2-core dev machine).
Keeping S2 at native size ("native", ~270 KB/pair, 2.5x fewer bytes) makes every read pay the
bicubic upsampling, which alone runs at ~1,000 samples/s per core even batched, so it cannot
reach the 10x target; it is the choice when disk, not read speed, is the limit. An LMDB of per-pair
safetensors blobs (the v2 authors' format, native bands) was slower still: a decode + an upsampling
per pair, and no batched read.

Safe with DataLoader workers: the memmaps are opened lazily in each process and dropped when the
dataset is pickled; the dataset holds only paths, numpy arrays and lists.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError, PairedDataset, Sample
from csmae.data.store_check import check_rows, check_store_files, read_table
from csmae.integrity import check_format_version
from csmae.labels import LABELS_19
from csmae.sensors import IMAGE_SIZE, Sensor, get_sensor

log = logging.getLogger(__name__)

STORE_KIND = "csmae-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
TABLE = "pairs.parquet"
SKIPPED = "skipped.csv"
LAYOUTS = ("native", "float32")
RESOLUTION_SUFFIX = {120: "10m", 60: "20m", 20: "60m"}
_BASE_COLUMNS = ("id", "row", "split", "labels")


@dataclass(frozen=True)
class ArrayGroup:
    """One record file: bands of one sensor stored at one side length and dtype."""

    name: str
    sensor: str
    bands: tuple[str, ...]
    dtype: str
    side: int

    @property
    def file(self) -> str:
        return f"{self.name}.npy"

    def record_shape(self) -> tuple[int, int, int]:
        return (len(self.bands), self.side, self.side)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = list(self.bands)
        d["file"] = self.file
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArrayGroup:
        return cls(name=d["name"], sensor=d["sensor"], bands=tuple(d["bands"]), dtype=d["dtype"],
                   side=int(d["side"]))


def plan_groups(sensors: Mapping[str, Sensor], layout: str = "native") -> list[ArrayGroup]:
    """The record files of a store holding ``sensors`` in ``layout`` ("native" or "float32")."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown store layout {layout!r}; expected one of {LAYOUTS}")
    groups: list[ArrayGroup] = []
    for name, sensor in sensors.items():
        if layout == "float32":
            groups.append(ArrayGroup(name, name, tuple(sensor.bands), "float32", IMAGE_SIZE))
            continue
        by_side: dict[int, list[str]] = {}
        for b in sensor.bands:
            by_side.setdefault(sensor.native_side(b), []).append(b)
        for side in sorted(by_side, reverse=True):
            gname = name if len(by_side) == 1 else f"{name}_{RESOLUTION_SUFFIX.get(side, str(side))}"
            groups.append(ArrayGroup(gname, name, tuple(by_side[side]), sensor.dtype, side))
    return groups


def is_store(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder with a csmae-store manifest."""
    m = Path(path) / MANIFEST
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("kind") == STORE_KIND
    except (OSError, ValueError):
        return False


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not is_store(p):
        raise DataError(f"not a csmae store (no {MANIFEST} with kind {STORE_KIND!r})", path=str(p))
    manifest: dict[str, Any] = json.loads((p / MANIFEST).read_text())
    if int(manifest.get("version", 0)) > STORE_VERSION:
        raise DataError(f"store version {manifest['version']} is newer than this csmae "
                        f"(reads up to {STORE_VERSION})", path=str(p))
    check_format_version(p, manifest, supported=1, what="store")  # as every artefact (none written yet)
    return manifest


def _resolve_sensors(stored: Mapping[str, Sensor], sensors: Iterable[str] | None,
                     s2_bands: Any, path: str) -> dict[str, Sensor]:
    names = list(stored) if sensors is None else [s.lower() for s in sensors]
    out: dict[str, Sensor] = {}
    for name in names:
        if name not in stored:
            raise DataError(f"store has no sensor {name!r} (has {sorted(stored)})", path=path)
        have = stored[name]
        want = have
        if name == "s2" and s2_bands is not None:
            want = get_sensor("s2", bands=s2_bands)
        elif name in ("s1", "s2"):
            default = get_sensor(name)
            if set(default.bands) <= set(have.bands):
                want = default
        missing = [b for b in want.bands if b not in have.bands]
        if missing:
            raise DataError(f"store has no {name} band(s) {missing} (has {list(have.bands)})", path=path)
        out[name] = want
    return out


def _gather(mm: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Copy records ``mm[rows]`` row by row (fancy indexing / np.take on a memmap is ~20x slower)."""
    if out is None:
        out = np.empty((len(rows), *mm.shape[1:]), dtype=mm.dtype)
    for j, r in enumerate(rows.tolist()):
        out[j] = mm[r]
    return out


class StoreDataset(PairedDataset):
    """Random access to a prepared store (see the module docstring).

    Args:
        path: the store folder.
        sensors: subset of the stored sensors (default: all).
        ids: pair ids (iterable) or a names file to restrict to, in that order.
        split: None, ``"train"``/``"val"``/``"test"`` or a list of them.
        s2_bands: None (the default 10 bands if stored, else the stored set), ``"all"`` or a list.
    """

    kind = "store"

    def __init__(self, path: str | os.PathLike[str], *, sensors: Iterable[str] | None = None,
                 ids: Iterable[str] | str | os.PathLike[str] | None = None,
                 split: str | Sequence[str] | None = None, s2_bands: Any = None):

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        src = str(self.path)
        stored = {k: Sensor.from_dict(v) for k, v in self.manifest["sensors"].items()}
        chosen = _resolve_sensors(stored, sensors, s2_bands, src)
        groups = [ArrayGroup.from_dict(g) for g in self.manifest["groups"]]
        table = read_table(self.path, self.manifest)  # integrity: the table's sha256 is checked
        # integrity: cheap checks of the record files and table against the manifest (sizes, counts)
        check_store_files(self.path, self.manifest, table_rows=table.num_rows)
        check_rows(self.path, self.manifest, table.column("row").to_numpy())
        all_ids = [str(v) for v in table.column("id").to_pylist()]
        keep = np.arange(len(all_ids))
        if split is not None:
            wanted = {split} if isinstance(split, str) else set(split)
            wanted = {"val" if s == "validation" else s for s in wanted}
            splits_col = table.column("split").to_pylist()
            keep = np.array([i for i in keep if splits_col[i] in wanted], dtype=np.int64)
        if ids is not None:
            keep = self._select_ids(all_ids, keep, ids, src)
        table = table.take(keep)
        super().__init__(ids=[all_ids[i] for i in keep], sensors=chosen, source=src)
        self._rows = np.asarray(table.column("row").to_numpy(), dtype=np.int64)
        flat = table.column("labels").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        self._labels = np.asarray(flat, dtype=bool).reshape(len(keep), len(LABELS_19))
        self._splits: list[str | None] = table.column("split").to_pylist()
        from csmae.geo.columns import STORE_GEO_COLUMNS, read_columns

        self._geo = read_columns(table)  # per-pair geo values, or None (store without geo columns)
        self._meta = {c: table.column(c).to_pylist() for c in table.column_names
                      if c not in _BASE_COLUMNS and c not in STORE_GEO_COLUMNS}
        # per sensor: [(group, stored band positions, output channels)]
        self._plan: dict[str, list[tuple[ArrayGroup, np.ndarray, np.ndarray]]] = {}
        for name, sensor in chosen.items():
            parts = []
            for g in groups:
                if g.sensor != name:
                    continue
                src_idx = [g.bands.index(b) for b in sensor.bands if b in g.bands]
                dst_idx = [sensor.index(b) for b in sensor.bands if b in g.bands]
                if dst_idx:
                    parts.append((g, np.array(src_idx), np.array(dst_idx)))
            self._plan[name] = parts
        self._arrays: dict[str, np.ndarray] | None = None
        self._pid = -1

    @staticmethod
    def _select_ids(all_ids: list[str], keep: np.ndarray, ids: Any, src: str) -> np.ndarray:
        from csmae.data.subsets import read_names

        wanted = read_names(ids) if isinstance(ids, (str, os.PathLike)) else [str(i) for i in ids]
        pos = {all_ids[i]: int(i) for i in keep}
        found = [pos[i] for i in wanted if i in pos]
        missing = len(wanted) - len(found)
        if wanted and not found:
            raise DataError(f"none of the {len(wanted)} requested ids is in the store "
                            f"(e.g. {wanted[0]!r})", path=src)
        if missing:
            log.warning("%s: %d of %d requested ids are not in the store", src, missing, len(wanted))
        return np.array(found, dtype=np.int64)

    # --- lazy, per-process memmaps -------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_pid"] = -1
        return state

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None or self._pid != os.getpid():
            arrays = {}
            for parts in self._plan.values():
                for g, _, _ in parts:
                    arrays[g.name] = np.load(self.path / g.file, mmap_mode="r")
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def release(self) -> None:
        """Unmap the record files: the pages read so far stop counting in this process's RSS (a
        long pass over the store, e.g. ``csmae embed``, stays bounded); the next read maps them again."""
        self._arrays = None

    # --- reading ---------------------------------------------------------------------------------
    def splits(self) -> list[str | None]:
        return list(self._splits)

    def labels_array(self) -> np.ndarray:
        """(N, 19) bool labels of every pair (no pixel reads)."""
        return self._labels.copy()

    def _batch_rows(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pair positions (negatives wrapped, range-checked) and their record rows."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a store of {n} pairs")
        idx = idx % n if n else idx
        return idx, self._rows[idx]

    def _add_info(self, out: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
        """Add the per-pair "labels", "id" and "split" of a batch to ``out``."""
        out["labels"] = self._labels[idx]
        out["id"] = [self._ids[i] for i in idx]
        out["split"] = [self._splits[i] for i in idx]
        return out

    def get_batch(self, indices: Sequence[int] | np.ndarray, *,
                  into: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Raw float32 (B, C, 120, 120) per sensor, "labels" bool (B, 19), "id", "split".

        ``into``: optional preallocated float32 arrays per sensor to fill (e.g. shared memory).
        """
        import torch
        import torch.nn.functional as F

        idx, rows = self._batch_rows(indices)
        arrays = self._open()
        out: dict[str, Any] = {}
        for name, parts in self._plan.items():
            shape = (len(idx), self.sensors[name].num_channels, IMAGE_SIZE, IMAGE_SIZE)
            if into is not None and name in into:
                batch = into[name]
                if batch.shape != shape or batch.dtype != np.float32:
                    raise ValueError(f"into[{name!r}] must be float32 {shape}, got {batch.dtype} "
                                     f"{batch.shape}")
            else:
                batch = np.empty(shape, np.float32)
            for g, src_idx, dst_idx in parts:
                whole = len(src_idx) == len(g.bands) and np.array_equal(src_idx, np.arange(len(g.bands)))
                if whole and g.dtype == "float32" and len(parts) == 1 and np.array_equal(
                        dst_idx, np.arange(batch.shape[1])):
                    _gather(arrays[g.name], rows, batch)  # one copy, map -> batch
                    continue
                rec = _gather(arrays[g.name], rows)  # (B, bands, side, side)
                if not whole:
                    rec = rec[:, src_idx]
                if g.side != IMAGE_SIZE:
                    t = torch.from_numpy(np.ascontiguousarray(rec, dtype=np.float32))
                    rec = F.interpolate(t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic",
                                        align_corners=True).numpy()
                if np.array_equal(dst_idx, np.arange(dst_idx[0], dst_idx[0] + len(dst_idx))):
                    batch[:, dst_idx[0]:dst_idx[0] + len(dst_idx)] = rec
                else:
                    batch[:, dst_idx] = rec
            out[name] = batch
        return self._add_info(out, idx)

    def raw_groups(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        """The arrays of :meth:`get_raw_batch`: (key, sensor, channels they fill, side) each.

        ``channels`` are positions in the sensor's band order (``self.sensors[sensor].bands``).
        """
        return [
            (g.name, name, tuple(int(c) for c in dst_idx), g.side)
            for name, parts in self._plan.items()
            for g, _, dst_idx in parts
        ]

    def get_raw_batch(self, indices: Sequence[int] | np.ndarray, *,
                      into: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """The stored records as they are (no upsampling, no float conversion), one array per group.

        ``{key: (B, bands, side, side) in the stored dtype (uint16 S2 bands of the native layout,
        float32 S1), "labels", "id", "split"}`` with keys and bands as in :meth:`raw_groups`; what
        :func:`csmae.models.device_batch.assemble` turns into :meth:`get_batch`'s arrays on a device.
        ``into``: optional preallocated arrays per key to fill (e.g. shared memory).
        """
        idx, rows = self._batch_rows(indices)
        arrays = self._open()
        out: dict[str, Any] = {}
        for parts in self._plan.values():
            for g, src_idx, _ in parts:
                shape = (len(idx), len(src_idx), g.side, g.side)
                buf = (into or {}).get(g.name)
                if buf is not None and (buf.shape != shape or buf.dtype != np.dtype(g.dtype)):
                    raise ValueError(
                        f"into[{g.name!r}] must be {g.dtype} {shape}, got {buf.dtype} {buf.shape}"
                    )
                if len(src_idx) == len(g.bands) and np.array_equal(src_idx, np.arange(len(g.bands))):
                    out[g.name] = _gather(arrays[g.name], rows, buf)
                else:
                    rec = _gather(arrays[g.name], rows)[:, src_idx]
                    if buf is not None:
                        buf[...] = rec
                    out[g.name] = rec if buf is None else buf
        return self._add_info(out, idx)

    def load(self, patch_id: str) -> Sample:
        i = self._index[patch_id]
        b = self.get_batch([i])
        sample: Sample = {"id": patch_id}
        for name in self.sensors:
            sample[name] = b[name][0]
        sample["labels"] = b["labels"][0]
        sample["split"] = self._splits[i]
        sample.update(self.metadata(i))
        return sample

    def metadata(self, i: int) -> dict[str, Any]:
        """Metadata of pair ``i`` (no pixels): the source's columns and, if stored, the geo keys."""
        from csmae.geo.columns import sample_keys

        out = {c: v[i] for c, v in self._meta.items() if v[i] is not None}
        if self._geo is not None:
            out.update(sample_keys(self._geo, i))
        return out


def open_store(path: str | os.PathLike[str], **kwargs: Any) -> StoreDataset:
    return StoreDataset(path, **kwargs)


def store_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest plus bytes on disk (for ``csmae info``)."""
    p = Path(path)
    manifest = read_manifest(p)
    size = sum(f.stat().st_blocks * 512 for f in p.iterdir() if f.is_file())
    pairs = int(manifest.get("counts", {}).get("pairs", 0)) or 1
    return {**manifest, "bytes_on_disk": size, "bytes_per_pair": size / pairs}


class BatchedView:
    """Map-style dataset of whole batches: ``view[indices] == ds.get_batch(indices)``.

    For DataLoader workers that assemble whole batches (no per-sample collation)::

        sampler = BatchSampler(RandomSampler(ds), batch_size=256, drop_last=True)
        loader = DataLoader(BatchedView(ds), batch_size=None, sampler=sampler, num_workers=2)
    """

    def __init__(self, ds: StoreDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, indices: Sequence[int]) -> dict[str, Any]:
        import torch

        if torch.utils.data.get_worker_info() is None:
            return self.ds.get_batch(indices)
        # in a DataLoader worker: fill shared-memory tensors directly (saves one full copy per batch)
        n = len(indices)
        shared = {k: torch.empty((n, s.num_channels, IMAGE_SIZE, IMAGE_SIZE)).share_memory_()
                  for k, s in self.ds.sensors.items()}
        batch = self.ds.get_batch(indices, into={k: t.numpy() for k, t in shared.items()})
        batch.update(shared)
        return batch
