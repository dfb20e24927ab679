"""Record-backed datasets: the part every archive reader shares.

A reader turns a source into :class:`PatchRecord` s (id, labels, split, metadata, where the pixels
are, and a pairing problem if any) at open time without reading pixels, then hands them to
:func:`finalize`, which applies the ``ids``/``split`` filters, finds duplicates and either raises
one :class:`DataError` naming every problem (``on_error="raise"``) or drops the bad patches and
records them in ``ds.problems`` (``on_error="skip"``). :class:`RecordDataset` then serves samples;
subclasses only implement :meth:`RecordDataset.read_arrays`.

Pixel problems (missing/truncated band files, wrong shapes, NaN) are found lazily, when a patch is
read; ``csmae prepare`` reads every patch and turns those errors into skips in its report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError, PairedDataset, Sample, check_band, upsample_stack
from csmae.labels import LABELS_19, UnknownLabelError, map_43_to_19, multi_hot
from csmae.sensors import IMAGE_SIZE, Sensor

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
ON_ERROR = ("raise", "skip")
_MAX_LISTED = 10


@dataclass(slots=True)
class PatchRecord:
    """One pair as known at open time (no pixels)."""

    id: str
    loc: Any = None  # reader-specific location of the pixels
    labels: np.ndarray | None = None  # (19,) bool; None = read with the pixels
    split: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    aliases: tuple[str, ...] = ()  # other names users may give for this pair (e.g. the v1 S2 name)
    #: geo keys known at open time (datetime/scene per sensor, ...); the footprint is read lazily
    geo: dict[str, Any] | None = None


def normalise_split(value: Any, *, where: str = "") -> str | None:
    """``"validation"`` -> ``"val"``; None/NaN -> None; anything unknown is an error."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    key = str(value).strip().lower()
    if key not in SPLIT_NAMES:
        raise DataError(f"unknown split {value!r}; expected train, val/validation or test", path=where)
    return SPLIT_NAMES[key]


def labels_from_19(names: Iterable[str], *, where: str) -> tuple[np.ndarray | None, str | None]:
    """(multi-hot, None) or (None, problem) for a list of 19-class names."""
    names = list(names)
    try:
        vec = multi_hot(names, where=where)
    except UnknownLabelError as exc:
        return None, str(exc)
    if not vec.any():
        return None, "no 19-class label"
    return vec, None


def labels_from_43(names: Iterable[str], *, where: str) -> tuple[np.ndarray | None, str | None]:
    """(multi-hot, None) or (None, problem) for a list of 43-class CLC names."""
    try:
        mapped = map_43_to_19(names, where=where)
    except UnknownLabelError as exc:
        return None, str(exc)
    if not mapped:
        return None, "no 19-class label (its 43-class labels all map to none)"
    return multi_hot(mapped), None


def read_ids_arg(ids: Iterable[str] | str | os.PathLike[str] | None) -> list[str] | None:
    """``ids`` option: None, an iterable of ids, or a names file (one id per line, # comments)."""
    if ids is None:
        return None
    if isinstance(ids, (str, os.PathLike)):
        path = Path(ids)
        if not path.is_file():
            raise DataError("ids names file not found", path=str(path))
        lines = path.read_text().splitlines()
        return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    return [str(s) for s in ids]


def read_split_arg(split: str | Sequence[str] | None) -> set[str] | None:
    if split is None:
        return None
    names = [split] if isinstance(split, str) else list(split)
    return {s for s in (normalise_split(n) for n in names) if s is not None}


