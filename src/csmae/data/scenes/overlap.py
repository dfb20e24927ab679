"""Overlapping scenes of one pass kept once: one ``csmae tile`` run, the same ground cut from two tiles.

Neighbouring MGRS tiles overlap by about 10 km (109.8 km tiles on a 100 km step), slices of one S1
datatake a little; their patch grids are offset against each other, so the same ground appears in
two patches that differ by a few hundred metres. Two kept patches of *different* scenes of the grid
sensor (the sensor whose scenes define the patch grid: S2 when given) are the same ground, date and
sensor when they share the place key (:func:`csmae.geo.place.place_of` of the footprint), the sensor
and the acquisition (:func:`csmae.geo.acquisition.acquisition_of` of the scene name and time). Of
such a group one scene is kept, chosen from the patches alone (never from the argument order):

1. more valid pixels (summed over the patch's sensors: nodata, S1 border, ``--scl`` classes),
2. then farther from the edge of its own scene (nearer its tile's centre), in metres,
3. then the scene name (the first in sorted order).

Every patch of the other scenes in the group goes to ``skipped.csv`` with a reason naming the kept
patch and why it was kept; the store manifest's ``tiling.overlap`` counts them. Patches of one scene
never count as duplicates of each other (at a stride under 120 px, or where a grid rotated in the next
UTM zone puts two neighbours in one cell, they are different ground). A paired row goes with its
grid-sensor patch: its S1 follows. An S1 item may still repeat when one S1 scene is paired with two
S2 acquisitions of overlapping tiles (different S2 dates, so both pairs are kept); those are counted
in ``tiling.overlap.repeated`` and ``csmae ingest`` / ``csmae index add`` keep one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from csmae.data.scenes.job import SceneJob
from csmae.data.scenes.readers import by_priority, reader_of
from csmae.geo.acquisition import acquisition_of
from csmae.geo.place import places_of

#: how the choice is described in the store manifest
RULE = ("the same place (csmae.geo.place_of), sensor and acquisition (csmae.geo.acquisition_of) cut from "
        "two scenes of the grid sensor is kept once: the scene whose patch has more valid pixels, then the "
        "one farther from its scene's edge, then the first scene name")
WHY = ("more valid pixels", "farther from its scene's edge", "scene name")


@dataclass(frozen=True)
class _Candidate:
    pos: int  # index into the entries
    job: int
    valid: int  # valid pixels summed over the patch's sensors
    edge_m: float  # distance from the patch centre to the nearest edge of its scene (grid CRS, m)

    def rank(self, name: str) -> tuple[int, float, str]:
        return (-self.valid, -self.edge_m, name)


def _scene_edges(job: SceneJob, top: str) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the grid scene's extent, in the patch grid's CRS."""
    from rasterio.warp import transform_bounds

    ext = reader_of(top).extent(job.scenes[top][0])
    b = ext.bounds()
    if ext.crs == job.grid.crs:
        return b
    return tuple(transform_bounds(ext.crs, job.grid.crs, *b, densify_pts=21))  # type: ignore[return-value]


def _edge_distance(transform: Sequence[float], size: int, edges: tuple[float, float, float, float]) -> float:
    a, b, c, d, e, f = transform[:6]
    cx, cy = c + (a + b) * size / 2, f + (d + e) * size / 2  # the patch centre
    left, bottom, right, top = edges
    return float(min(cx - left, right - cx, cy - bottom, top - cy))


Entry = dict[str, Any]


