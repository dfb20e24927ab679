"""BigEarthNet v1.0 folders: the S2 root and the S1 root, paired by name.

Pairing: through the side table ``s1_s2_name_country_season.csv.bz2`` when ``tables`` is given
(it also gives country, season and, from ``train/val/test.csv.bz2``, the split), else through the
S1 ``*_labels_metadata.json`` ``corresponding_s2_patch`` (every S1 JSON is read once at open time;
nothing is cached on disk). Labels: the 43-class JSON labels mapped to the 19 classes.

Geo keys (:mod:`csmae.geo.keys`): the 10 m grid (CRS and transform, hence the footprint) comes from
the patch JSON read at open time: ``coordinates`` (``ulx``/``uly``; the real S1 JSONs say ``lly``
where S2 says ``lry``) and the ``projection`` WKT, the same georeferencing as the GeoTIFFs' (tested on
the real pairs); when the JSON lacks it, from the GeoTIFF georeferencing of the reference band (S2
B02, or S1 VV for an S1-only dataset). Reading the JSON costs nothing more (it is read for the
labels); opening a GeoTIFF with GDAL costs about as much as reading the pair's pixels.
Acquisition times: S2 from the JSON ``acquisition_date`` (else the name), S1 from its name
(``..._20170613T165043_...``; same value as its JSON ``acquisition_time``). Scenes: the S2 JSON
``tile_source`` and the S1 JSON ``scene_source``.
"""

from __future__ import annotations

import bz2
import functools
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from csmae.data.base import DataError
from csmae.data.records import PatchRecord, RecordDataset, filter_records, finalize, labels_from_43
from csmae.data.tiff import read_band
from csmae.sensors import Sensor

log = logging.getLogger(__name__)

S2_NAME = re.compile(r"^S2[AB]_MSIL2A_\d{8}T\d{5,6}_\d+_\d+$")
S1_NAME = re.compile(r"^S1[AB]_IW_GRDH_1SDV_\d{8}T\d{5,6}_[0-9A-Z]{5}_\d+_\d+$")
PAIRS_TABLE = "s1_s2_name_country_season.csv.bz2"
SPLIT_TABLES = {"train": "train.csv.bz2", "val": "val.csv.bz2", "test": "test.csv.bz2"}


def root_kind(path: str | Path) -> str | None:
    """``"s2"`` / ``"s1"`` if ``path`` is a v1 S2 / S1 root (judged by its patch folder names)."""
    p = Path(path)
    if not p.is_dir():
        return None
    with os.scandir(p) as it:
        for entry in it:
            if not entry.is_dir():
                continue
            if S2_NAME.match(entry.name):
                return "s2"
            if S1_NAME.match(entry.name):
                return "s1"
    return None


def _patch_folders(root: Path, pattern: re.Pattern[str]) -> list[str]:
    with os.scandir(root) as it:
        return sorted(e.name for e in it if pattern.match(e.name) and e.is_dir())


