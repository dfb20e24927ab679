"""From the paths the user gave to the list of scene jobs: find scenes, check grids, pair the sensors.

The present sensor with the highest ``scene_grid_priority`` (S2 when given) defines the jobs: one
per scene, on that scene's patch grid, in scene-name order (not the order of the arguments). Every
scene of the other sensors that overlaps it is warped
onto that grid, nearest in time first. The sensors themselves are looked up in :mod:`.readers`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from csmae.data.base import DataError
from csmae.data.scenes.aoi import crop_grid
from csmae.data.scenes.grid import PatchGrid
from csmae.data.scenes.job import SceneJob, SceneSource
from csmae.data.scenes.rasters import GridInfo
from csmae.data.scenes.readers import DEFAULT_SCL_CODES, SCENE_READERS, by_priority, reader_of, scene_of_item
from csmae.data.store import plan_groups
from csmae.sensors import Sensor, get_sensor

log = logging.getLogger(__name__)


@dataclass
class Plan:
    jobs: list[SceneJob]
    sensors: dict[str, Sensor]
    groups: list[Any]
    gaps: list[dict[str, Any]] = field(default_factory=list)  # sensor pairs and their time gap
    inputs: list[str] = field(default_factory=list)  # every file read
    product_checksums: list[dict[str, Any]] = field(default_factory=list)  # per product, as checked
    options_used: dict[str, Any] = field(default_factory=dict)  # reader options that shaped the pixels

    @property
    def patches(self) -> int:
        return sum(j.patches for j in self.jobs)


def _footprint_in(g: PatchGrid | GridInfo, crs: Any) -> Any:
    from rasterio.warp import transform_bounds

    from csmae.geo.antimeridian import box_geometry  # W > E (across +-180 deg): two boxes

    if isinstance(g, PatchGrid):
        t = g.transform
        b = (t.c, t.f + t.e * g.height, t.c + t.a * g.width, t.f)
    else:
        b = g.bounds()
    return box_geometry(transform_bounds(g.crs, crs, *b, densify_pts=21))


def _lonlat(poly: Any) -> tuple[float, ...]:
    return tuple(round(v, 4) for v in poly.bounds)


def _gap_days(a: Any, b: Any) -> float | None:
    if a.datetime is None or b.datetime is None:
        return None
    return abs((a.datetime - b.datetime).total_seconds()) / 86400.0


def find_scenes(paths: Mapping[str, Sequence[str]], stac: Sequence[str], options: Mapping[str, Any]
                ) -> dict[str, list[Any]]:
    """Every scene per sensor: the paths of each sensor (patch-grid sensor first), then STAC items."""
    for sensor in paths:
        reader_of(sensor)
    found: dict[str, list[Any]] = {s: [] for s in by_priority(SCENE_READERS)}
    for sensor in found:
        if paths.get(sensor):
            found[sensor] = SCENE_READERS[sensor].find(list(paths[sensor]), get_sensor(sensor), options)
    for item in stac:
        sensor, scene = scene_of_item(item, options)
        found[sensor].append(scene)
    return {s: scenes for s, scenes in found.items() if scenes}


def plan_tiling(
    *, paths: Mapping[str, Sequence[str]], stac: Sequence[str] = (), stride: int = 120,
    min_valid: float = 0.9, scl: Sequence[int] | None = None, max_days: float | None = None,
    layout: str = "float32", options: Mapping[str, Any] | None = None, aoi: Any | None = None,
) -> Plan:
    """Find and check every scene, pair the sensors and lay out the store rows (no pixels read).

    Args:
        paths: sensor -> the user's input paths of that sensor.
        options: reader options (``s1_units``, ``boa_offset``).
        aoi: a lon/lat (multi)polygon (``--bbox`` / ``--aoi``): only patches intersecting it are cut.
    """
    if not 0.0 <= min_valid <= 1.0:
        raise ValueError(f"--min-valid must be in [0, 1], got {min_valid}")
    found = find_scenes(paths, stac, options or {})
    if not found:
        raise ValueError("no scene given: pass --s2 PATH..., --s1 PATH... and/or --stac ITEM.json...")
    sensors = {s: get_sensor(s) for s in SCENE_READERS if s in found}
    groups = plan_groups(sensors, layout)
    codes = tuple(int(c) for c in (scl if scl is not None else ())) or None
    if scl is not None and not codes:
        codes = DEFAULT_SCL_CODES
    top, *others = by_priority(found)
    grid_reader = reader_of(top)
    # the warped sensors' scenes are checked up front (all are needed to pair each job)
    warped = {s: [reader_of(s).check(sc) for sc in found[s]] for s in others}
    if codes is not None and not grid_reader.classifies:
        raise ValueError("--scl needs an S2 scene (SCL is an S2 L2A band)")
    plan = Plan(jobs=[], sensors=sensors, groups=groups)
    base = 0
    used: set[str] = set()
    # jobs in name order, whatever the order of the arguments: the same inputs give the same store
    for sc in sorted(found[top], key=lambda sc: (str(sc.name), str(sc.source))):
        src = grid_reader.check(sc)
        pg = grid_reader.patch_grid(src, stride)
        if aoi is not None:
            cropped = crop_grid(pg, aoi)
            if cropped is None:
                log.info("%s %s: outside the --bbox / --aoi area, not used", grid_reader.label, sc.source)
                continue
            pg = cropped
        grid_reader.check_masks(src, codes)
        check_cut = getattr(grid_reader, "check_cut", None)  # e.g. a DEM must cover the patches cut
        if check_cut is not None:
            check_cut(src, pg, aoi)
        scenes: dict[str, tuple[SceneSource, ...]] = {top: (src,)}
        for other in others:
            scenes[other] = _pair(top, src, pg, other, warped[other], max_days, plan.gaps)
            used |= {s.scene.source for s in scenes[other]}
        job = SceneJob(name=sc.name, grid=pg, row_base=base, scenes=scenes, sensors=sensors,
                       groups=tuple(groups), min_valid=min_valid, scl_codes=codes,
                       aoi=None if aoi is None else aoi.wkb)
        _check_size(job, sc.source)
        plan.jobs.append(job)
        base += job.patches
    if aoi is not None and not plan.jobs:
        raise DataError(f"the --bbox / --aoi area (lon/lat bounds {_lonlat(aoi)}) intersects none of the "
                        f"{len(found[top])} {grid_reader.label} scene(s)",
                        path=", ".join(s.source for s in found[top]))
    for other in others:
        for s in warped[other]:
            if s.scene.source not in used:
                log.warning("%s scene %s overlaps no %s scene: not used", reader_of(other).label,
                            s.scene.source, grid_reader.label)
    names = [j.name for j in plan.jobs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"two scenes have the same name {sorted(dup)}: patch ids would collide")
    files: set[str] = set()
    check = bool((options or {}).get("product_checksums", True))
    products: set[str] = set()
    for j in plan.jobs:
        for sensor, sources in j.scenes.items():
            for s in sources:
                files |= reader_of(sensor).files(s)
                if s.scene.source in products:
                    continue
                products.add(s.scene.source)
                entry = reader_of(sensor).product_checksums(s, check)
                if entry is not None:
                    plan.product_checksums.append(entry)
    plan.inputs = sorted(files)
    for sensor in sensors:
        used_by = getattr(reader_of(sensor), "options_used", None)
        if used_by is not None:
            plan.options_used.update(used_by([s for j in plan.jobs for s in j.scenes.get(sensor, ())],
                                             options or {}))
    return plan


def _pair(top: str, src: SceneSource, pg: PatchGrid, other: str, candidates: list[SceneSource],
          max_days: float | None, gaps: list[dict[str, Any]]) -> tuple[SceneSource, ...]:
    """The ``other`` sensor's scenes over the patch grid ``pg`` of ``src``, nearest in time first."""
    a, b = reader_of(top).label, reader_of(other).label
    sc = src.scene
    fp = _footprint_in(pg, "EPSG:4326")
    reader = reader_of(other)

    def footprint(s: SceneSource) -> Any:  # a reader may know it better than its grid's box
        known = getattr(reader, "footprint", None)
        got = known(s) if known is not None else None
        return got if got is not None else _footprint_in(reader.extent(s), "EPSG:4326")

    over = [s for s in candidates if footprint(s).intersection(fp).area > 0]
    if not over:
        others = "; ".join(f"{s.scene.source} {_lonlat(footprint(s))}" for s in candidates)
        raise DataError(f"{b} and {a} do not overlap: no {b} scene covers any of this {a} scene "
                        f"({a} lon/lat bounds {_lonlat(fp)}; {b}: {others})", path=sc.source)
    check = getattr(reader, "check_pair", None)  # e.g. a DEM must cover what this grid takes of the scene
    if check is not None:
        for s in over:
            check(s, fp, f"{a} scene {sc.source}")
    pairs = []
    for s in over:
        days = _gap_days(sc, s.scene)
        gaps.append({top: sc.name, other: s.scene.name, "days": days})
        when = "unknown (no acquisition time)" if days is None else f"{days:.2f} days"
        log.info("%s %s and %s %s: %s apart", a, sc.name, b, s.scene.name, when)
        if max_days is not None:
            if days is None:
                bad = s.scene.source if s.scene.datetime is None else sc.source
                raise DataError("--max-days given but the acquisition time is unknown (no "
                                "YYYYMMDDTHHMMSS in the name, no STAC datetime)", path=bad)
            if days > max_days:
                raise DataError(f"{b} {s.scene.source} was acquired {days:.1f} days from this {a} "
                                f"scene (--max-days {max_days:g})", path=sc.source)
        pairs.append((float("inf") if days is None else days, s))
    pairs.sort(key=lambda p: (p[0], str(p[1].scene.name), str(p[1].scene.source)))  # ties: by name
    return tuple(p[1] for p in pairs)


def _check_size(job: SceneJob, source: str) -> None:
    g = job.grid
    if g.rows == 0 or g.cols == 0:
        raise DataError(f"the scene is {g.width}x{g.height} pixels at 10 m: smaller than one "
                        f"{g.size}x{g.size} patch", path=source)
