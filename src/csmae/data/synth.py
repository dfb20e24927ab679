"""A synthetic paired S1/S2 archive written in a real on-disk format (see :mod:`csmae.data.synth_scene`).

``format="v1"`` writes BigEarthNet v1.0 folders exactly like the real ones: ``BigEarthNet-v1.0/``
(one folder per S2 patch, 12 single-band uint16 GeoTIFFs at native size + labels_metadata.json with
43-class CLC names), ``BigEarthNet-S1-v1.0/`` (VV/VH float32 dB TIFFs + JSON with
``corresponding_s2_patch``) and ``tables/`` (``s1_s2_name_country_season.csv.bz2``,
``train/val/test.csv.bz2``, empty exclusion lists), so the v1 reader, ``csmae prepare`` and the
demo exercise the same code as real data. ``format="store"`` writes a prepared store directly.

Footprints and acquisition times are synthetic but plausible (:mod:`csmae.geo.synthetic`: tiles near
the centre of their country on the UTM grid); stores say so (manifest ``"geo_synthetic": true``).

Labels are the 19-class classes covering at least ``min_fraction`` of the patch; in the v1 JSON
each is written as a 43-class name that maps to it, plus now and then a 43-class label that maps to
none (roads), which readers must drop.
"""

from __future__ import annotations

import bz2
import json
import logging
import os
import shutil
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import check_replaceable, clean_stale_temps, replace_folder
from csmae.data import synth_scene as scene
from csmae.geo.synthetic import crs_wkt, place, sample_geo
from csmae.labels import LABEL_43_TO_19, LABELS_19
from csmae.sensors import S1, Sensor, get_sensor

log = logging.getLogger(__name__)

FORMATS = ("v1", "store")
S2_ROOT, S1_ROOT, TABLES = "BigEarthNet-v1.0", "BigEarthNet-S1-v1.0", "tables"
COUNTRIES = ("Austria", "Belgium", "Finland", "Ireland", "Lithuania", "Portugal", "Serbia", "Switzerland")
_SEASON = {12: "Winter", 1: "Winter", 2: "Winter", 3: "Spring", 4: "Spring", 5: "Spring",
           6: "Summer", 7: "Summer", 8: "Summer", 9: "Fall", 10: "Fall", 11: "Fall"}
#: one 43-class name per 19-class label (the first that maps to it)
NAME_43 = {t: s for s, t in reversed(list(LABEL_43_TO_19.items())) if t is not None}
DROPPED_43 = "Road and rail networks and associated land"
PATCHES_PER_TILE = 64


