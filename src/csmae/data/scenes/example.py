"""Small georeferenced example scenes in the layouts ``csmae tile`` reads (for docs, tests, benches).

A scene is a mosaic of 120x120 patches (real BigEarthNet pixels in the tests, synthetic pixels in
the README example) on a UTM grid, written as per-band COGs, a ``.SAFE`` folder of JP2 files with
``MTD_MSIL2A.xml``, a multi-band stack, S1 VV/VH files in dB or linear power, and STAC items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
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
    write_manifest_safe(safe)
    return safe


def write_manifest_safe(safe: Path, algorithm: str = "SHA3-256") -> Path:
    """``manifest.safe`` listing every file of ``safe`` with its checksum, as Sentinel products do."""
    import hashlib

    new = {"SHA3-256": hashlib.sha3_256, "MD5": hashlib.md5}[algorithm]
    objects = []
    for i, f in enumerate(sorted(p for p in safe.rglob("*") if p.is_file() and p.name != "manifest.safe")):
        rel = f.relative_to(safe).as_posix()
        objects.append(
            f'<dataObject ID="obj{i}"><byteStream mimeType="application/octet-stream" '
            f'size="{f.stat().st_size}">'
            f'<fileLocation locatorType="URL" href="./{rel}"/>'
            f'<checksum checksumName="{algorithm}">{new(f.read_bytes()).hexdigest()}</checksum>'
            "</byteStream></dataObject>")
    path = safe / "manifest.safe"
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                    '<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" version="esa/safe/sentinel/1.1">'
                    f"<dataObjectSection>{''.join(objects)}</dataObjectSection></xfdu:XFDU>\n")
    return path


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


def zip_product(folder: Path, dest: Path, *, remove: bool = False) -> Path:
    """``X.SAFE`` -> ``dest`` (``X.SAFE.zip``) with members ``X.SAFE/...``, deflated, as the Copernicus
    Data Space delivers products; ``remove``: delete the folder afterwards."""
    import shutil
    import zipfile

    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    if remove:
        shutil.rmtree(folder)
    return dest


#: a GRD measurement's DN from calibrated backscatter: sigma0 (linear) at (pol, rows, cols) broadcast arrays
SigmaField = Callable[[str, np.ndarray, np.ndarray], np.ndarray]


def write_grd_product(out: Path, xml_safe: Path, sigma: SigmaField, *, region: tuple[int, int, int, int],
                      full: bool = False, zero_edge: int = 0) -> Path:
    """A raw GRD product folder on a real product's metadata, with DN written from a known backscatter.

    ``xml_safe`` is a ``.SAFE`` folder holding a real product's manifest, annotation, calibration and
    noise XMLs (``../shared/data/s1-grd``: no measurement pixels). It is copied under ``out`` and the
    measurement TIFFs are written full size (sparse, tiled: only ``region`` = ``(l0, l1, p0, p1)`` holds
    data; ``full``: every line, in strips), uint16, carrying the geolocation grid as TIFF GCPs as a GRD
    measurement file does, with ``DN = round(sqrt(sigma0 * A^2 + eta))`` from the real sigmaNought LUT
    ``A`` and thermal noise ``eta`` (so calibration and noise removal give ``sigma`` back); the first
    ``zero_edge`` columns are DN 0 (the IPF's border-noise removal). The manifest records each
    measurement's MD5, as the product's own does. Returns the product folder.
    """
    import warnings

    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from csmae.data.scenes.grd_geocode import GcpGrid
    from csmae.data.scenes.grd_radiometry import interp_table, noise_power
    from csmae.data.scenes.grd_safe import open_grd
    from csmae.data.scenes.grd_tables import read_annotation, read_calibration, read_noise

    safe = copy_grd_xmls(xml_safe, out)
    product = open_grd(safe)
    for pol in ("VV", "VH"):
        ann = read_annotation(product, pol)
        lut, noise = read_calibration(product, pol, "sigma0"), read_noise(product, pol)
        path = safe / product.files[pol].measurement
        path.parent.mkdir(parents=True, exist_ok=True)
        profile: dict[str, Any] = dict(driver="GTiff", width=ann.samples, height=ann.lines, count=1,
                                       dtype="uint16", tiled=not full, SPARSE_OK=not full, nodata=None)
        if not full:
            profile.update(blockxsize=256, blockysize=256)
        l0, l1, p0, p1 = (0, ann.lines, 0, ann.samples) if full else region
        with warnings.catch_warnings(), rasterio.open(path, "w", **profile) as dst:
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # GCPs, no transform
            dst.gcps = (GcpGrid(ann.gcps).gcps(centre=False), CRS.from_epsg(4326))
            for y in range(l0, l1, 512):
                y1 = min(y + 512, l1)
                rows, cols = np.arange(y, y1), np.arange(p0, p1)
                a = interp_table(lut, rows, cols).astype(np.float64)
                eta = noise_power(noise, rows, cols).astype(np.float64)
                dn = np.rint(np.sqrt(sigma(pol, rows[:, None], cols[None, :]) * a * a + eta))
                dn = np.clip(dn, 1, 65535).astype(np.uint16)
                dn[:, : max(0, zero_edge - p0)] = 0
                dst.write(dn, 1, window=Window(p0, y, p1 - p0, y1 - y))
        sign_member(safe, product.files[pol].measurement)
    return safe


def copy_grd_xmls(xml_safe: Path, out: Path) -> Path:
    """A writable copy of a product's XMLs under ``out``, with empty measurement placeholders."""
    import shutil

    safe = out / xml_safe.name
    shutil.copytree(xml_safe, safe)
    for p in [safe, *safe.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (safe / "measurement").mkdir(exist_ok=True)
    for ann in sorted((safe / "annotation").glob("s1*-grd-*.xml")):
        (safe / "measurement" / f"{ann.stem}.tiff").touch()
    return safe


def sign_member(safe: Path, rel: str) -> None:
    """Record a member's MD5 and size in the product's manifest.safe (as a product written with these
    bytes carries them), so the product-checksum check sees a consistent product."""
    import hashlib
    import re

    data = (safe / rel).read_bytes()
    manifest = safe / "manifest.safe"
    text = manifest.read_text()
    href = re.escape(f'href="./{rel}"')
    pattern = re.compile(rf'(size=")\d+(">\s*<fileLocation[^>]*{href}/>\s*<checksum checksumName="MD5">)'
                         r"[0-9a-f]+(</checksum>)")
    text, n = pattern.subn(lambda m: f"{m.group(1)}{len(data)}{m.group(2)}{hashlib.md5(data).hexdigest()}"
                          f"{m.group(3)}", text)
    if n == 1:
        manifest.write_text(text)


def grd_annotation(xml_safe: Path) -> Any:
    """The VV annotation (:class:`csmae.data.scenes.grd_tables.Annotation`) of a product's XMLs."""
    import tempfile

    from csmae.data.scenes.grd_safe import open_grd
    from csmae.data.scenes.grd_tables import read_annotation

    with tempfile.TemporaryDirectory() as tmp:  # the XMLs with measurement placeholders: a product
        return read_annotation(open_grd(copy_grd_xmls(xml_safe, Path(tmp))), "VV")


def grd_sigma_from_map(xml_safe: Path, field: np.ndarray, *, crs: Any, transform: Any, pad: int = 48
                       ) -> tuple[SigmaField, tuple[int, int, int, int]]:
    """A backscatter field on a map grid as seen in a real product's radar geometry.

    ``field``: (2, H, W) linear VV, VH on the grid ``crs`` / ``transform``. Every radar pixel of the
    window that covers the grid (``pad`` pixels around it) is taken to lon/lat by the product's
    geolocation grid (GDAL's thin-plate spline, the transformer of ellipsoid geocoding) and samples
    the field there (bilinear; the nearest edge value outside it). Returns the sigma function for
    :func:`write_grd_product` and the window ``(l0, l1, p0, p1)``.
    """
    from pyproj import Transformer
    from rasterio.transform import GCPTransformer
    from scipy.ndimage import map_coordinates

    from csmae.data.scenes.grd_geocode import GcpGrid, radar_window

    ann = grd_annotation(xml_safe)
    grid = GcpGrid(ann.gcps)
    h, w = field.shape[1:]
    win = radar_window(grid, crs, transform, w, h, lines=ann.lines, samples=ann.samples, pad=pad)
    if win is None:
        raise ValueError("the map grid is outside the product")
    l0, l1, p0, p1 = win
    rows, cols = np.meshgrid(np.arange(l0, l1) + 0.5, np.arange(p0, p1) + 0.5, indexing="ij")
    lon, lat = GCPTransformer(grid.gcps(), tps=True).xy(rows.ravel(), cols.ravel(), offset="ul")
    x, y = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True).transform(lon, lat)
    fr = (np.asarray(y) - transform.f) / transform.e - 0.5
    fc = (np.asarray(x) - transform.c) / transform.a - 0.5
    sampled = {pol: map_coordinates(field[k].astype(np.float64), [fr, fc], order=1, mode="nearest")
               .reshape(rows.shape) for k, pol in enumerate(("VV", "VH"))}

    def sigma(pol: str, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return sampled[pol][np.clip(r - l0, 0, l1 - l0 - 1), np.clip(c - p0, 0, p1 - p0 - 1)]

    return sigma, (l0, l1, p0, p1)