def _read_json(path: Path) -> dict[str, Any] | str:
    """Parsed JSON or a problem string."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError) as exc:
        return f"{path.name} is not valid JSON ({exc})"


def _read_jsons(paths: Sequence[Path]) -> list[dict[str, Any] | str]:
    if len(paths) < 256:
        return [_read_json(p) for p in paths]
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound on a cold cache
        return list(pool.map(_read_json, paths, chunksize=256))


@functools.lru_cache(maxsize=4)
def _load_table(path: str, mtime: float) -> Any:
    """A bz2 csv side table as a pyarrow Table (cached per process; decompression dominates)."""
    import pyarrow.csv as pcsv

    with bz2.open(path, "rb") as f:
        data = f.read()
    return pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(
        column_types={"s1_name": "string", "s2_name": "string", "country": "string", "season": "string"}))


@functools.lru_cache(maxsize=8)
def _load_names(path: str, mtime: float) -> frozenset[str]:
    with bz2.open(path, "rb") as f:
        return frozenset(f.read().decode().split())


def read_tables(
    tables: str | Path, *, s2_names: Sequence[str] = (), s1_names: Sequence[str] = (),
) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """(s2 name -> (s1 name, country, season), s2 name -> split) from the v1 side tables.

    Only rows whose S2 name is in ``s2_names`` or whose S1 name is in ``s1_names`` are returned.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    tdir = Path(tables)
    pairs_path = tdir / PAIRS_TABLE
    if not pairs_path.is_file():
        raise DataError(f"v1 side table {PAIRS_TABLE} not found", path=str(tdir))
    table = _load_table(str(pairs_path), pairs_path.stat().st_mtime)
    missing = {"s1_name", "s2_name", "country", "season"} - set(table.column_names)
    if missing:
        raise DataError(f"side table lacks column(s) {sorted(missing)}", path=str(pairs_path))
    mask = pc.or_(pc.is_in(table["s2_name"], value_set=pa.array(list(s2_names), pa.string())),
                  pc.is_in(table["s1_name"], value_set=pa.array(list(s1_names), pa.string())))
    rows = table.filter(mask).to_pydict()
    pairs = {s2: (s1, c, se) for s2, s1, c, se in zip(rows["s2_name"], rows["s1_name"], rows["country"],
                                                      rows["season"], strict=True)}
    splits: dict[str, str] = {}
    for split, fname in SPLIT_TABLES.items():
        path = tdir / fname
        if path.is_file():
            names = _load_names(str(path), path.stat().st_mtime)
            splits.update((n, split) for n in {*pairs, *s2_names} if n in names)
    return pairs, splits


def _json_grid(doc: dict[str, Any]) -> tuple[str, float, float] | None:
    """(projection WKT, ulx, uly) of a patch JSON, or None when it lacks them."""
    coords, proj = doc.get("coordinates"), doc.get("projection")
    if not isinstance(coords, dict) or not proj:
        return None
    try:
        return str(proj), float(coords["ulx"]), float(coords["uly"])
    except (KeyError, TypeError, ValueError):
        return None


def _open_geo(rec: PatchRecord, doc: dict[str, Any], *, s2_doc: bool) -> dict[str, Any]:
    """Geo facts known from the names and the JSON read at open time."""
    from csmae.geo.keys import iso_utc, time_from_name

    s1n = rec.meta.get("s1_name") or (rec.loc[2] if rec.loc else None)
    if s2_doc:
        t2 = iso_utc(doc.get("acquisition_date")) or time_from_name(rec.id)
        t1 = time_from_name(s1n)
        scenes = {"s2": doc.get("tile_source"), "s1": None}
    else:
        t1 = iso_utc(doc.get("acquisition_time")) or time_from_name(s1n)
        t2 = time_from_name(rec.id)
        scenes = {"s2": None, "s1": doc.get("scene_source")}
    return {"datetime": {"s1": t1, "s2": t2}, "scene": scenes, "_json_grid": _json_grid(doc)}


