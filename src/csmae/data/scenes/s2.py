"""Sentinel-2 L2A inputs: a ``.SAFE`` folder, per-band files, or one multi-band GeoTIFF.

- ``.SAFE`` folder or ``.SAFE.zip``: ``GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2`` ... (10 m bands from
  ``R10m``, 20 m bands and SCL from ``R20m``), radiometry from ``MTD_MSIL2A.xml``; one scene per
  granule (:mod:`.s2_safe`).
- per-band files (GeoTIFF/COG/JP2) with the band in the name (``..._B02_10m.tif``, ``B8A.tif``,
  ``..._SCL_20m.tif``), given one by one or as a folder; files of one scene share their name once the
  band (and resolution) token is removed. An ``MTD_MSIL2A.xml`` in the folder is used when present.
- one multi-band GeoTIFF whose band descriptions name the bands (``B02``...); 20 m bands stacked at
  10 m are brought back to their 60x60 patch by 2x2 block averages (exact for the usual nearest
  upsampling), then upsampled like BigEarthNet.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from csmae.data.base import DataError
from csmae.data.scenes.radiometry import BEN_QUANTIFICATION, S2Radiometry, band_name, read_mtd_msil2a
from csmae.data.scenes.rasters import BandRef, GridInfo, datetime_from_name, grid_of, open_raster
from csmae.data.scenes.s2_safe import is_s2_zip, safe_scenes

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
MTD = "MTD_MSIL2A.xml"
_BAND = re.compile(r"(?<![A-Za-z0-9])(B(?:0?[1-9]|1[0-2]|8A)|SCL)(?![A-Za-z0-9])", re.IGNORECASE)
_RES = re.compile(r"_(10|20|60)m(?![A-Za-z0-9])", re.IGNORECASE)
_TILE = re.compile(r"(?<![A-Za-z0-9])T(\d{2}[A-Z]{3})(?![A-Za-z0-9])")


@dataclass(frozen=True)
class S2Scene:
    """Where every band of one S2 L2A scene is, its radiometry and acquisition time."""

    name: str  # product/scene name used in patch ids
    source: str  # the path the user gave
    bands: dict[str, BandRef]
    scl: BandRef | None = None
    radiometry: dict[str, S2Radiometry] = field(default_factory=dict)
    datetime: datetime | None = None
    product: str | None = None  # the SAFE folder the bands are in (its manifest.safe has checksums)

    def radiometry_of(self, band: str) -> S2Radiometry:
        return self.radiometry.get(band, S2Radiometry())


@dataclass(frozen=True)
class S2Grids:
    """The checked grids of a scene: the 10 m grid defines the patches."""

    g10: GridInfo
    g20: GridInfo | None  # native 20 m grid (None when every band sits on the 10 m grid)
    at20: dict[str, bool]  # band -> read from the 20 m grid


def _band_of(name: str) -> str | None:
    m = _BAND.search(Path(name).stem)
    return None if m is None else band_name(m.group(1))


def claims_path(path: str) -> bool:
    """Whether an input looks like S2 L2A: a .SAFE product, a band file name (B02, B8A, SCL...),
    a folder holding band files, or a multi-band GeoTIFF named like an L2A product."""
    p = Path(path)
    if is_safe(p):
        return True
    if p.is_dir():
        return any(_band_of(f.name) for f in p.iterdir() if f.is_file())
    return _band_of(p.name) is not None or "MSIL2A" in p.name.upper()


def _scene_key(name: str) -> str:
    stem = Path(name).stem
    stem = _BAND.sub("", stem, count=1)
    stem = _RES.sub("", stem)
    return re.sub(r"__+", "_", stem).strip("_-. ")


def product_name(safe: Path) -> str:
    """``S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_20170613T101032.SAFE`` -> name without the
    trailing product discriminator (the BigEarthNet-style scene part of patch ids)."""
    stem = safe.name[:-5] if safe.name.upper().endswith(".SAFE") else safe.name
    parts = stem.split("_")
    if len(parts) == 7 and parts[1].startswith("MSIL2A"):
        return "_".join(parts[:6])
    return stem


def is_safe(p: Path) -> bool:
    return p.is_dir() and (p.name.upper().endswith(".SAFE") or (p / MTD).is_file()
                           or (p / "GRANULE").is_dir())


def from_multiband(path: Path, bands: tuple[str, ...], rad: dict[str, S2Radiometry]) -> S2Scene:
    """One multi-band raster whose band descriptions name the bands."""
    with open_raster(path) as src:
        desc = [d or "" for d in src.descriptions]
    named: dict[str, int] = {}
    for i, d in enumerate(desc, start=1):
        b = _band_of(d) if d else None
        if b is not None:
            named.setdefault(b, i)
    missing = [b for b in bands if b not in named]
    if missing:
        raise DataError(f"band(s) {missing} not found among the band descriptions {desc} "
                        "(name each band B02, B03, ... in the file's band descriptions)", path=str(path))
    refs = {b: BandRef(str(path), named[b]) for b in bands}
    scl = BandRef(str(path), named["SCL"]) if "SCL" in named else None
    return S2Scene(name=path.stem, source=str(path), bands=refs, scl=scl, radiometry=rad,
                   datetime=datetime_from_name(path.name))


def _files_in(p: Path) -> list[Path]:
    # not only regular files: a FIFO or device named like a band is refused by name when opened
    return sorted(f for f in p.iterdir() if not f.is_dir() and f.suffix.lower() in RASTER_SUFFIXES)


def from_band_files(files: list[Path], bands: tuple[str, ...], rad: dict[str, S2Radiometry],
                    source: str) -> S2Scene:
    """Per-band files of one scene (the band is in each name)."""
    refs: dict[str, BandRef] = {}
    scl = None
    for f in files:
        b = _band_of(f.name)
        if b is None:
            continue
        if b == "SCL":
            scl = BandRef(str(f))
        elif b in refs:
            raise DataError(f"band {b} given twice: {refs[b].path} and {f}", path=source)
        elif b in bands:
            refs[b] = BandRef(str(f))
    missing = [b for b in bands if b not in refs]
    if missing:
        have = sorted(refs)
        raise DataError(f"band(s) {missing} are missing (found {have}; band files need the band in "
                        "their name, e.g. T33UUP_20170613T101031_B05_20m.tif)", path=source)
    name = _scene_key(files[0].name) or Path(source).stem
    return S2Scene(name=name, source=source, bands=refs, scl=scl, radiometry=rad,
                   datetime=datetime_from_name(name) or datetime_from_name(files[0].name))


def find_s2_scenes(paths: list[str], bands: tuple[str, ...],
                   boa_offset: float | None = None) -> list[S2Scene]:
    """S2 scenes from the paths given to ``--s2`` (SAFE folders, band files or folders, stacks)."""
    scenes: list[S2Scene] = []
    loose: dict[str, list[Path]] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError("S2 input not found", path=str(p))
        if is_safe(p) or is_s2_zip(p):
            scenes.extend(safe_scenes(p, bands))  # one scene per granule; a .zip is read in place
        elif p.is_dir():
            files = _files_in(p)
            if not files:
                raise DataError(f"no raster files ({', '.join(RASTER_SUFFIXES)}) in the folder", path=str(p))
            rad = read_mtd_msil2a(p / MTD) if (p / MTD).is_file() else {}
            if len(files) == 1:
                scenes.append(from_multiband(files[0], bands, rad))
            else:
                scenes.append(from_band_files(files, bands, rad, str(p)))
        else:
            with open_raster(p) as src:
                count = src.count
            if count > 1:
                scenes.append(from_multiband(p, bands, {}))
            else:
                if _band_of(p.name) is None:
                    raise DataError("a single-band S2 file needs the band in its name (e.g. _B02_)",
                                    path=str(p))
                loose.setdefault(_scene_key(p.name), []).append(p)
    for key, files in loose.items():
        mtd = files[0].parent / MTD
        rad = read_mtd_msil2a(mtd) if mtd.is_file() else {}
        scenes.append(from_band_files(files, bands, rad, str(files[0].parent / key)))
    if boa_offset is not None:
        if not np.isfinite(boa_offset) or abs(boa_offset) > BEN_QUANTIFICATION:
            raise ValueError(f"--boa-offset {boa_offset:g} DN is implausible (products of baseline >= 04.00 "
                             f"use -1000; expected -{BEN_QUANTIFICATION:g}..{BEN_QUANTIFICATION:g})")
        src = f"--boa-offset {boa_offset:g}"
        scenes = [S2Scene(name=s.name, source=s.source, bands=s.bands, scl=s.scl, datetime=s.datetime,
                          product=s.product,
                          radiometry={b: S2Radiometry(offset=boa_offset / 10000.0, source=src)
                                      for b in s.bands}) for s in scenes]
    return scenes


def check_grids(scene: S2Scene) -> S2Grids:
    """Every band's grid checked against the 10 m grid; DataError naming the odd file."""
    from csmae.sensors import BAND_RESOLUTION_M

    grids = {b: grid_of(r.path) for b, r in scene.bands.items()}
    tens = [b for b in scene.bands if BAND_RESOLUTION_M[b] == 10]
    if not tens:
        raise DataError("no 10 m band (B02, B03, B04 or B08): the 10 m grid defines the patches",
                        path=scene.source)
    g10 = grids[tens[0]]
    if abs(g10.res[0] - 10) > 1e-6 * 10 or abs(g10.res[1] - 10) > 1e-6 * 10 or not g10.crs.is_projected:
        raise DataError(f"band {tens[0]} is not on a 10 m projected grid (pixel {g10.res}, CRS {g10.crs}); "
                        "S2 L2A 10 m bands are 10 m in UTM", path=g10.path)
    at20: dict[str, bool] = {}
    g20: GridInfo | None = None
    for b, g in grids.items():
        same_crs = g.crs == g10.crs
        if same_crs and g.transform == g10.transform and (g.width, g.height) == (g10.width, g10.height):
            at20[b] = False
            continue
        if BAND_RESOLUTION_M[b] == 20 and same_crs and _is_20m_of(g, g10):
            if g20 is not None and (g.transform, g.width, g.height) != (g20.transform, g20.width, g20.height):
                raise DataError(f"band {b} is on another 20 m grid than {g20.path}", path=g.path)
            g20 = g
            at20[b] = True
            continue
        raise DataError(
            f"band {b} does not match the 10 m grid of {g10.path}: size {g.width}x{g.height} vs "
            f"{g10.width}x{g10.height}, pixel {g.res} vs {g10.res}, CRS {g.crs} vs {g10.crs} "
            "(mismatched band sizes)", path=g.path)
    if scene.scl is not None:
        gs = grid_of(scene.scl.path)
        ok = gs.crs == g10.crs and ((gs.transform == g10.transform and gs.width == g10.width)
                                    or _is_20m_of(gs, g10))
        if not ok:
            raise DataError("the SCL band is neither on the 10 m nor on the 20 m grid", path=gs.path)
    return S2Grids(g10=g10, g20=g20, at20=at20)


def _is_20m_of(g: GridInfo, g10: GridInfo) -> bool:
    t, t10 = g.transform, g10.transform
    return (abs(t.a - 2 * t10.a) < 1e-6 and abs(t.e - 2 * t10.e) < 1e-6 and abs(t.c - t10.c) < 1e-6
            and abs(t.f - t10.f) < 1e-6 and g.width == -(-g10.width // 2) and g.height == -(-g10.height // 2))


def tile_of(name: str) -> str | None:
    """MGRS tile (``33UUP``) in a product or file name."""
    m = _TILE.search(name)
    return m.group(1) if m else None
