"""Local STAC Items (pystac) as scene inputs: assets -> band files, scale/offset -> radiometry.

S2 assets are found by key (``B02``..., Planetary Computer), by common name (``blue``, ``nir08``,
``swir16``..., Earth Search) or by ``eo:bands`` name; ``raster:bands`` scale/offset give the
radiometry (Earth Search: scale 0.0001, offset -0.1 from PB 04.00). Without scale/offset, an item
whose ``s2:processing_baseline`` is 04.00 or later gets the -1000 DN offset of that baseline.
S1 assets are ``vv`` and ``vh``. Relative hrefs are resolved against the item's file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from csmae.data.base import DataError
from csmae.data.scenes.radiometry import S2Radiometry, band_name
from csmae.data.scenes.rasters import BandRef
from csmae.data.scenes.s1 import S1Scene, _scene
from csmae.data.scenes.s2 import S2Scene

log = logging.getLogger(__name__)

COMMON_NAMES = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
                "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
                "swir16": "B11", "swir22": "B12", "scl": "SCL"}


def _read_item(path: str) -> Any:
    import pystac

    if not Path(path).is_file():
        raise DataError("STAC item not found", path=path)
    try:
        item = pystac.Item.from_file(path)
    except Exception as e:  # pystac raises several types for bad JSON / not an item
        raise DataError(f"not a STAC Item ({type(e).__name__}: {str(e)[:200]})", path=path) from None
    return item


def _band_of_asset(key: str, asset: Any) -> str | None:
    k = key.lower().removesuffix("-jp2")
    if k in COMMON_NAMES:
        return COMMON_NAMES[k]
    name = band_name(key)
    if name.startswith("B") and (name[1:].isdigit() or name == "B8A") or name == "SCL":
        return name
    for b in asset.extra_fields.get("eo:bands", []) or []:
        n = b.get("name") or ""
        if band_name(n).startswith("B"):
            return band_name(n)
        if (b.get("common_name") or "").lower() in COMMON_NAMES:
            return COMMON_NAMES[b["common_name"].lower()]
    return None


def _href(item_path: str, key: str, asset: Any) -> str:
    href = asset.get_absolute_href() or asset.href
    if "://" in href and not href.startswith("file://"):
        return str(href)
    local = href.removeprefix("file://")
    if not Path(local).exists():
        raise DataError(f"asset {key!r} points to {local}, which does not exist", path=item_path)
    return local


def _rad(asset: Any, item: Any, source: str) -> S2Radiometry | None:
    rb = asset.extra_fields.get("raster:bands") or []
    if rb and ("scale" in rb[0] or "offset" in rb[0]):
        return S2Radiometry(scale=float(rb[0].get("scale", 1e-4)), offset=float(rb[0].get("offset", 0.0)),
                            source=f"{source} raster:bands scale/offset")
    pb = item.properties.get("s2:processing_baseline")
    if pb is not None:
        try:
            new = float(pb) >= 4.0
        except ValueError:
            new = False
        return S2Radiometry(offset=-0.1 if new else 0.0, source=f"{source} s2:processing_baseline {pb}")
    return None


def scene_from_item(path: str, *, bands: tuple[str, ...], s1_units: str | None) -> S2Scene | S1Scene:
    """An S2 or S1 scene from one STAC Item JSON (kind decided by its assets)."""
    item = _read_item(path)
    dt = item.datetime or item.common_metadata.start_datetime
    keys = {k.lower(): k for k in item.assets}
    if "vv" in keys or "vh" in keys:
        missing = [p for p in ("vv", "vh") if p not in keys]
        if missing:
            raise DataError(f"the S1 item has no {missing[0]!r} asset (assets: {sorted(item.assets)})",
                            path=path)
        refs = {p.upper(): BandRef(_href(path, keys[p], item.assets[keys[p]])) for p in ("vv", "vh")}
        units = s1_units
        if units is None:
            rb = item.assets[keys["vv"]].extra_fields.get("raster:bands") or [{}]
            unit = str(rb[0].get("unit", "")).lower()
            units = "db" if unit in ("db", "decibel") else "linear" if unit else None
        sc = _scene(item.id, path, refs, units)
        return S1Scene(name=sc.name, source=path, bands=sc.bands, units=sc.units, units_from=sc.units_from,
                       nodata=sc.nodata, datetime=dt)
    found: dict[str, tuple[str, Any]] = {}
    for key, asset in item.assets.items():
        b = _band_of_asset(key, asset)
        if b is not None and (b not in found or not key.lower().endswith("-jp2")):
            found.setdefault(b, (key, asset))
    missing = [b for b in bands if b not in found]
    if missing:
        raise DataError(f"the item has no asset for band(s) {missing} (assets: {sorted(item.assets)}); an S2 "
                        "item needs B02... or blue/green/red/nir... assets, an S1 item vv and vh", path=path)
    refs = {b: BandRef(_href(path, found[b][0], found[b][1])) for b in bands}
    rad: dict[str, S2Radiometry] = {}
    for b in bands:
        r = _rad(found[b][1], item, f"STAC {Path(path).name}")
        if r is not None:
            rad[b] = r
    scl = BandRef(_href(path, found["SCL"][0], found["SCL"][1])) if "SCL" in found else None
    return S2Scene(name=item.id, source=path, bands=refs, scl=scl, radiometry=rad, datetime=dt)