class V1Dataset(RecordDataset):
    """Samples read from the v1.0 per-band GeoTIFFs (use :func:`open_v1`)."""

    def geo(self, i: int) -> dict[str, Any] | None:
        """Geo keys of pair ``i``: footprint from the JSON grid, else the GeoTIFF's (see module doc)."""
        from csmae.geo.footprint import crs_string, footprint_wkb
        from csmae.geo.keys import no_geo
        from csmae.geo.raster import read_georef

        known = dict(self._geo[i] or {})
        grid = known.pop("_json_grid", None)
        out = {**no_geo(), **known, "scene": dict(known.get("scene") or {"s1": None, "s2": None})}
        pid = self._ids[i]
        s2_dir, s1_dir, s1_name = self._locs[i]
        crs: str | None = None
        transform: tuple[float, ...] | None = None
        size = (120, 120)
        if grid is not None:
            try:
                crs = crs_string(grid[0])
                transform = (10.0, 0.0, grid[1], 0.0, -10.0, grid[2])
            except DataError:
                crs = None
        if crs is None:
            if "s2" in self.sensors and s2_dir:
                ref = os.path.join(s2_dir, f"{pid}_B02.tif")
            else:
                ref = os.path.join(s1_dir, f"{s1_name}_VV.tif")
            georef = read_georef(ref, patch=pid)
            if georef is not None:
                crs, transform, width, height = georef
                size = (width, height)
        if crs is not None and transform is not None:
            out.update(crs=crs, transform=transform,
                       geometry=footprint_wkb(crs, transform, size[0], size[1]))
        if out["scene"].get("s1") is None and s1_dir and s1_name:
            doc = _read_json(Path(s1_dir) / f"{s1_name}_labels_metadata.json")
            if isinstance(doc, dict) and doc.get("scene_source"):
                out["scene"]["s1"] = str(doc["scene_source"])
        return out

    def read_arrays(self, i: int) -> dict[str, Any]:
        pid = self._ids[i]
        s2_dir, s1_dir, s1_name = self._locs[i]
        out: dict[str, Any] = {"path": s2_dir or s1_dir}
        for name, sensor in self.sensors.items():
            folder, stem = (s2_dir, pid) if name == "s2" else (s1_dir, s1_name)
            out[name] = {
                b: read_band(os.path.join(folder, f"{stem}_{b}.tif"), band=b,
                             expected_side=sensor.native_side(b), patch=pid)
                for b in sensor.bands
            }
        return out


