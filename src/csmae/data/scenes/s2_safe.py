"""Sentinel-2 L2A ``.SAFE`` products, as a folder or as the ``.zip`` users download: one scene per granule.

A product holds ``GRANULE/<granule>/IMG_DATA/R10m|R20m/..._<band>_<res>m.jp2``; since processing
baseline 02.07 (PSD 14, 2016-12) one granule, before it ("PSD 13") up to dozens, each a tile of its
own: every granule becomes one scene, named ``<product>_<tile>`` when there are several. A zip is
read in place: members are listed and read with :mod:`zipfile` (the metadata XML, parsed with
defusedxml) and the bands are opened by GDAL through ``/vsizip/``; nothing is unpacked. Errors name
the product and the member.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path, PurePosixPath

from csmae.data.scenes.radiometry import parse_mtd_msil2a
from csmae.data.scenes.rasters import BandRef, datetime_from_name
from csmae.errors import DataError

log = logging.getLogger(__name__)

_TILE = re.compile(r"(?<![A-Za-z0-9])T(\d{2}[A-Z]{3})(?![A-Za-z0-9])")
_MTD = re.compile(r"^(MTD_MSIL2A|S2[ABCD]_[A-Z]{4}_MTD_SAFL2A_.*)\.xml$", re.IGNORECASE)
#: bands read from the 10 m folder; every other band and SCL from R20m
AT_10M = ("B02", "B03", "B04", "B08")


class _Product:
    """Member names (relative to the product root) of a folder or a zip, and how to open them."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: str | None = None
        self.root = ""
        if path.is_file():
            self.zip = str(path)
            try:
                with zipfile.ZipFile(path) as z:
                    names = z.namelist()
            except (zipfile.BadZipFile, EOFError, OSError) as e:
                raise DataError(f"not a readable zip (damaged or truncated: {e})", path=str(path)) from None
            roots = sorted({n.split("/", 1)[0] for n in names if "/GRANULE/" in f"/{n}" and "/" in n})
            safe = [r for r in roots if r.upper().endswith(".SAFE")]
            self.root = safe[0] if safe else ""
            cut = len(self.root) + 1 if self.root else 0
            self.names = [n[cut:] for n in names if (not self.root or n.startswith(self.root + "/"))
                          and not n.endswith("/")]
        else:
            self.names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        for n in self.names:
            parts = PurePosixPath(n).parts
            if ".." in parts or PurePosixPath(n).is_absolute():
                raise DataError(f"member {n!r} would leave the product: refused", path=str(path))

    def where(self, rel: str) -> str:
        if self.zip is not None:
            return f"{self.zip}!{self.root + '/' if self.root else ''}{rel}"
        return str(self.path / rel)

    def gdal(self, rel: str) -> str:
        if self.zip is not None:
            return f"/vsizip/{Path(self.zip).resolve()}/{self.root + '/' if self.root else ''}{rel}"
        return str(self.path / rel)

    def read(self, rel: str) -> bytes:
        if self.zip is None:
            return (self.path / rel).read_bytes()
        try:
            with zipfile.ZipFile(self.zip) as z:
                return z.read(f"{self.root}/{rel}" if self.root else rel)
        except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
            raise DataError(f"cannot read member {rel} ({e})", path=self.where(rel)) from None


def product_name(name: str) -> str:
    """``S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_20170613T101032.SAFE(.zip)`` -> the name without
    the trailing discriminator (the BigEarthNet-style scene part of patch ids)."""
    stem = re.sub(r"(\.zip)$", "", name, flags=re.IGNORECASE)
    stem = re.sub(r"(\.SAFE)$", "", stem, flags=re.IGNORECASE)
    parts = stem.split("_")
    if len(parts) == 7 and parts[1].startswith("MSIL2A"):
        return "_".join(parts[:6])
    return stem


def is_s2_zip(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() == ".zip"


def safe_scenes(path: str | Path, bands: tuple[str, ...]) -> list:
    """Every granule of an L2A product (folder or zip) as an :class:`~csmae.data.scenes.s2.S2Scene`."""
    from csmae.data.scenes.s2 import S2Scene

    p = Path(path)
    prod = _Product(p)
    granules = sorted({n.split("/")[1] for n in prod.names
                       if n.startswith("GRANULE/") and "/IMG_DATA/" in n and n.count("/") >= 3})
    if not granules:
        raise DataError("no GRANULE/*/IMG_DATA in the product (is it an L2A product?)", path=str(p))
    mtd = [n for n in prod.names if "/" not in n and _MTD.match(n)]
    rad = parse_mtd_msil2a(prod.read(mtd[0]), prod.where(mtd[0])) if mtd else {}
    if not rad:
        log.warning("%s: no MTD_MSIL2A.xml; assuming no BOA offset (pre-PB04.00 DN)", p)
    base = product_name(prod.root or p.name)  # a zip: the .SAFE inside names the product
    scenes = []
    for g in granules:
        prefix = f"GRANULE/{g}/IMG_DATA/"
        refs: dict[str, BandRef] = {}
        for b in bands:
            folder = "R10m" if b in AT_10M else "R20m"
            pat = re.compile(rf"^{re.escape(prefix + folder)}/[^/]*_{b}_{folder[1:]}\.(jp2|tif)$")
            found = sorted(n for n in prod.names if pat.match(n))
            if not found:
                raise DataError(f"band {b} is missing (no *_{b}_{folder[1:]}.jp2 in {folder} of granule {g})",
                                path=prod.where(prefix + folder))
            refs[b] = BandRef(prod.gdal(found[0]))
        scl_pat = re.compile(rf"^{re.escape(prefix)}R20m/[^/]*_SCL_20m\.(jp2|tif)$")
        scl = sorted(n for n in prod.names if scl_pat.match(n))
        name = base
        if len(granules) > 1:
            tile = _TILE.search(g)
            name = f"{base}_T{tile.group(1)}" if tile else f"{base}_{g}"
        when = datetime_from_name(base) or datetime_from_name(g)
        scenes.append(S2Scene(name=name, source=str(p), bands=refs, radiometry=rad, datetime=when,
                              scl=BandRef(prod.gdal(scl[0])) if scl else None, product=str(p)))
    if len(granules) > 1:
        log.info("%s: %d granules, one scene each", p, len(granules))
    return scenes
