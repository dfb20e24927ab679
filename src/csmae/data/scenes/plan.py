"""From the paths the user gave to the list of scene jobs: find scenes, check grids, pair S1 with S2."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from csmae.data.base import DataError
from csmae.data.scenes.cut import DEFAULT_SCL_CODES, S1Source, SceneJob
from csmae.data.scenes.grid import PatchGrid, grid_from_s1, grid_from_s2
from csmae.data.scenes.rasters import GridInfo
from csmae.data.scenes.s1 import S1Scene, check_grid, find_s1_scenes
from csmae.data.scenes.s2 import S2Scene, check_grids, find_s2_scenes
from csmae.data.scenes.stac import scene_from_item
from csmae.data.store import plan_groups
from csmae.sensors import Sensor, get_sensor

log = logging.getLogger(__name__)


@dataclass
class Plan:
    jobs: list[SceneJob]
    sensors: dict[str, Sensor]
    groups: list[Any]
    gaps: list[dict[str, Any]] = field(default_factory=list)  # S1/S2 pairs and their time gap
    inputs: list[str] = field(default_factory=list)  # every file read

    @property
    def patches(self) -> int:
        return sum(j.patches for j in self.jobs)


def _footprint_in(g: PatchGrid | GridInfo, crs: Any) -> Any:
    import shapely
    from rasterio.warp import transform_bounds

    if isinstance(g, PatchGrid):
        t = g.transform
        b = (t.c, t.f + t.e * g.height, t.c + t.a * g.width, t.f)
    else:
        b = g.bounds()
    return shapely.box(*transform_bounds(g.crs, crs, *b, densify_pts=21))


def _lonlat(poly: Any) -> tuple[float, ...]:
    return tuple(round(v, 4) for v in poly.bounds)


def _gap_days(s2: S2Scene, s1: S1Scene) -> float | None:
    if s2.datetime is None or s1.datetime is None:
        return None
    return abs((s2.datetime - s1.datetime).total_seconds()) / 86400.0


def plan_tiling(
    *, s2: Sequence[str] = (), s1: Sequence[str] = (), stac: Sequence[str] = (), stride: int = 120,
    min_valid: float = 0.9, scl: Sequence[int] | None = None, s1_units: str | None = None,
    max_days: float | None = None, layout: str = "float32", boa_offset: float | None = None,
) -> Plan:
    """Find and check every scene, pair S1 with S2 and lay out the store rows (no pixels read)."""
    if not 0.0 <= min_valid <= 1.0:
        raise ValueError(f"--min-valid must be in [0, 1], got {min_valid}")
    s2_sensor = get_sensor("s2")
    s2_scenes = find_s2_scenes(list(s2), s2_sensor.bands, boa_offset) if s2 else []
    s1_scenes = find_s1_scenes(list(s1), s1_units) if s1 else []
    for item in stac:
        sc = scene_from_item(item, bands=s2_sensor.bands, s1_units=s1_units)
        (s2_scenes if isinstance(sc, S2Scene) else s1_scenes).append(sc)  # type: ignore[arg-type]
    if not s2_scenes and not s1_scenes:
        raise ValueError("no scene given: pass --s2 PATH..., --s1 PATH... and/or --stac ITEM.json...")
    sensors: dict[str, Sensor] = {}
    if s1_scenes:
        sensors["s1"] = get_sensor("s1")
    if s2_scenes:
        sensors["s2"] = s2_sensor
    groups = plan_groups(sensors, layout)
    codes = tuple(int(c) for c in (scl if scl is not None else ())) or None
    if scl is not None and not codes:
        codes = DEFAULT_SCL_CODES
    s1_src = [S1Source(scene=sc, grid=check_grid(sc)) for sc in s1_scenes]
    plan = Plan(jobs=[], sensors=sensors, groups=groups)
    base = 0
    used: set[str] = set()
    for sc in s2_scenes:
        grids = check_grids(sc)
        pg = grid_from_s2(grids.g10, stride)
        if codes is not None and sc.scl is None:
            raise DataError("--scl given but the scene has no SCL band (a *_SCL_20m file or an 'scl' asset)",
                            path=sc.source)
        pairs = []
        if s1_src:
            fp = _footprint_in(pg, "EPSG:4326")
            over = [s for s in s1_src if _footprint_in(s.grid, "EPSG:4326").intersection(fp).area > 0]
            if not over:
                others = "; ".join(f"{s.scene.source} {_lonlat(_footprint_in(s.grid, 'EPSG:4326'))}"
                                   for s in s1_src)
                raise DataError("S1 and S2 do not overlap: no S1 scene covers any of this S2 scene "
                                f"(S2 lon/lat bounds {_lonlat(fp)}; S1: {others})", path=sc.source)
            for s in over:
                days = _gap_days(sc, s.scene)
                plan.gaps.append({"s2": sc.name, "s1": s.scene.name, "days": days})
                when = "unknown (no acquisition time)" if days is None else f"{days:.2f} days"
                log.info("S2 %s and S1 %s: %s apart", sc.name, s.scene.name, when)
                if max_days is not None:
                    if days is None:
                        bad = s.scene.source if s.scene.datetime is None else sc.source
                        raise DataError("--max-days given but the acquisition time is unknown (no "
                                        "YYYYMMDDTHHMMSS in the name, no STAC datetime)", path=bad)
                    if days > max_days:
                        raise DataError(f"S1 {s.scene.source} was acquired {days:.1f} days from this S2 "
                                        f"scene (--max-days {max_days:g})", path=sc.source)
                pairs.append((float("inf") if days is None else days, s))
                used.add(s.scene.source)
            pairs.sort(key=lambda p: p[0])
        job = SceneJob(name=sc.name, grid=pg, row_base=base, s2=sc, s2_grids=grids,
                       s1=tuple(p[1] for p in pairs), sensors=sensors, groups=tuple(groups),
                       min_valid=min_valid, scl_codes=codes)
        _check_size(job, sc.source)
        plan.jobs.append(job)
        base += job.patches
    if not s2_scenes:
        if codes is not None:
            raise ValueError("--scl needs an S2 scene (SCL is an S2 L2A band)")
        for s in s1_src:
            job = SceneJob(name=s.scene.name, grid=grid_from_s1(s.grid, stride), row_base=base, s2=None,
                           s2_grids=None, s1=(s,), sensors=sensors, groups=tuple(groups), min_valid=min_valid)
            _check_size(job, s.scene.source)
            plan.jobs.append(job)
            base += job.patches
    else:
        for s in s1_src:
            if s.scene.source not in used:
                log.warning("S1 scene %s overlaps no S2 scene: not used", s.scene.source)
    names = [j.name for j in plan.jobs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"two scenes have the same name {sorted(dup)}: patch ids would collide")
    files = set()
    for j in plan.jobs:
        if j.s2 is not None:
            files |= {r.path for r in j.s2.bands.values()} | ({j.s2.scl.path} if j.s2.scl else set())
        for s in j.s1:
            files |= {r.path for r in s.scene.bands.values()}
    plan.inputs = sorted(files)
    return plan


def _check_size(job: SceneJob, source: str) -> None:
    g = job.grid
    if g.rows == 0 or g.cols == 0:
        raise DataError(f"the scene is {g.width}x{g.height} pixels at 10 m: smaller than one "
                        f"{g.size}x{g.size} patch", path=source)