def _listing(items: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {pid}: {why}" for pid, why in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
    return "\n".join(lines)


def filter_records(
    records: list[PatchRecord], *, ids: list[str] | None, split: set[str] | None, source: str,
    problems: list[tuple[str, str]], on_error: str,
) -> list[PatchRecord]:
    """Keep the records named by ``ids`` (in that order) and in ``split``; report unknown ids."""
    if ids is not None:
        by_name: dict[str, list[PatchRecord]] = {}
        for r in records:
            for name in (r.id, *r.aliases):
                by_name.setdefault(name, []).append(r)
        out: list[PatchRecord] = []
        seen: set[int] = set()
        missing: list[tuple[str, str]] = []
        for name in ids:
            hits = by_name.get(name)
            if not hits:
                missing.append((name, "requested id not found in the source"))
                continue
            for r in hits:
                if id(r) not in seen:
                    seen.add(id(r))
                    out.append(r)
        if missing:
            if on_error == "raise":
                raise DataError(f"{len(missing)} requested id(s) are not in the source:\n{_listing(missing)}",
                                path=source)
            problems.extend(missing)
        records = out
    if split is not None:
        if records and all(r.split is None for r in records):
            raise DataError("the source has no split information (for v1 folders pass tables=DIR "
                            "with train/val/test.csv.bz2)", path=source)
        records = [r for r in records if r.split in split]
    return records


def finalize(
    records: list[PatchRecord], *, source: str, on_error: str, ids: list[str] | None = None,
    split: set[str] | None = None, problems: list[tuple[str, str]] | None = None,
) -> tuple[list[PatchRecord], list[tuple[str, str]]]:
    """Filter, find duplicates and pairing problems; raise or drop them per ``on_error``."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    problems = list(problems or [])
    records = filter_records(records, ids=ids, split=split, source=source, problems=problems,
                             on_error=on_error)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.id] = counts.get(r.id, 0) + 1
    bad = [(r.id, r.problem) for r in records if r.problem]
    dups = sorted(pid for pid, c in counts.items() if c > 1)
    bad += [(pid, f"duplicate id ({counts[pid]} entries in the source)") for pid in dups]
    if bad:
        if on_error == "raise":
            raise DataError(f"{len(bad)} problem(s) found while opening:\n{_listing(bad)}\n"
                            "(pass on_error='skip' to drop these patches)", path=source)
        problems.extend(bad)
        dup_set = set(dups)
        records = [r for r in records if not r.problem and r.id not in dup_set]
        log.warning("%s: skipped %d patch(es) with problems", source, len(bad))
    return records, problems


def assemble(arrays: Mapping[str, np.ndarray], sensor: Sensor, *, patch: str, path: str) -> np.ndarray:
    """(C, 120, 120) float32 in ``sensor.bands`` order from native-size bands (checked, upsampled)."""
    bands = []
    for b in sensor.bands:
        if b not in arrays:
            raise DataError(f"band {b} is missing (has {sorted(arrays)})", patch=patch, path=path)
        arr = arrays[b]
        check_band(arr, band=b, expected_side=sensor.native_side(b), patch=patch, path=path)
        bands.append(arr)
    return upsample_stack(bands, IMAGE_SIZE)


class RecordDataset(PairedDataset):
    """A :class:`PairedDataset` over finalized :class:`PatchRecord` s.

    Subclasses implement :meth:`read_arrays` returning, per sensor, a dict band -> native array
    (plus optionally a ``"labels"`` entry for sources that keep labels with the pixels).
    """

    def __init__(self, *, records: Sequence[PatchRecord], sensors: Mapping[str, Sensor], source: str,
                 kind: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(ids=[r.id for r in records], sensors=sensors, source=source)
        self.kind = kind
        self.problems: list[tuple[str, str]] = list(problems or [])
        self._locs = [r.loc for r in records]
        self._splits = [r.split for r in records]
        self._meta = [r.meta for r in records]
        self._geo: list[dict[str, Any] | None] = [r.geo for r in records]
        have = [r.labels is not None for r in records]
        self._labels: np.ndarray | None = None
        if records and all(have):
            labels = [r.labels for r in records if r.labels is not None]
            self._labels = np.stack(labels).astype(bool)  # (N, 19)

    def splits(self) -> list[str | None]:
        return list(self._splits)

    def labels_array(self) -> np.ndarray | None:
        """(N, 19) bool labels known without reading pixels, or None if the source stores them inline."""
        return None if self._labels is None else self._labels.copy()

    def metadata(self, i: int) -> dict[str, Any]:
        """Metadata of pair ``i`` without pixels: the source's fields and the geo keys, if any."""
        out: dict[str, Any] = dict(self._meta[i])
        geo = self.geo(i)
        if geo is not None:
            out.update(geo)
        return out

    def geo(self, i: int) -> dict[str, Any] | None:
        """The sample geo keys of pair ``i`` (see :mod:`csmae.geo.keys`), or None if the source has none.

        The base class returns what the reader knew at open time, completed with null geometry;
        georeferenced readers override it to read the footprint.
        """
        known = self._geo[i]
        if known is None:
            return None
        from csmae.geo.keys import no_geo

        return {**no_geo(), **known}

    def read_arrays(self, i: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, patch_id: str) -> Sample:
        i = self._index[patch_id]
        raw = self.read_arrays(i)
        sample: Sample = {"id": patch_id}
        for name, sensor in self.sensors.items():
            sample[name] = assemble(raw[name], sensor, patch=patch_id, path=raw.get("path", self.source))
        if self._labels is not None:
            sample["labels"] = self._labels[i].copy()
        else:
            labels = raw.get("labels")
            if labels is None:
                raise DataError("no labels", patch=patch_id, path=self.source)
            sample["labels"] = labels
        sample["split"] = self._splits[i]
        sample.update(self.metadata(i))
        return sample


__all__ = ["LABELS_19", "PatchRecord", "RecordDataset", "assemble", "finalize", "labels_from_19",
           "labels_from_43", "normalise_split", "read_ids_arg", "read_split_arg"]
