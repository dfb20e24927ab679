"""A real Sentinel-1 IW GRDH product with DN rasters written onto its geometry, for the GRD tests.

``../shared/data/s1-grd`` holds the genuine manifest, annotation, calibration and noise XMLs of one
product (stactools-packages/sentinel1 test data, Apache-2.0; Copernicus Sentinel data 2021) but no
pixels. :func:`make_product` copies it and writes full-size uint16 measurement TIFFs (sparse: only
the tiles of a region of interest hold data, the rest read as DN 0 = outside the swath) carrying
the real geolocation grid as TIFF GCPs, as a GRD measurement file does. Inside the region the DN
are made from a known backscatter field: ``DN = round(sqrt(sigma0 * A^2 + eta))`` with the real
sigmaNought LUT ``A`` and the real noise ``eta``, so calibration and noise removal must give the
field back. Helpers only: the tests are test_grd_*.py.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import SHARED_DATA

GRD_DIR = SHARED_DATA / "s1-grd"
PRODUCT = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8"
#: (l0, l1, p0, p1) of the region that holds data: near range, with GCPs at lines 2002/4004 and
#: pixels 0/1308/2616 inside
REGION = (1900, 4200, 0, 2800)
#: columns at the near-range edge set to DN 0 (the IPF's border-noise removal)
ZERO_EDGE = 40


def sigma_field(pol: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The known sigma0 (linear) at every (row, col) of a window: smooth fields plus a dark 'water' block."""
    return sigma_at(pol, rows[:, None], cols[None, :])


def sigma_at(pol: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The field at points (rows and cols broadcast together)."""
    r = np.asarray(rows, dtype=np.float64)
    c = np.asarray(cols, dtype=np.float64)
    s = 0.06 * (1.0 + 0.5 * np.sin(r / 700.0) * np.cos(c / 900.0))
    if pol == "VH":
        s = s * 0.2
    water = (r >= 3000) & (r < 3300) & (c >= 1500) & (c < 1900)
    return np.where(water, 2e-5, s)


@dataclass
class GrdFixture:
    safe: Path  # the product folder
    region: tuple[int, int, int, int]


def _dn_for(lut: object, noise: object, pol: str, l0: int, l1: int, p0: int, p1: int) -> np.ndarray:
    from csmae.data.scenes.grd_radiometry import interp_table, noise_power

    rows, cols = np.arange(l0, l1), np.arange(p0, p1)
    a = interp_table(lut, rows, cols).astype(np.float64)  # type: ignore[arg-type]
    eta = noise_power(noise, rows, cols).astype(np.float64)  # type: ignore[arg-type]
    dn = np.rint(np.sqrt(sigma_field(pol, rows, cols) * a * a + eta))
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    dn[:, : max(0, ZERO_EDGE - p0)] = 0
    return dn


def make_product(tmp: Path, *, region: tuple[int, int, int, int] = REGION, zipped: bool = False,
                 full: bool = False) -> GrdFixture:
    """Copy the real product under ``tmp`` and write its measurement TIFFs (see the module doc).

    ``full``: data everywhere (the whole image, in strips; for the benchmark), else ``region`` only.
    ``zipped``: also zip it as ``<product>.SAFE.zip`` (the .zip is returned as ``safe``).
    """
    import rasterio
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_geocode import GcpGrid
    from csmae.data.scenes.grd_safe import open_grd
    from csmae.data.scenes.grd_tables import read_annotation, read_calibration, read_noise

    safe = copy_xmls(tmp)
    product = open_grd(safe)
    for pol in ("VV", "VH"):
        ann = read_annotation(product, pol)
        lut, noise = read_calibration(product, pol, "sigma0"), read_noise(product, pol)
        out = safe / product.files[pol].measurement
        out.parent.mkdir(parents=True, exist_ok=True)
        profile = dict(driver="GTiff", width=ann.samples, height=ann.lines, count=1, dtype="uint16",
                       tiled=not full, SPARSE_OK=not full, nodata=None)
        if not full:
            profile.update(blockxsize=256, blockysize=256)
        with rasterio.open(out, "w", **profile) as dst:
            dst.gcps = (GcpGrid(ann.gcps).gcps(centre=False), CRS.from_epsg(4326))
            l0, l1, p0, p1 = (0, ann.lines, 0, ann.samples) if full else region
            step = 512
            for y in range(l0, l1, step):
                y1 = min(y + step, l1)
                dst.write(_dn_for(lut, noise, pol, y, y1, p0, p1), 1,
                          window=rasterio.windows.Window(p0, y, p1 - p0, y1 - y))
        sign(safe, product.files[pol].measurement)  # the product's own checksum, as ESA writes it
    if not zipped:
        return GrdFixture(safe=safe, region=region)
    z = tmp / f"{PRODUCT}.SAFE.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(safe.rglob("*")):
            if p.is_file():
                zf.write(p, f"{PRODUCT}.SAFE/{p.relative_to(safe).as_posix()}")
    shutil.rmtree(safe)
    return GrdFixture(safe=z, region=region)


def copy_xmls(tmp: Path) -> Path:
    """A writable copy of the real product's XMLs, with empty measurement placeholders."""
    import pytest

    if not GRD_DIR.exists():
        pytest.skip(f"shared GRD product not found at {GRD_DIR}")
    out = tmp / f"{PRODUCT}.SAFE"
    shutil.copytree(GRD_DIR / f"{PRODUCT}.SAFE", out)
    for p in [out, *out.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (out / "measurement").mkdir()
    for pol, n in (("vh", 2), ("vv", 1)):
        name = f"s1a-iw-grd-{pol}-20210809t173953-20210809t174018-039156-049f13-00{n}.tiff"
        (out / "measurement" / name).touch()
    return out


def edit_member(safe: Path, rel: str, old: str, new: str) -> None:
    """Replace text in a member of a product folder (bad-input tests)."""
    p = safe / rel
    p.write_text(p.read_text().replace(old, new, 1))
    sign(safe, rel)


def sign(safe: Path, rel: str) -> None:
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
