"""Writing a prepared store (see :mod:`csmae.data.store`): record files, table, manifest.

Used by ``csmae prepare`` (chunked, resumable, :mod:`csmae.data.prepare`) and by the synthetic
archive (:mod:`csmae.data.synth`, everything in memory).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import check_replaceable, clean_stale_temps, replace_folder
from csmae.data.base import DataError, Sample
from csmae.data.store import (
    MANIFEST,
    SKIPPED,
    STORE_KIND,
    STORE_VERSION,
    TABLE,
    ArrayGroup,
)
from csmae.integrity import checksum_files
from csmae.labels import LABELS_19
from csmae.sensors import IMAGE_SIZE, Sensor
from csmae.version import __version__


def open_records(folder: Path, groups: Sequence[ArrayGroup], rows: int, *,
                 create: bool) -> dict[str, np.memmap]:
    """Writable memmaps (rows, bands, side, side) per group; ``create`` allocates sparse files."""
    out: dict[str, np.memmap] = {}
    for g in groups:
        path = folder / g.file
        if create or not path.exists():
            out[g.name] = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(g.dtype),
                                                    shape=(rows, *g.record_shape()))
        else:
            out[g.name] = np.load(path, mmap_mode="r+")
            if out[g.name].shape != (rows, *g.record_shape()):
                raise DataError(f"record file has shape {out[g.name].shape}, expected "
                                f"{(rows, *g.record_shape())}", path=str(path))
    return out


@lru_cache(maxsize=8)
def _downsampler(side: int) -> np.ndarray:
    """(side, 120) float64 left inverse of the bicubic (align_corners=True) side -> 120 upsampling."""
    import torch
    import torch.nn.functional as F

    eye = torch.eye(side, dtype=torch.float64)[:, None, :, None]  # (side, 1, side, 1)
    up = F.interpolate(eye, size=(IMAGE_SIZE, 1), mode="bicubic", align_corners=True)  # (side,1,120,1)
    a = up[:, 0, :, 0].T.numpy()  # (120, side): column j = upsampled unit vector j
    return np.linalg.pinv(a)


def native_from_upsampled(
    x: np.ndarray, group: ArrayGroup, *, patch: str, band_names: Sequence[str]
) -> np.ndarray:
    """Recover native integer bands from their 120x120 bicubic upsampling, exactly or not at all.

    The upsampling is linear and injective, so a least-squares solve followed by rounding gives the
    native uint16 bands; re-upsampling them must reproduce ``x`` bit for bit, else DataError.
    """
    from csmae.data.base import upsample_stack

    x64 = x.astype(np.float64)
    if group.side != IMAGE_SIZE:
        p = _downsampler(group.side)
        x64 = p @ x64 @ p.T  # (k, side, side)
    native = np.rint(x64)
    info = np.iinfo(np.dtype(group.dtype))
    if native.min(initial=0) < info.min or native.max(initial=0) > info.max:
        raise DataError(f"{group.sensor} bands {list(band_names)} leave the {group.dtype} range",
                        patch=patch)
    out = native.astype(group.dtype)
    again = upsample_stack(list(out), IMAGE_SIZE)
    if not np.array_equal(again, x):
        raise DataError(
            f"{group.sensor} bands {list(band_names)} are not an exact {group.dtype} "
            f"{group.side}x{group.side} band upsampled bicubically; use the store layout 'float32'",
            patch=patch,
        )
    return out


def records_from_sample(sample: Sample, groups: Sequence[ArrayGroup], sensors: Mapping[str, Sensor]
                        ) -> dict[str, np.ndarray]:
    """Per group, the record to store, from a reader sample ((C,120,120) float32 per sensor)."""
    out = {}
    pid = str(sample.get("id"))
    for g in groups:
        if g.sensor not in sample:
            raise DataError(f"sample has no {g.sensor} image", patch=pid)
        sensor = sensors[g.sensor]
        x = sample[g.sensor][[sensor.index(b) for b in g.bands]]  # (k, 120, 120)
        if g.dtype == "float32":
            out[g.name] = np.asarray(x, dtype=np.float32)
        else:
            out[g.name] = native_from_upsampled(np.asarray(x, np.float32), g, patch=pid, band_names=g.bands)
    return out


def records_from_native(bands: Mapping[str, Mapping[str, np.ndarray]], groups: Sequence[ArrayGroup]
                        ) -> dict[str, np.ndarray]:
    """Per group, the record from native-size bands ({sensor: {band: array}})."""
    from csmae.data.base import upsample_stack

    out = {}
    for g in groups:
        arrs = [bands[g.sensor][b] for b in g.bands]
        if all(a.shape == (g.side, g.side) for a in arrs):
            out[g.name] = np.stack(arrs).astype(g.dtype, copy=False)
        else:  # float32 layout: bands of several native sizes, stored upsampled
            out[g.name] = upsample_stack(arrs, g.side)
    return out


def _meta_value(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def pair_entry(sample: Mapping[str, Any], row: int, sensors: Sequence[str]) -> dict[str, Any]:
    """The JSON-able table entry of one stored pair (geo keys under ``"geo"``, see csmae.geo.columns)."""
    from csmae.geo.columns import entry_geo
    from csmae.geo.keys import GEO_KEYS

    skip = {"id", "labels", "split", *sensors, *GEO_KEYS, "place"}  # place: from the geometry (geo columns)
    labels = np.asarray(sample["labels"], dtype=bool)
    if labels.shape != (len(LABELS_19),):
        raise DataError(f"labels have shape {labels.shape}, expected ({len(LABELS_19)},)",
                        patch=str(sample.get("id")))
    return {
        "id": str(sample["id"]),
        "row": int(row),
        "split": sample.get("split"),
        "labels": np.flatnonzero(labels).tolist(),
        "meta": {k: _meta_value(v) for k, v in sample.items()
                 if k not in skip and not isinstance(v, np.ndarray)},
        "geo": entry_geo(sample),
    }


def write_table(folder: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    """pairs.parquet from pair entries (see :func:`pair_entry`); a GeoParquet file when they have geo."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.geo.columns import table_columns
    from csmae.geo.parquet import geo_metadata, with_geo_metadata

    n = len(entries)
    labels = np.zeros((n, len(LABELS_19)), dtype=bool)
    for i, e in enumerate(entries):
        labels[i, e["labels"]] = True
    cols: dict[str, Any] = {
        "id": pa.array([e["id"] for e in entries], pa.string()),
        "row": pa.array([e["row"] for e in entries], pa.int64()),
        "split": pa.array([e["split"] for e in entries], pa.string()),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(labels.reshape(-1)), len(LABELS_19)),
    }
    keys: list[str] = []
    for e in entries:
        keys.extend(k for k in e["meta"] if k not in keys)
    for k in keys:
        values = [e["meta"].get(k) for e in entries]
        try:
            cols[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cols[k] = pa.array([None if v is None else str(v) for v in values], pa.string())
    geo = table_columns([e.get("geo") or {} for e in entries])
    cols.update(geo)
    table = pa.table(cols)
    if geo:
        table = with_geo_metadata(table, geo_metadata(cols["geometry"].to_pylist(), covering=False))
    pq.write_table(table, folder / TABLE)


def write_skipped(folder: Path, skipped: Sequence[Mapping[str, Any]]) -> None:
    import csv

    with open(folder / SKIPPED, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patch", "file", "reason"])
        for s in skipped:
            w.writerow([s.get("patch") or "", s.get("file") or "", s.get("reason") or ""])


def write_manifest(
    folder: Path, *, sensors: Mapping[str, Sensor], groups: Sequence[ArrayGroup], layout: str,
    rows: int, entries: Sequence[Mapping[str, Any]], skipped: int, source: Any, producer: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    by_split: dict[str, int] = {}
    for e in entries:
        key = e["split"] or "none"
        by_split[key] = by_split.get(key, 0) + 1
    manifest = {
        "kind": STORE_KIND,
        "version": STORE_VERSION,
        "layout": layout,
        "source": source,
        "producer": producer,
        "csmae_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sensors": {k: s.to_dict() for k, s in sensors.items()},
        "units": {k: s.units for k, s in sensors.items()},
        "groups": [{**g.to_dict(), "shape": [rows, *g.record_shape()]} for g in groups],
        "resampling": {
            "size": IMAGE_SIZE, "method": "bicubic", "align_corners": True,
            "when": "read" if layout == "native" else "prepare",
        },
        "table": TABLE,
        "labels": list(LABELS_19),
        "counts": {"pairs": len(entries), "rows": rows, "skipped": skipped, "by_split": by_split},
        "geo": any((e.get("geo") or {}).get("geometry") for e in entries),
        **(extra or {}),
        # integrity: sizes + sha256 of every file; sizes checked on open, digests by `csmae verify`
        "checksums": checksum_files(folder, [g.file for g in groups] + [TABLE] +
                                    ([SKIPPED] if (folder / SKIPPED).exists() else [])),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_store(
    out: str | os.PathLike[str], *, sensors: Mapping[str, Sensor], groups: Sequence[ArrayGroup],
    records: Mapping[str, np.ndarray], entries: Sequence[Mapping[str, Any]], layout: str,
    source: Any, producer: str, overwrite: bool = False,
) -> Path:
    """Write a whole store from in-memory records ({group: (N, bands, side, side)}), atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    check_replaceable(out, STORE_KIND)  # only a store is replaced
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    clean_stale_temps(out)  # folders of killed earlier runs (dead pid, over an hour old)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n = len(entries)
    for g in groups:
        arr = records[g.name]
        if arr.shape != (n, *g.record_shape()):
            raise ValueError(f"group {g.name}: records of shape {arr.shape}, "
                             f"expected {(n, *g.record_shape())}")
        np.save(tmp / g.file, np.ascontiguousarray(arr, dtype=g.dtype))
    write_table(tmp, entries)
    write_skipped(tmp, [])
    write_manifest(tmp, sensors=sensors, groups=groups, layout=layout, rows=n, entries=entries,
                   skipped=0, source=source, producer=producer)
    replace_folder(tmp, out, kind=STORE_KIND)
    return out
