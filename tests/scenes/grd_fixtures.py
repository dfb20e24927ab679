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


def make_product(tmp: Path, *, region: tuple[int, int, int, int] = REGION, zipped: bool = False,
                 full: bool = False, lon_shift: float | None = None) -> GrdFixture:
    """Copy the real product under ``tmp`` and write its measurement TIFFs (see the module doc and
    :func:`csmae.data.scenes.example.write_grd_product`).

    ``full``: data everywhere (the whole image, in strips; for the benchmark), else ``region`` only.
    ``zipped``: also zip it as ``<product>.SAFE.zip`` (the .zip is returned as ``safe``).
    ``lon_shift``: the same acquisition moved that many degrees east (:func:`shift_xmls`).
    """
    from csmae.data.scenes.example import write_grd_product, zip_product

    xml = _xml_safe() if lon_shift is None else shift_xmls(tmp / "xml", lon_shift)
    safe = write_grd_product(tmp, xml, sigma_at, region=region, full=full, zero_edge=ZERO_EDGE)
    if not zipped:
        return GrdFixture(safe=safe, region=region)
    z = zip_product(safe, tmp / f"{PRODUCT}.SAFE.zip", remove=True)
    return GrdFixture(safe=z, region=region)


def _xml_safe() -> Path:
    import pytest

    if not GRD_DIR.exists():
        pytest.skip(f"shared GRD product not found at {GRD_DIR}")
    return GRD_DIR / f"{PRODUCT}.SAFE"


def copy_xmls(tmp: Path) -> Path:
    """A writable copy of the real product's XMLs, with empty measurement placeholders."""
    from csmae.data.scenes.example import copy_grd_xmls

    return copy_grd_xmls(_xml_safe(), tmp)


def edit_member(safe: Path, rel: str, old: str, new: str) -> None:
    """Replace text in a member of a product folder (bad-input tests)."""
    p = safe / rel
    p.write_text(p.read_text().replace(old, new, 1))
    sign(safe, rel)


def sign(safe: Path, rel: str) -> None:
    """Record a member's MD5 and size in the product's manifest.safe (as a product written with these
    bytes carries them)."""
    from csmae.data.scenes.example import sign_member

    sign_member(safe, rel)


def shift_xmls(tmp: Path, degrees: float) -> Path:
    """A copy of the real product's XMLs moved ``degrees`` east about the Earth's axis: every geolocation
    grid longitude shifted (written in [-180, 180], as a product writes them: a product moved across
    the antimeridian jumps from 179.x to -179.x), the Earth-fixed orbit state vectors (position and
    velocity) rotated by the same angle, and the manifest's footprint shifted. The ellipsoid is
    symmetric about that axis, so this is the same acquisition over other ground, consistent for the
    GCP geocoding and for sarsen's orbit geometry alike; lines, pixels, times and tables are unchanged."""
    import re

    from csmae.data.scenes.example import copy_grd_xmls

    safe = copy_grd_xmls(_xml_safe(), tmp)
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))

    def lon(v: str) -> str:
        return f"{(float(v) + degrees + 180.0) % 360.0 - 180.0:.15e}"

    def rotate(m: re.Match[str]) -> str:
        x, y = float(m.group(2)), float(m.group(4))
        return f"{m.group(1)}{x * c - y * s:.15e}{m.group(3)}{x * s + y * c:.15e}{m.group(5)}"

    vector = re.compile(r"(<(?:position|velocity)>\s*<x>)([^<]+)(</x>\s*<y>)([^<]+)(</y>)")
    for ann in sorted((safe / "annotation").glob("s1*-grd-*.xml")):
        text = ann.read_text()
        text, n_lon = re.subn(r"(<longitude>)([^<]+)(</longitude>)",
                              lambda m: f"{m.group(1)}{lon(m.group(2))}{m.group(3)}", text)
        text, n_vec = vector.subn(rotate, text)
        assert n_lon > 100 and n_vec > 10, (ann, n_lon, n_vec)
        ann.write_text(text)
        sign(safe, ann.relative_to(safe).as_posix())
    manifest = safe / "manifest.safe"
    text = manifest.read_text()
    manifest.write_text(re.sub(
        r"(<gml:coordinates>)([^<]+)(</gml:coordinates>)",
        lambda m: m.group(1) + " ".join(f"{ll.split(',')[0]},{float(lon(ll.split(',')[1])):.6f}"
                                        for ll in m.group(2).split()) + m.group(3), text))
    return safe
