"""The reference CSMAE implementation's "encoded" LMDB (v1 S2 name -> pickled S1+S2 record).

Accepted sources: the folder holding ``BigEarthNetEncoded.lmdb`` and ``train/val/test.csv``, or
the ``.lmdb`` folder itself (split csvs are then looked for next to it). Records are decoded with
:mod:`csmae.data.unpickle` (no third-party package, no arbitrary globals). Labels are the record's
19-class ``new_labels`` (from ``__stored_args__``); they live inside the pickles, so they are
checked when a patch is read, not at open time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError
from csmae.data.reben import LazyLmdb, is_lmdb_dir
from csmae.data.records import PatchRecord, RecordDataset, finalize, labels_from_19
from csmae.data.unpickle import Stub, restricted_loads
from csmae.sensors import Sensor

LMDB_NAME = "BigEarthNetEncoded.lmdb"
SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}


def locate(path: Path) -> tuple[Path, Path] | None:
    """(lmdb dir, folder with the split csvs) if ``path`` is an encoded LMDB source."""
    if path.is_dir() and is_lmdb_dir(path / LMDB_NAME):
        return path / LMDB_NAME, path
    if path.name.endswith(".lmdb") and is_lmdb_dir(path):
        return path, path.parent
    return None


def _bands(obj: Any, *, what: str, patch: str, path: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, Stub):
        raise DataError(f"record has no {what}", patch=patch, path=path)
    out: dict[str, np.ndarray] = {}
    for band in obj.fields().get("bands") or []:
        f = band.fields() if isinstance(band, Stub) else {}
        name, data = f.get("name"), f.get("data")
        if not isinstance(name, str) or not isinstance(data, np.ndarray) or data.dtype.kind not in "uif":
            raise DataError(f"{what} has a malformed band entry", patch=patch, path=path)
        out[name] = data
    if not out:
        raise DataError(f"{what} has no bands", patch=patch, path=path)
    return out


def decode_record(blob: bytes, *, key: str, path: str) -> dict[str, Any]:
    """{"s1": band -> array, "s2": band -> array, "labels": 19-class names, "labels_43": names}."""
    rec = restricted_loads(blob, key=key, path=path)
    if not isinstance(rec, Stub):
        raise DataError(f"record is a {type(rec).__name__}, not a BigEarthNet patch object",
                        patch=key, path=path)
    f = rec.fields()
    raw_stored = f.get("__stored_args__")
    stored: dict[str, Any] = raw_stored if isinstance(raw_stored, dict) else {}
    new = stored.get("new_labels", f.get("new_labels"))
    old = stored.get("labels", f.get("labels"))
    return {
        "s1": _bands(f.get("s1_patch"), what="s1_patch", patch=key, path=path),
        "s2": _bands(f.get("s2_patch"), what="s2_patch", patch=key, path=path),
        "labels": None if new is None else [str(x) for x in new],
        "labels_43": None if old is None else [str(x) for x in old],
    }


class EncodedDataset(RecordDataset):
    """Samples decoded from the encoded LMDB (use :func:`open_encoded`)."""

    def __init__(self, *, lmdb_path: str, **kw: Any):
        super().__init__(**kw)
        self._db = LazyLmdb(lmdb_path)

    def read_arrays(self, i: int) -> dict[str, Any]:
        pid = self._ids[i]
        blob = self._db.get(pid)
        if blob is None:
            raise DataError("key missing from the LMDB", patch=pid, path=self._db.path)
        rec = decode_record(blob, key=pid, path=self._db.path)
        if rec["labels"] is None:
            raise DataError("record has no new_labels (19-class labels)", patch=pid, path=self._db.path)
        labels, problem = labels_from_19(rec["labels"], where=f"patch {pid}")
        if problem:
            raise DataError(problem, patch=pid, path=self._db.path)
        return {"s1": rec["s1"], "s2": rec["s2"], "labels": labels, "path": self._db.path}


def open_encoded(
    path: Path, *, sensors: dict[str, Sensor], ids: list[str] | None = None,
    split: set[str] | None = None, on_error: str = "raise",
) -> EncodedDataset:
    found = locate(path)
    if found is None:
        raise DataError(f"not an encoded LMDB (expected {LMDB_NAME}/data.mdb)", path=str(path))
    lmdb_dir, csv_dir = found
    source = str(lmdb_dir)
    db = LazyLmdb(source)
    keys = sorted(db.keys())
    if not keys:
        raise DataError("the LMDB is empty", path=source)
    splits: dict[str, str] = {}
    clash: dict[str, str] = {}
    for split_name, fname in SPLIT_FILES.items():
        p = csv_dir / fname
        if p.is_file():
            for line in p.read_text().splitlines():
                name = line.strip().split(",")[0]
                if name and splits.setdefault(name, split_name) != split_name:
                    clash[name] = f"listed in both {splits[name]}.csv and {fname}"
    from csmae.geo.keys import time_from_name

    # geo keys: no georeferencing in the LMDB (geometry None); the S2 time where the name gives it
    records = [PatchRecord(id=k, loc=k, split=splits.get(k), problem=clash.get(k),
                           geo={"datetime": {"s1": None, "s2": time_from_name(k)}}) for k in keys]
    records, problems = finalize(records, source=source, on_error=on_error, ids=ids, split=split)
    return EncodedDataset(records=records, sensors=sensors, source=source, kind="encoded-lmdb",
                          problems=problems, lmdb_path=source)
