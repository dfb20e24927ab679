"""Small georeferenced example scenes in the layouts ``csmae tile`` reads (for docs, tests, benches).

A scene is a mosaic of 120x120 patches (real BigEarthNet pixels in the tests, synthetic pixels in
the README example) on a UTM grid, written as per-band COGs, a ``.SAFE`` folder of JP2 files with
``MTD_MSIL2A.xml``, a multi-band stack, S1 VV/VH files in dB or linear power, and STAC items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from csmae.sensors import S2_BANDS_10, get_sensor

TEN_M = ("B02", "B03", "B04", "B08")


def mosaic(patches: Sequence[Mapping[str, np.ndarray]], cols: int) -> dict[str, np.ndarray]:
    """Native-size bands of patches placed row by row (``cols`` per row) -> scene bands."""
    rows = -(-len(patches) // cols)
    out: dict[str, np.ndarray] = {}
    for b in patches[0]:
        side = patches[0][b].shape[-1]
        a = np.zeros((rows * side, cols * side), dtype=patches[0][b].dtype)
        for i, p in enumerate(patches):
            r, c = divmod(i, cols)
            a[r * side:(r + 1) * side, c * side:(c + 1) * side] = p[b]
        out[b] = a
    return out


def post_2022(dn: np.ndarray, offset: int = -1000) -> np.ndarray:
    """The same reflectance as a PB >= 04.00 product would encode it: DN - offset, 0 stays nodata."""
    out = dn.astype(np.int32) - offset
    out[dn == 0] = 0
    return np.clip(out, 0, 65535).astype(np.uint16)


def _write(path: Path, arrays: Sequence[np.ndarray], *, crs: Any, transform: Any, driver: str = "COG",
           descriptions: Sequence[str] | None = None, nodata: float | None = None,
           tags: Mapping[str, str] | None = None) -> Path:
    import rasterio

    kw: dict[str, Any] = {"compress": "deflate", "blocksize": 256} if driver == "COG" else \
        {"QUALITY": 100, "REVERSIBLE": "YES"} if driver == "JP2OpenJPEG" else {}
    h, w = arrays[0].shape
    with rasterio.open(path, "w", driver=driver, width=w, height=h, count=len(arrays), dtype=arrays[0].dtype,
                       crs=crs, transform=transform, nodata=nodata, **kw) as dst:
        for i, a in enumerate(arrays, start=1):
            dst.write(a, i)
            if descriptions:
                dst.set_band_description(i, descriptions[i - 1])
        if tags:
            dst.update_tags(**tags)
    return path


def _t20(transform: Any) -> Any:
    from affine import Affine

    return transform @ Affine.scale(2)


def write_band_files(folder: Path, bands: Mapping[str, np.ndarray], *, crs: Any, transform: Any,
                     tile: str = "33UUP", stamp: str = "20170613T101031", driver: str = "COG",
                     ext: str = "tif") -> list[Path]:
    """``T<tile>_<stamp>_<band>_<10m|20m>.<ext>`` per band (20 m bands on the 20 m grid)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for b, a in bands.items():
        at10 = b in TEN_M
        p = folder / f"T{tile}_{stamp}_{b}_{'10m' if at10 else '20m'}.{ext}"
        out.append(_write(p, [a], crs=crs, transform=transform if at10 else _t20(transform), driver=driver))
    return out


def mtd_xml(baseline: str, offset: int) -> str:
    """A minimal ``MTD_MSIL2A.xml`` with the quantification, offsets and band ids of a real product."""
    phys = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    spec = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{p}"/>' for i, p in enumerate(phys))
    offs = "" if offset == 0 else "<BOA_ADD_OFFSET_VALUES_LIST>" + "".join(
        f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(len(phys))) + \
        "</BOA_ADD_OFFSET_VALUES_LIST>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">'
        f"<n1:General_Info><Product_Info><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE></Product_Info>"
        "<Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST>"
        '<BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
        f"</QUANTIFICATION_VALUES_LIST>{offs}<Spectral_Information_List>{spec}</Spectral_Information_List>"
        "</Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>\n")


