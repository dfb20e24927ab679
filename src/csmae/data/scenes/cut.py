"""Cutting one strip (one row of patches) of a scene: read each sensor, check, build records.

A strip is ``size`` rows of the 10 m patch grid across the whole scene. Each sensor's reader
(:mod:`.readers`) gives its pixels of the strip on that grid (S2: 10 m bands as (bands, 120, W)
uint16 and 20 m bands from their own grid; S1: reprojected onto the strip's grid), and every patch
is a view of those arrays. Memory per strip is a few tens of MB whatever the scene size; a full
tile never sits in memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.data.scenes.grid import PatchGrid
from csmae.data.scenes.job import SceneJob
from csmae.data.scenes.overlap import valid_totals
from csmae.data.scenes.rasters import Datasets, iso
from csmae.data.scenes.readers import SCENE_READERS, by_priority, reader_of


@dataclass
class Strip:
    """What one strip gave: kept records (per group, stacked), their rows, entries, skips, timings."""

    rows: list[int] = field(default_factory=list)
    records: dict[str, np.ndarray] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    valid: list[int] = field(default_factory=list)  # per entry: valid pixels summed over the sensors


def _window_sums(mask: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """Valid pixels per patch of the strip: (size, W) bool -> (cols,) counts via column cumsums."""
    col = np.concatenate([[0], np.cumsum(mask.sum(axis=0, dtype=np.int64))])
    starts = np.arange(grid.cols) * grid.stride
    return col[starts + grid.size] - col[starts]


def cut_strip(job: SceneJob, r: int, dss: Datasets) -> Strip:
    """Records, table entries and skips of the patches of strip ``r`` of ``job``."""
    g = job.grid
    st = Strip()
    sec = st.seconds
    area = g.size * g.size
    need = int(np.ceil(job.min_valid * area - 1e-9))
    ok = np.ones(g.cols, dtype=bool)
    reasons: list[list[str]] = [[] for _ in range(g.cols)]
    pixels: dict[str, Any] = {}
    valid_counts: dict[str, np.ndarray] = {}
    for sensor in job.scenes:  # the patch-grid sensor first, then the others
        reader = reader_of(sensor)
        got = reader.read_strip(job, sensor, r, dss, sec)
        valid, flags = got.valid, got.flags
        if flags is not None:
            flagged = _window_sums(flags & valid, g)
            valid &= ~flags
        counts = _window_sums(valid, g)
        valid_counts[sensor] = counts
        for c in np.flatnonzero(counts < need):
            ok[c] = False
            why = f"{reader.label} valid pixels {counts[c] / area:.1%} < --min-valid {job.min_valid:.0%}"
            if flags is not None and flagged[c]:
                why += f" ({reader.flag_note} {flagged[c] / area:.1%})"
            elif reader.invalid_note:
                why += f" ({reader.invalid_note})"
            reasons[c].append(why)
        pixels[sensor] = got.data
    foot = g.footprints(r)
    if job.aoi is not None:
        import shapely

        inside = shapely.intersects(shapely.from_wkb(job.aoi), shapely.from_wkb(foot))
        for c in np.flatnonzero(~inside):
            ok[c] = False
            reasons[c].append("outside the --bbox / --aoi area")
    keep = np.flatnonzero(ok)
    for cs in np.flatnonzero(~ok).tolist():
        st.skipped.append({"patch": g.patch_id(job.name, r, cs), "file": _files(job),
                           "reason": "; ".join(reasons[cs])})
    if not len(keep):
        return st
    t0 = time.perf_counter()
    st.records = _records(job, pixels, keep, sec)
    sec["build"] = sec.get("build", 0.0) + time.perf_counter() - t0 - sec.get("_up", 0.0)
    sec.pop("_up", None)
    meta = _scene_meta(job)
    st.valid = valid_totals(valid_counts, keep)  # ranks overlapping scenes' patches (:mod:`.overlap`)
    for cc in keep.tolist():
        row = job.row_base + r * g.cols + cc
        st.rows.append(row)
        st.entries.append({"id": g.patch_id(job.name, r, cc), "row": row, "split": None, "labels": [],
                           "meta": {}, "geo": {"geometry": foot[cc].hex(), "crs": g.crs_string(),
                                               "transform": list(g.patch_transform(r, cc))[:6], **meta}})
    return st


def _files(job: SceneJob) -> str:
    return ";".join(s.scene.source for sources in job.scenes.values() for s in sources)


def _scene_meta(job: SceneJob) -> dict[str, Any]:
    """Scene ids and acquisition times per sensor (the store's geo columns; None for a missing sensor).

    With several scenes of a sensor over one job, the nearest in time (the first one used) is named.
    """
    meta: dict[str, Any] = {}
    for sensor in by_priority(SCENE_READERS):
        sources = job.scenes.get(sensor, ())
        scene = sources[0].scene if sources else None
        meta[f"scene_{sensor}"] = scene.name if scene else None
        meta[f"datetime_{sensor}"] = iso(scene.datetime) if scene else None
    return meta


def _records(job: SceneJob, pixels: dict[str, Any], keep: np.ndarray, sec: dict[str, float]
             ) -> dict[str, np.ndarray]:
    """Per group, (len(keep), bands, side, side) records of the kept patches (by the sensor's reader)."""
    cols = keep.tolist()
    return {grp.name: reader_of(grp.sensor).records(job, grp, pixels[grp.sensor], cols, sec)
            for grp in job.groups}


def strip_count(jobs: Sequence[SceneJob]) -> int:
    return sum(j.grid.rows for j in jobs)
