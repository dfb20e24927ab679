"""Local STAC Items (pystac) as scene inputs: assets -> band files, scale/offset -> radiometry.

S2 assets are found by key (``B02``..., Planetary Computer), by common name (``blue``, ``nir08``,
``swir16``..., Earth Search) or by ``eo:bands`` name; ``raster:bands`` scale/offset give the
radiometry (Earth Search: scale 0.0001, offset -0.1 from PB 04.00). Without scale/offset, an item
whose ``s2:processing_baseline`` is 04.00 or later gets the -1000 DN offset of that baseline.
S1 assets are ``vv`` and ``vh``: terrain-corrected COGs (e.g. Planetary Computer's sentinel-1-rtc), or
the measurement files of a raw GRD product when the item also carries the product's XML (the asset keys
of :data:`GRD_ASSETS`): calibrated, noise-removed and geocoded as a ``.SAFE`` would be
(:mod:`csmae.data.scenes.grd_scene`). Relative hrefs are resolved against the item's file; a raw GRD
item's assets must be local files (download them first).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csmae.data.base import DataError
from csmae.data.scenes.radiometry import S2Radiometry, band_name, checked_radiometry, number
from csmae.data.scenes.rasters import BandRef
from csmae.data.scenes.s1 import S1Scene, _scene
from csmae.data.scenes.s2 import S2Scene

if TYPE_CHECKING:
    from csmae.data.scenes.grd_safe import GrdProduct
    from csmae.data.scenes.grd_scene import GrdScene

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


#: the longest href followed (Linux PATH_MAX); longer ones are refused with the item named
MAX_HREF = 4096


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text):,} characters)"


def _href(item_path: str, key: str, asset: Any) -> str:
    raw = asset.href
    if not isinstance(raw, str) or not raw:
        raise DataError(f"asset {key!r} has no href", path=item_path)
    if len(raw) > MAX_HREF:
        raise DataError(f"asset {key!r} has an href of {len(raw):,} characters (more than {MAX_HREF}): "
                        f"{_short(raw)}", path=item_path)
    try:
        href = asset.get_absolute_href() or raw
    except (OSError, ValueError) as e:
        raise DataError(f"asset {key!r}: cannot resolve href {_short(raw)} ({e})", path=item_path) from None
    if "://" in href and not href.startswith("file://"):
        return str(href)
    local = href.removeprefix("file://")
    try:
        found = Path(local).exists()
    except OSError as e:
        raise DataError(f"asset {key!r} points to {_short(local)}: not a usable path ({e.strerror})",
                        path=item_path) from None
    if not found:
        raise DataError(f"asset {key!r} points to {_short(local)}, which does not exist", path=item_path)
    return local


def _rad(key: str, asset: Any, item: Any, source: str, path: str) -> S2Radiometry | None:
    rb = asset.extra_fields.get("raster:bands") or []
    if rb and not isinstance(rb, list) or rb and not isinstance(rb[0], dict):
        raise DataError(f"raster:bands of asset {key!r} is not a list of objects", path=path)
    if rb and ("scale" in rb[0] or "offset" in rb[0]):
        where = f"raster:bands of asset {key!r}"
        scale = number(rb[0].get("scale", 1e-4), field=f"{where} scale", path=path)
        offset = number(rb[0].get("offset", 0.0), field=f"{where} offset", path=path)
        return checked_radiometry(scale, offset, source=f"{source} raster:bands scale/offset", path=path,
                                  fields=f"{where} scale/offset")
    pb = item.properties.get("s2:processing_baseline")
    if pb is not None:
        try:
            new = float(pb) >= 4.0
        except ValueError:
            new = False
        return S2Radiometry(offset=-0.1 if new else 0.0, source=f"{source} s2:processing_baseline {pb}")
    return None


#: the assets of a raw S1 GRD item per polarisation (``{pol}`` = vv / vh), as stactools-packages/sentinel1
#: writes them (src/stactools/sentinel1/grd/metadata_links.py: "schema-product-{pol}",
#: "schema-calibration-{pol}", "schema-noise-{pol}", "safe-manifest"; grd/stac.py: the measurement as
#: "vv" / "vh") and Planetary Computer's sentinel-1-grd collection publishes them
#: (microsoft/planetary-computer-tasks datasets/sentinel-1-grd/collection/template.json item_assets:
#: "vv", "vh" COGs, "schema-product-vv", "schema-calibration-vv", "schema-noise-vv", ..., "safe-manifest")
GRD_ASSETS = {"measurement": "{pol}", "annotation": "schema-product-{pol}",
              "calibration": "schema-calibration-{pol}", "noise": "schema-noise-{pol}"}
GRD_MANIFEST_ASSET = "safe-manifest"
#: collection ids of raw GRD items (Planetary Computer; stactools' examples)
GRD_COLLECTIONS = ("sentinel-1-grd", "sentinel1-grd")


def is_grd_item(item: Any) -> bool:
    """Whether a STAC item is a raw S1 GRD product (its XML assets or its collection say so)."""
    keys = {k.lower() for k in item.assets}
    return (GRD_MANIFEST_ASSET in keys or any(k.startswith("schema-") for k in keys)
            or (item.collection_id or "").lower() in GRD_COLLECTIONS)


def _local(path: str, key: str, href: str) -> str:
    if "://" in href:
        raise DataError(f"asset {key!r} is remote ({_short(href)}): the assets of a raw GRD item are read "
                        "from disk: download them first", path=path)
    return href


def grd_product_of_item(path: str, item: Any) -> GrdProduct:
    """The raw GRD product an item's assets make up; DataError naming the item and any missing asset."""
    from csmae.data.scenes.grd_safe import (
        GRD_POLS,
        GrdProduct,
        PolFiles,
        check_kind,
        ipf_version,
        name_parts,
        parse_xml,
    )

    keys = {k.lower(): k for k in item.assets}
    missing = [t.format(pol=p.lower()) for p in GRD_POLS for t in GRD_ASSETS.values()
               if t.format(pol=p.lower()) not in keys]
    if missing:
        raise DataError(f"the S1 GRD item {item.id} has no {', '.join(repr(m) for m in missing)} asset(s): "
                        "a raw GRD needs each polarisation's measurement (vv, vh), product annotation "
                        "(schema-product-*), calibration (schema-calibration-*) and noise (schema-noise-*) "
                        f"XML (assets: {sorted(item.assets)})", path=path)
    files = {}
    for pol in GRD_POLS:
        got = {}
        for kind, t in GRD_ASSETS.items():
            key = keys[t.format(pol=pol.lower())]
            got[kind] = _local(path, key, _href(path, key, item.assets[key]))
        files[pol] = PolFiles(**got)
    parts = name_parts(item.id)
    props = item.properties
    mode = str(props.get("sar:instrument_mode") or parts["mode"]).upper()
    ptype = str(props.get("sar:product_type") or parts["product_type"]).upper()
    pols = tuple(sorted(str(p).upper() for p in props.get("sar:polarizations") or GRD_POLS))
    check_kind(ptype, mode, pols, path)
    manifest = ipf = None
    if GRD_MANIFEST_ASSET in keys:
        key = keys[GRD_MANIFEST_ASSET]
        manifest = _local(path, key, _href(path, key, item.assets[key]))
        ipf = ipf_version(parse_xml(Path(manifest).read_bytes(), manifest))
    else:
        log.warning("%s: no %r asset: the IPF version is unknown; border noise is taken as removed by the "
                    "IPF (IPF >= 2.90, products from 2018 on)", path, GRD_MANIFEST_ASSET)
    cm = item.common_metadata
    return GrdProduct(name=item.id, source=path, zip_path=None, inner_root="", mission=parts["mission"],
                      mode=mode, product_type=ptype, resolution=parts["resolution"], ipf_version=ipf or "",
                      polarisations=pols, files=files, start=cm.start_datetime or item.datetime,
                      stop=cm.end_datetime or item.datetime, item_manifest=manifest, from_stac=True)


def scene_from_item(path: str, *, bands: tuple[str, ...], s1_units: str | None,
                    options: Mapping[str, Any] | None = None) -> S2Scene | S1Scene | GrdScene:
    """An S2 or S1 scene from one STAC Item JSON (kind decided by its assets); ``options``: the raw GRD
    options (``s1_calibration``, ``s1_geocoding``, ``dem``) for a raw GRD item."""
    item = _read_item(path)
    dt = item.datetime or item.common_metadata.start_datetime
    keys = {k.lower(): k for k in item.assets}
    if is_grd_item(item):
        from csmae.data.scenes.grd_scene import scene_of_product

        opts = options or {}
        return scene_of_product(grd_product_of_item(path, item),
                                calibration=opts.get("s1_calibration") or "sigma0",
                                geocoding=opts.get("s1_geocoding") or "tps", dem=opts.get("dem"))
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
        r = _rad(found[b][0], found[b][1], item, f"STAC {Path(path).name}", path)
        if r is not None:
            rad[b] = r
    scl = BandRef(_href(path, found["SCL"][0], found["SCL"][1])) if "SCL" in found else None
    return S2Scene(name=item.id, source=path, bands=refs, scl=scl, radiometry=rad, datetime=dt)