def write_safe(root: Path, bands: Mapping[str, np.ndarray], *, crs: Any, transform: Any, product: str,
               baseline: str = "02.04", offset: int = 0, scl: np.ndarray | None = None) -> Path:
    """A ``.SAFE`` folder: JP2 bands in ``GRANULE/<g>/IMG_DATA/R10m|R20m`` and ``MTD_MSIL2A.xml``."""
    safe = root / f"{product}.SAFE"
    parts = product.split("_")
    tile, stamp = parts[5][1:], parts[2]
    img = safe / "GRANULE" / f"L2A_T{tile}_A000000_{stamp}" / "IMG_DATA"
    for b, a in bands.items():
        res = "10m" if b in TEN_M else "20m"
        (img / f"R{res}").mkdir(parents=True, exist_ok=True)
        _write(img / f"R{res}" / f"T{tile}_{stamp}_{b}_{res}.jp2", [a], crs=crs,
               transform=transform if res == "10m" else _t20(transform), driver="JP2OpenJPEG")
    if scl is not None:
        _write(img / "R20m" / f"T{tile}_{stamp}_SCL_20m.jp2", [scl], crs=crs, transform=_t20(transform),
               driver="JP2OpenJPEG")
    (safe / "MTD_MSIL2A.xml").write_text(mtd_xml(baseline, offset))
    return safe


def write_stack(path: Path, bands: Mapping[str, np.ndarray], *, crs: Any, transform: Any) -> Path:
    """One multi-band GeoTIFF on the 10 m grid, band descriptions B02...; 20 m bands repeated 2x2."""
    arrays, names = [], []
    for b in S2_BANDS_10:
        a = bands[b]
        arrays.append(a if b in TEN_M else a.repeat(2, axis=0).repeat(2, axis=1))
        names.append(b)
    return _write(path, arrays, crs=crs, transform=transform, descriptions=names)


def write_s1(folder: Path, vv_db: np.ndarray, vh_db: np.ndarray, *, crs: Any, transform: Any, name: str,
             units: str = "db", two_band: bool = False, nodata: float | None = None,
             say_units: bool = True) -> list[Path]:
    """S1 as ``<name>_VV.tif`` + ``<name>_VH.tif`` (or one 2-band ``<name>.tif``), in dB or linear power."""
    folder.mkdir(parents=True, exist_ok=True)
    conv = (lambda a: a.astype(np.float32)) if units == "db" else \
        (lambda a: np.power(10.0, a / 10.0).astype(np.float32))
    vv, vh = conv(vv_db), conv(vh_db)
    tags = {"units": "dB" if units == "db" else "linear power"} if say_units else None
    if two_band:
        return [_write(folder / f"{name}.tif", [vv, vh], crs=crs, transform=transform,
                       descriptions=["VV", "VH"], nodata=nodata, tags=tags)]
    return [_write(folder / f"{name}_{p}.tif", [a], crs=crs, transform=transform, nodata=nodata, tags=tags)
            for p, a in (("VV", vv), ("VH", vh))]


def write_stac_item(path: Path, *, item_id: str, when: datetime, assets: Mapping[str, Path],
                    bbox: Sequence[float], extra: Mapping[str, Mapping[str, Any]] | None = None,
                    properties: Mapping[str, Any] | None = None) -> Path:
    """A local STAC Item JSON whose assets point (relative hrefs) to ``assets``."""
    import pystac
    import shapely.geometry

    item = pystac.Item(id=item_id, geometry=shapely.geometry.mapping(shapely.geometry.box(*bbox)),
                       bbox=list(bbox), datetime=when, properties=dict(properties or {}))
    for key, p in assets.items():
        rel = os.path.relpath(Path(p).resolve(), path.parent.resolve())
        item.add_asset(key, pystac.Asset(href=rel, media_type=pystac.MediaType.COG,
                                         extra_fields=dict((extra or {}).get(key, {}))))
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=2))
    return path


def synthetic_scene(rows: int, cols: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(S2 native bands uint16, S1 (2, H, W) dB) of ``rows`` x ``cols`` synthetic patches."""
    from csmae.data import synth_scene as ss

    rng = np.random.default_rng(seed)
    s2p, s1p = [], []
    for _ in range(rows * cols):
        cover = ss.land_cover(rng)
        img = ss.s2_image(rng, cover)
        s2p.append({b: np.rint(img[b]).astype(np.uint16) for b in get_sensor("s2").bands})
        s1 = ss.s1_image(rng, cover)
        s1p.append({"VV": s1[0], "VH": s1[1]})
    s1m = mosaic(s1p, cols)
    return mosaic(s2p, cols), np.stack([s1m["VV"], s1m["VH"]])