def open_v1(
    *, s2_root: str | Path | None, s1_root: str | Path | None, sensors: dict[str, Sensor],
    tables: str | Path | None = None, ids: list[str] | None = None, split: set[str] | None = None,
    on_error: str = "raise",
) -> V1Dataset:
    """Open v1.0 folders. ``sensors`` decides which roots are needed and where labels come from."""
    want_s1, want_s2 = "s1" in sensors, "s2" in sensors
    if want_s2 and s2_root is None:
        raise DataError("sensor s2 requested but no v1 S2 root (BigEarthNet-v1.0) was given")
    if want_s1 and s1_root is None:
        raise DataError("sensor s1 requested but no v1 S1 root (BigEarthNet-S1-v1.0) was given")
    used = [r for r, want in ((s2_root, want_s2), (s1_root, want_s1)) if want and r is not None]
    source = " + ".join(str(r) for r in used)
    s2_names = _patch_folders(Path(s2_root), S2_NAME) if want_s2 and s2_root else []
    s1_names = _patch_folders(Path(s1_root), S1_NAME) if want_s1 and s1_root else []
    if not s2_names and not s1_names:
        raise DataError("no BigEarthNet v1 patch folders found", path=source)

    table_pairs: dict[str, tuple[str, str, str]] = {}
    table_splits: dict[str, str] = {}
    if tables is not None:
        table_pairs, table_splits = read_tables(tables, s2_names=s2_names, s1_names=s1_names)

    # S1 folder -> S2 name (from the table or from the S1 JSONs)
    s1_to_s2: dict[str, str] = {}
    s1_meta: dict[str, dict[str, Any] | str] = {}
    s1_problem: dict[str, str] = {}
    if s1_names:
        if table_pairs:
            by_s1 = {v[0]: k for k, v in table_pairs.items()}
            for n in s1_names:
                if n in by_s1:
                    s1_to_s2[n] = by_s1[n]
                else:
                    s1_problem[n] = f"S1 patch {n} is not in the side table {PAIRS_TABLE}"
        if not table_pairs or not want_s2:
            root1 = Path(s1_root)  # type: ignore[arg-type]
            docs = _read_jsons([root1 / n / f"{n}_labels_metadata.json" for n in s1_names])
            for n, doc in zip(s1_names, docs, strict=True):
                s1_meta[n] = doc
                if isinstance(doc, str):
                    s1_problem.setdefault(n, f"S1 patch {n}: {doc}")
                elif not table_pairs:
                    partner = doc.get("corresponding_s2_patch")
                    if not partner:
                        s1_problem[n] = f"S1 patch {n}: JSON has no corresponding_s2_patch"
                    else:
                        s1_to_s2[n] = str(partner)

    records: list[PatchRecord] = []
    s2_set = set(s2_names)
    if want_s2:
        s2_to_s1: dict[str, list[str]] = {}
        for n1, n2 in s1_to_s2.items():
            s2_to_s1.setdefault(n2, []).append(n1)
        for n2 in s2_names:
            rec = PatchRecord(id=n2, loc=(str(Path(s2_root) / n2), None, None))  # type: ignore[arg-type]
            if n2 in table_pairs:
                s1n, country, season = table_pairs[n2]
                rec.meta.update(s1_name=s1n, country=country, season=season)
            if want_s1:
                partners = s2_to_s1.get(n2, [])
                if len(partners) == 1:
                    s1n = partners[0]
                    rec.loc = (rec.loc[0], str(Path(s1_root) / s1n), s1n)  # type: ignore[arg-type]
                    rec.meta["s1_name"] = s1n
                elif not partners:
                    wanted = table_pairs.get(n2, ("",))[0]
                    rec.problem = ("S2 patch has no S1 partner" +
                                   (f" (expected S1 folder {wanted})" if wanted else
                                    " (no S1 JSON names it in corresponding_s2_patch)"))
                else:
                    rec.problem = f"S2 patch has several S1 partners: {sorted(partners)}"
            records.append(rec)
        for n1, n2 in s1_to_s2.items():
            if n2 not in s2_set:
                why = f"S1 patch {n1} has no S2 partner (no S2 folder {n2})"
                records.append(PatchRecord(id=n2, problem=why))
        for n1, why in s1_problem.items():
            records.append(PatchRecord(id=n1, problem=why))
    else:  # S1 only: the pair id is still the S2 name
        for n1 in s1_names:
            if n1 in s1_problem:
                records.append(PatchRecord(id=n1, problem=s1_problem[n1]))
                continue
            n2 = s1_to_s2[n1]
            rec = PatchRecord(id=n2, loc=(None, str(Path(s1_root) / n1), n1), meta={"s1_name": n1})  # type: ignore[arg-type]
            if n2 in table_pairs:
                rec.meta.update(country=table_pairs[n2][1], season=table_pairs[n2][2])
            records.append(rec)
    for rec in records:
        rec.split = table_splits.get(rec.id)
    records.sort(key=lambda r: r.id)

    # Filter before reading label JSONs (the only per-patch file read at open time).
    problems: list[tuple[str, str]] = []
    records = filter_records(records, ids=ids, split=split, source=source, problems=problems,
                             on_error=on_error)
    todo = [r for r in records if r.problem is None]
    if want_s2:
        docs = _read_jsons([Path(r.loc[0]) / f"{r.id}_labels_metadata.json" for r in todo])
    else:
        docs = [s1_meta.get(r.loc[2]) or "labels_metadata.json is missing" for r in todo]
    for rec, doc in zip(todo, docs, strict=True):
        if isinstance(doc, str):
            rec.problem = doc
            continue
        rec.labels, rec.problem = labels_from_43(doc.get("labels", []), where=f"patch {rec.id}")
        date = doc.get("acquisition_date") or doc.get("acquisition_time")
        if date:
            rec.meta["acquisition_date"] = str(date)
        rec.geo = _open_geo(rec, doc, s2_doc=want_s2)
    records, problems = finalize(records, source=source, on_error=on_error, problems=problems)
    return V1Dataset(records=records, sensors=sensors, source=source, kind="v1", problems=problems)
