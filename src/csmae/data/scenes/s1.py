"""Sentinel-1 GRD inputs: VV and VH as two GeoTIFF/COG files or one 2-band file, linear or dB.

Files of one scene share their name once the polarisation token (``VV``/``VH``) is removed. A 2-band
file is read through its band descriptions (``VV``, ``VH``); without descriptions the bands are
taken as (VV, VH), with a warning. Units: ``--s1-units`` when given, else what the file says (band
``units``, tags, a ``_db`` / ``_lin`` name token), else the values: calibrated linear power is never
negative, dB almost always is, so any negative value means dB. Integer files are uncalibrated DN
and are refused (calibrate them first, e.g. SNAP ``Calibration``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from csmae.data.base import DataError
from csmae.data.scenes.rasters import BandRef, GridInfo, datetime_from_name, grid_of, open_raster
from csmae.data.scenes.s2 import RASTER_SUFFIXES

log = logging.getLogger(__name__)

S1_UNITS = ("linear", "db")
_POL = re.compile(r"(?<![A-Za-z0-9])(VV|VH)(?![A-Za-z0-9])", re.IGNORECASE)
_DB_WORDS = ("db", "decibel")
_LIN_WORDS = ("linear", "power", "intensity", "natural", "amplitude^2")


@dataclass(frozen=True)
class S1Scene:
    """Where VV and VH of one S1 scene are, in which units, and when it was acquired."""

    name: str
    source: str
    bands: dict[str, BandRef]  # "VV", "VH"
    units: str  # "linear" | "db"
    units_from: str  # how the units were decided
    nodata: dict[str, float | None]
    datetime: datetime | None = None


def _pol_of(name: str) -> str | None:
    m = _POL.search(name)
    return None if m is None else m.group(1).upper()


def claims_path(path: str) -> bool:
    """Whether an input looks like S1: a VV/VH file name, or a folder holding such files."""
    p = Path(path)
    if p.is_dir():
        return any(_pol_of(f.name) for f in p.iterdir() if f.is_file())
    return _pol_of(p.name) is not None


def _key(name: str) -> str:
    stem = Path(name).stem
    return re.sub(r"__+", "_", _POL.sub("", stem, count=1)).strip("_-. ")


def _units_from_metadata(ref: BandRef) -> str | None:
    with open_raster(ref.path) as src:
        texts = [src.units[ref.bidx - 1] or ""]
        for tags in (src.tags(), src.tags(ref.bidx)):
            texts += [f"{k}={v}" for k, v in tags.items() if "unit" in k.lower() or "scale" in k.lower()]
    stem = Path(ref.path).stem.lower()
    tokens = set(re.split(r"[_\-. ]+", stem))
    for t in texts:
        low = t.lower().split("=")[-1].strip()
        if low in _DB_WORDS or low.endswith(" db"):
            return "db"
        if any(w in low for w in _LIN_WORDS):
            return "linear"
    if "db" in tokens:
        return "db"
    if tokens & {"lin", "linear"}:
        return "linear"
    return None


def _units_from_values(ref: BandRef, nodata: float | None) -> str:
    with open_raster(ref.path) as src:
        if np.dtype(src.dtypes[ref.bidx - 1]).kind in "iu":
            raise DataError(f"S1 band is {src.dtypes[ref.bidx - 1]}: uncalibrated DN; calibrate to "
                            "sigma0/gamma0 (linear or dB) first, or pass --s1-units", path=ref.path)
        h, w = src.height, src.width
        f = max(1, max(h, w) // 512)
        x = src.read(ref.bidx, out_shape=(max(1, h // f), max(1, w // f)))  # decimated (overview if any)
    ok = np.isfinite(x)
    if nodata is not None:
        ok &= x != nodata
    vals = x[ok]
    if vals.size == 0:
        raise DataError("the S1 band has no valid pixel (all nodata)", path=ref.path)
    return "db" if (vals < 0).any() else "linear"


def _nodata(ref: BandRef) -> float | None:
    with open_raster(ref.path) as src:
        nd = src.nodatavals[ref.bidx - 1]
    return None if nd is None else float(nd)


def _refuse_dn(ref: BandRef) -> None:
    """Integer S1 pixels are uncalibrated DN: never taken as backscatter, whatever the tags say."""
    with open_raster(ref.path) as src:
        dtype = src.dtypes[ref.bidx - 1]
    if np.dtype(dtype).kind in "iu":
        raise DataError(f"S1 band is {dtype}: uncalibrated DN, not backscatter (units tags and --s1-units "
                        "do not change that); calibrate to sigma0/gamma0 in float32 (linear or dB) first, "
                        "e.g. SNAP Calibration + Terrain-Correction", path=ref.path)


def _scene(name: str, source: str, refs: dict[str, BandRef], units: str | None) -> S1Scene:
    for r in refs.values():
        _refuse_dn(r)
    nod = {p: _nodata(r) for p, r in refs.items()}
    if units is not None:
        if units not in S1_UNITS:
            raise ValueError(f"--s1-units must be one of {S1_UNITS}, got {units!r}")
        how = "--s1-units"
    else:
        found = {_units_from_metadata(r) for r in refs.values()} - {None}
        if len(found) > 1:
            raise DataError(f"VV and VH say different units {sorted(found)}", path=source)  # type: ignore[type-var]
        if found:
            units, how = found.pop(), "file metadata"
        else:
            units = _units_from_values(refs["VV"], nod["VV"])
            how = "values (negative values mean dB)" if units == "db" else "values (none negative)"
            log.info("%s: S1 units %s, decided from the values; pass --s1-units to be explicit",
                     source, units)
    return S1Scene(name=name, source=source, bands=refs, units=units, units_from=how, nodata=nod,  # type: ignore[arg-type]
                   datetime=datetime_from_name(name))


def from_two_band(path: Path, units: str | None) -> S1Scene:
    with open_raster(path) as src:
        desc = [(d or "").upper() for d in src.descriptions]
        count = src.count
    if count != 2:
        raise DataError(f"an S1 file needs VV and VH: two files, or one 2-band file (this one has {count} "
                        "band(s) and no VV/VH in its name)", path=str(path))
    pols = [_pol_of(d) for d in desc]
    if sorted(p for p in pols if p) == ["VH", "VV"]:
        refs = {p: BandRef(str(path), i + 1) for i, p in enumerate(pols) if p}
    else:
        log.warning("%s: no VV/VH band descriptions; taking band 1 as VV and band 2 as VH", path)
        refs = {"VV": BandRef(str(path), 1), "VH": BandRef(str(path), 2)}
    return _scene(path.stem, str(path), refs, units)


def find_s1_scenes(paths: list[str], units: str | None = None) -> list[S1Scene]:
    """S1 scenes from the paths given to ``--s1`` (VV/VH file pairs, 2-band files, folders)."""
    scenes: list[S1Scene] = []
    loose: dict[str, dict[str, Path]] = {}
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError("S1 input not found", path=str(p))
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*")  # a FIFO named like a raster: refused by name when opened
                            if not f.is_dir() and f.suffix.lower() in RASTER_SUFFIXES)
            if not inside:
                raise DataError(f"no raster files ({', '.join(RASTER_SUFFIXES)}) in the folder", path=str(p))
            files += inside
        else:
            files.append(p)
    for f in files:
        pol = _pol_of(f.name)
        if pol is None:
            scenes.append(from_two_band(f, units))
            continue
        group = loose.setdefault(_key(f.name), {})
        if pol in group:
            raise DataError(f"{pol} given twice: {group[pol]} and {f}", path=str(f))
        group[pol] = f
    for key, pols in loose.items():
        missing = [p for p in ("VV", "VH") if p not in pols]
        if missing:
            some = next(iter(pols.values()))
            raise DataError(f"S1 band {missing[0]} is missing for scene {key!r} (VV and VH are both needed)",
                            path=str(some))
        refs = {p: BandRef(str(pols[p])) for p in ("VV", "VH")}
        scenes.append(_scene(key, str(pols["VV"].parent / key), refs, units))
    return scenes


def check_grid(scene: S1Scene) -> GridInfo:
    """The (common) grid of VV and VH; DataError for GCP-only, CRS-less or mismatched files."""
    grids = {}
    for p, r in scene.bands.items():
        with open_raster(r.path) as src:
            gcps: Any = src.gcps[0]
            if src.crs is None and gcps:
                raise DataError("the raster is georeferenced by GCPs only (a raw GRD): terrain-correct it "
                                "first (SNAP Terrain-Correction, or gdalwarp)", path=r.path)
        grids[p] = grid_of(r.path)
    vv, vh = grids["VV"], grids["VH"]
    if (vv.crs, vv.transform, vv.width, vv.height) != (vh.crs, vh.transform, vh.width, vh.height):
        raise DataError(f"VV and VH are on different grids ({vv.width}x{vv.height} vs "
                        f"{vh.width}x{vh.height}, {vv.crs} vs {vh.crs}) (mismatched band sizes)",
                        path=vh.path)
    return vv