def keep_once(jobs: Sequence[SceneJob], entries: list[Entry], job_of: Sequence[int],
              valid: Sequence[int | None]) -> tuple[list[Entry], list[Entry], dict[str, Any]]:
    """Drop the duplicates of the module docstring from a run's table entries.

    Args:
        jobs: the run's scene jobs; entries: the kept patches' table entries (``geo`` with the
            footprint as WKB hex and the patch transform), in row order; job_of: per entry, its job;
        valid: per entry, its valid pixels summed over its sensors (None: unknown, taken as 0).

    Returns:
        (kept entries, skipped rows of the dropped patches, the manifest's ``tiling.overlap``).
    """
    sensors = list(jobs[0].scenes) if jobs else []
    top = by_priority(sensors)[0]
    label = reader_of(top).label
    acq = [acquisition_of(j.scenes[top][0].scene.name, j.scenes[top][0].scene.datetime) for j in jobs]
    places = _places(entries)
    edges: dict[int, tuple[float, float, float, float]] = {}
    groups: dict[tuple[str, str], list[int]] = {}  # (place, acquisition) -> entry positions
    for i, j in enumerate(job_of):
        place, key = places[i], acq[j]
        if place is not None and key is not None:
            groups.setdefault((place, key), []).append(i)
    dropped: dict[int, str] = {}
    why_count = dict.fromkeys(WHY, 0)
    for (place, key), members in groups.items():
        if len({job_of[i] for i in members}) < 2:
            continue
        full = []
        for i in members:
            j = job_of[i]
            if j not in edges:
                edges[j] = _scene_edges(jobs[j], top)
            full.append(_Candidate(i, j, int(valid[i] or 0), round(
                _edge_distance(entries[i]["geo"]["transform"], jobs[j].grid.size, edges[j]), 3)))
        best: dict[int, _Candidate] = {}
        for c in full:
            name = jobs[c.job].name
            if c.job not in best or (c.rank(name), entries[c.pos]["id"]) < \
                    (best[c.job].rank(name), entries[best[c.job].pos]["id"]):
                best[c.job] = c
        win = min(best.values(), key=lambda c: c.rank(jobs[c.job].name))
        area = _pixels(jobs[win.job])
        for c in full:
            if c.job == win.job:
                continue
            other = best[c.job]
            why = _why(win, other, area)
            why_count[why[0]] += 1
            dropped[c.pos] = (
                f"same ground as {entries[win.pos]['id']} (place {place}, {label} acquisition {key}, "
                f"scenes {jobs[win.job].name} and {jobs[c.job].name} overlap): kept that one for {why[1]}")
    kept = [e for i, e in enumerate(entries) if i not in dropped]
    skipped = [{"patch": entries[i]["id"], "file": _files(jobs[job_of[i]]), "reason": dropped[i]}
               for i in sorted(dropped)]
    summary: dict[str, Any] = {
        "rule": RULE,
        "acquisitions": {j.name: a for j, a in zip(jobs, acq, strict=True)},
        "dropped": len(dropped),
        "kept_for": why_count,
    }
    summary["repeated"] = _repeated(jobs, kept, [job_of[i] for i in range(len(entries)) if i not in dropped],
                                    top)
    return kept, skipped, summary


def _pixels(job: SceneJob) -> int:
    """Pixels of one patch summed over its sensors (the denominator of the valid fraction)."""
    return job.grid.size * job.grid.size * len(job.scenes)


def _why(win: _Candidate, other: _Candidate, area: int) -> tuple[str, str]:
    if win.valid != other.valid:
        return WHY[0], f"{WHY[0]} ({win.valid / area:.1%} vs {other.valid / area:.1%})"
    if win.edge_m != other.edge_m:
        return WHY[1], f"{WHY[1]} ({win.edge_m / 1000:.2f} km vs {other.edge_m / 1000:.2f} km)"
    return WHY[2], f"its {WHY[2]} (equal valid pixels and distance from the edge)"


def _places(entries: Sequence[dict[str, Any]]) -> list[str | None]:
    """The place key of each entry's footprint (None without one)."""
    return places_of([bytes.fromhex(e["geo"]["geometry"]) if (e.get("geo") or {}).get("geometry") else None
                      for e in entries])


def _repeated(jobs: Sequence[SceneJob], kept: list[dict[str, Any]], job_of: list[int], top: str
              ) -> dict[str, int]:
    """Per other sensor: kept items whose (place, sensor, acquisition) a kept pair of another scene holds."""
    out: dict[str, int] = {}
    others = by_priority(jobs[0].scenes)[1:]
    if not kept or not others:
        return out
    places = _places(kept)
    for sensor in others:
        first: dict[tuple[str, str], int] = {}
        extra: list[int] = []
        for i, e in enumerate(kept):
            g = e.get("geo") or {}
            a, place = acquisition_of(g.get(f"scene_{sensor}"), g.get(f"datetime_{sensor}")), places[i]
            if place is None or a is None:
                continue
            j = first.setdefault((place, a), job_of[i])
            if j != job_of[i]:
                extra.append(i)
        out[sensor] = len(extra)
    return out


def _files(job: SceneJob) -> str:
    return ";".join(s.scene.source for sources in job.scenes.values() for s in sources)


def valid_totals(counts: dict[str, np.ndarray], keep: np.ndarray) -> list[int]:
    """Per kept patch of a strip, its valid pixels summed over the sensors (``counts``: per sensor,
    (cols,) valid pixels of each patch)."""
    total = np.zeros(len(keep), dtype=np.int64)
    for c in counts.values():
        total += np.asarray(c, dtype=np.int64)[keep]
    return [int(v) for v in total]