def _pair_names(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    """S2/S1 names, country, season and dates grouped into tiles of up to 64 patches (v1 quirks kept)."""
    out: list[dict[str, str]] = []
    t = 0
    while len(out) < n:
        day = date(2017, 6, 1) + timedelta(days=int(rng.integers(0, 365)))
        hour, minute, sec = int(rng.integers(9, 12)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
        s2_time = f"{hour}{minute:02d}{sec:02d}"  # unpadded hour for 9 o'clock, as in v1
        s1_day = day + timedelta(days=int(rng.integers(-2, 3)))
        s1_time = f"{int(rng.integers(4, 18)):02d}{minute:02d}{sec:02d}"
        sat2, sat1 = "AB"[int(rng.integers(2))], "AB"[int(rng.integers(2))]
        zone, band = int(rng.integers(29, 36)), "TUVW"[int(rng.integers(4))]
        tile = f"{zone}{band}{chr(65 + t % 26)}{chr(65 + t // 26 % 26)}"
        country = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        cells = rng.choice(100 * 100, size=min(PATCHES_PER_TILE, n - len(out)), replace=False)
        for c in cells:
            h, v = int(c // 100), int(c % 100)
            out.append({
                "s2": f"S2{sat2}_MSIL2A_{day:%Y%m%d}T{s2_time}_{h}_{v}",
                "s1": f"S1{sat1}_IW_GRDH_1SDV_{s1_day:%Y%m%d}T{s1_time}_{tile}_{h}_{v}",
                "country": country, "season": _SEASON[day.month],
                "s2_date": f"{day:%Y-%m-%d} {hour:02d}:{minute:02d}:{sec:02d}",
                "s1_date": f"{s1_day:%Y-%m-%d}T{s1_time[:2]}:{s1_time[2:4]}:{s1_time[4:]}",
                "tile": tile,
            })
        t += 1
    return out


def _splits(rng: np.random.Generator, n: int, fractions: Sequence[float]) -> list[str]:
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"split_fractions must be 3 non-negative numbers, got {fractions}")
    p = np.asarray(fractions, dtype=np.float64) / sum(fractions)
    return [("train", "val", "test")[i] for i in rng.choice(3, size=n, p=p)]


def generate_pair(rng: np.random.Generator, *, min_fraction: float) -> dict[str, Any]:
    """One pair at native resolution: {"s1": {band: (120,120) f32}, "s2": {band: uint16}, "labels"}."""
    cover = scene.land_cover(rng)
    labels = scene.labels_of(cover, min_fraction)
    s2 = {b: np.rint(a).astype(np.uint16) for b, a in scene.s2_image(rng, cover).items()}
    s1_arr = scene.s1_image(rng, cover)
    s1 = {b: s1_arr[S1.index(b)] for b in S1.bands}
    return {"s1": s1, "s2": s2, "labels": labels, "cover": cover}


def _json_43(rng: np.random.Generator, labels: np.ndarray) -> list[str]:
    names = [NAME_43[LABELS_19[i]] for i in np.flatnonzero(labels)]
    if rng.random() < 0.1:
        names.append(DROPPED_43)
    return names


def _write_tif(path: Path, arr: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, arr, photometric="minisblack", metadata=None)


def _write_names_bz2(path: Path, lines: Sequence[str], header: str | None = None) -> None:
    text = (header + "\n" if header else "") + "".join(f"{s}\n" for s in lines)
    path.write_bytes(bz2.compress(text.encode()))


def _write_v1(tmp: Path, names: list[dict[str, str]], splits: list[str], rng: np.random.Generator,
              gen: Any) -> None:
    s2_root, s1_root, tables = tmp / S2_ROOT, tmp / S1_ROOT, tmp / TABLES
    for d in (s2_root, s1_root, tables):
        d.mkdir(parents=True)
    for nm in names:
        pair = gen()
        d2, d1 = s2_root / nm["s2"], s1_root / nm["s1"]
        d2.mkdir()
        d1.mkdir()
        for b, a in pair["s2"].items():
            _write_tif(d2 / f"{nm['s2']}_{b}.tif", a)
        for b, a in pair["s1"].items():
            _write_tif(d1 / f"{nm['s1']}_{b}.tif", a)
        labels43 = _json_43(rng, pair["labels"])
        # synthetic but plausible places (csmae.geo.synthetic); TIFFs carry no georeferencing, so
        # the v1 reader takes the grid from these JSON coordinates and projection, as for real v1
        ulx, uly = float(nm["transform"][2]), float(nm["transform"][5])
        coords = {"ulx": ulx, "uly": uly, "lrx": ulx + 1200}
        wkt = crs_wkt(nm["crs"])
        (d2 / f"{nm['s2']}_labels_metadata.json").write_text(json.dumps({
            "labels": labels43, "coordinates": {**coords, "lry": uly - 1200},
            "projection": wkt, "tile_source": f"synthetic_{nm['tile']}",
            "acquisition_date": nm["s2_date"],
        }))
        (d1 / f"{nm['s1']}_labels_metadata.json").write_text(json.dumps({
            "labels": labels43, "coordinates": {**coords, "lly": uly - 1200},
            "projection": wkt, "corresponding_s2_patch": nm["s2"],
            "scene_source": f"synthetic_{nm['tile']}", "acquisition_time": nm["s1_date"],
        }))
    _write_names_bz2(tables / "s1_s2_name_country_season.csv.bz2",
                     [f"{n['s1']},{n['s2']},{n['country']},{n['season']}" for n in names],
                     header="s1_name,s2_name,country,season")
    for split in ("train", "val", "test"):
        _write_names_bz2(tables / f"{split}.csv.bz2", [n["s2"] for n, s in zip(names, splits) if s == split])
    for fname in ("patches_with_seasonal_snow.csv.bz2", "patches_with_cloud_and_shadow.csv.bz2",
                  "patches_with_no_19_class_targets.csv.bz2"):
        _write_names_bz2(tables / fname, [])


def _write_store(tmp: Path, names: list[dict[str, str]], splits: list[str], sensors: dict[str, Sensor],
                 gen: Any, source: dict[str, Any], layout: str) -> None:
    from csmae.data.store import plan_groups
    from csmae.data.store_write import (
        open_records,
        pair_entry,
        records_from_native,
        write_manifest,
        write_skipped,
        write_table,
    )

    groups = plan_groups(sensors, layout)
    mm = open_records(tmp, groups, len(names), create=True)
    entries = []
    for row, (nm, split) in enumerate(zip(names, splits, strict=True)):
        pair = gen()
        for g, rec in records_from_native(pair, groups).items():
            mm[g][row] = rec
        sample = {"id": nm["s2"], "labels": pair["labels"], "split": split, "s1_name": nm["s1"],
                  "country": nm["country"], "season": nm["season"], "acquisition_date": nm["s2_date"],
                  **sample_geo(nm)}
        entries.append(pair_entry(sample, row, list(sensors)))
    for a in mm.values():
        a.flush()
    del mm
    write_table(tmp, entries)
    write_skipped(tmp, [])
    write_manifest(tmp, sensors=sensors, groups=groups, layout=layout, rows=len(names), entries=entries,
                   skipped=0, source=source, producer="csmae synth", extra={"geo_synthetic": True})


def write_synthetic(
    out_dir: str | os.PathLike[str], *, n: int, seed: int = 0, format: str = "v1",
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2), min_fraction: float = 0.05,
    s2_bands: Any = "all", layout: str = "float32", overwrite: bool = False, series: Any = None,
) -> list[Path]:
    """Write ``n`` synthetic pairs; return the path(s) to give :func:`csmae.data.open_dataset`.

    Args:
        out_dir: output folder (written atomically). v1: holds the S2 root, S1 root and tables.
            store: the store itself.
        n: number of pairs. seed: everything is a function of the seed.
        format: ``"v1"`` (per-band GeoTIFF folders + side tables) or ``"store"``.
        split_fractions: train/val/test fractions. min_fraction: area for a class to be a label.
        s2_bands: S2 bands of a store (``"all"``: 12, the default, like v1; None: the 10 bands).
        layout: store layout (``"float32"`` or ``"native"``, see :mod:`csmae.data.store`).
        series: a :class:`csmae.data.synth_time.Series`: ``n`` places, each at every date of the
            series, with seasons, clouds and known change events (ground truth in the manifest /
            synth.json under ``synthetic_series``). None (default): one pair per place, as always.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown synthetic format {format!r}; expected one of {FORMATS}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from csmae.data.store import STORE_KIND

    out = Path(out_dir)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite to replace it)")
        check_replaceable(out, "csmae-synth" if format == "v1" else STORE_KIND)  # nothing else is replaced
    rng = np.random.default_rng(seed)
    source: dict[str, Any] = {"synthetic": {"n": n, "seed": seed, "split_fractions": list(split_fractions),
                                            "min_fraction": min_fraction}}
    if series is None:
        names = _pair_names(rng, n)
        place(names, seed)  # synthetic footprints: own random stream, names and pixels unchanged
        splits = _splits(rng, n, split_fractions)
        pixel_rng = np.random.default_rng([seed, 1])

        def gen() -> dict[str, Any]:
            return generate_pair(pixel_rng, min_fraction=min_fraction)
    else:
        from csmae.data.synth_time import series_archive

        names, splits, gen, truth = series_archive(rng, n, series, seed=seed, min_fraction=min_fraction,
                                                   split_fractions=split_fractions)
        source["synthetic_series"] = truth  # filled while the pairs are generated, before the manifest
    meta_rng = np.random.default_rng([seed, 2])
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    clean_stale_temps(out)  # folders of killed earlier runs (dead pid, over an hour old)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if format == "v1":
            _write_v1(tmp, names, splits, meta_rng, gen)
            (tmp / "synth.json").write_text(json.dumps({"kind": "csmae-synth", "format": "v1", **source},
                                                       indent=2) + "\n")
        else:
            import torch

            sensors = {"s1": S1, "s2": get_sensor("s2", bands=s2_bands)}
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # per-pair upsampling is tiny: threads only add overhead
            try:
                _write_store(tmp, names, splits, sensors, gen, source, layout)
            finally:
                torch.set_num_threads(threads)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, out, kind="csmae-synth" if format == "v1" else STORE_KIND)
    log.info("wrote %d synthetic pairs (%s) to %s", n, format, out)
    if format == "v1":
        return [out / S2_ROOT, out / S1_ROOT, out / TABLES]
    return [out]
