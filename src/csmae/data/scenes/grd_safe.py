"""Sentinel-1 GRD products as distributed: a ``.SAFE`` folder or its ``.zip``, found and checked.

The product's ``manifest.safe`` lists every data object (annotation, calibration, noise and
measurement files, by schema). Members are read in place: from the folder, or from the zip with
:mod:`zipfile` (XML) and GDAL's ``/vsizip/`` (the measurement TIFFs), never unpacked to disk. Every
XML is parsed with :mod:`defusedxml` (entity declarations and external entities are refused).

Only IW GRD (GRDH / GRDM) with VV and VH is accepted (the S1 sensor of csmae is VV/VH, as
BigEarthNet-S1); SLC, EW/SM/WV and HH/HV products are refused with the product named. A refused
or broken product raises :class:`DataError` naming the product and the member inside it.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from csmae.errors import DataError

#: polarisations csmae's S1 sensor needs
GRD_POLS = ("VV", "VH")
_SCHEMAS = {"s1Level1ProductSchema": "annotation", "s1Level1CalibrationSchema": "calibration",
            "s1Level1NoiseSchema": "noise", "s1Level1MeasurementSchema": "measurement"}
_NAME = re.compile(r"^(S1[ABCD])_(IW|EW|SM|WV|S[1-6])_(GRD|SLC|RAW|OCN)([HMF_]?)_([12])S([SDHV])([VH]?)_"
                   r"(\d{8}T\d{6})_(\d{8}T\d{6})_", re.IGNORECASE)
_POL_IN_FILE = re.compile(r"-(vv|vh|hh|hv)-", re.IGNORECASE)


@dataclass(frozen=True)
class PolFiles:
    """Members (paths relative to the product root) of one polarisation."""

    annotation: str
    calibration: str
    noise: str
    measurement: str


@dataclass(frozen=True)
class GrdProduct:
    """One GRD product: where it is, what it is, and its members per polarisation.

    ``gdal_root`` is the product root as GDAL opens it (a folder, or ``/vsizip/x.zip/X.SAFE``). A
    product from a STAC item (:func:`csmae.data.scenes.stac.grd_product_of_item`) has absolute member
    paths: ``Path(source) / member`` is the member itself.
    """

    name: str  # product name without .SAFE / .zip
    source: str  # the path the user gave
    zip_path: str | None  # the .zip, when zipped
    inner_root: str  # the .SAFE folder inside the zip ("" when the zip root is the product)
    mission: str
    mode: str
    product_type: str  # "GRD"
    resolution: str  # "H" | "M" | "F" | ""
    ipf_version: str  # e.g. "003.31" ("" when the manifest does not say)
    polarisations: tuple[str, ...]
    files: dict[str, PolFiles]
    start: datetime | None
    stop: datetime | None
    #: a STAC item's product: the item JSON is ``source``, members are the assets' absolute paths and
    #: this is its ``safe-manifest`` asset (None when the item has none)
    item_manifest: str | None = None
    from_stac: bool = False

    @property
    def safe_folder(self) -> str | None:
        """The folder sarsen opens as the SAFE (the product folder; a STAC item's manifest folder)."""
        if self.from_stac:
            return str(Path(self.item_manifest).parent) if self.item_manifest else None
        return None if self.zip_path is not None else self.source

    @property
    def ipf(self) -> tuple[int, ...]:
        """The IPF version as numbers (``(3, 31)``); ``()`` when unknown."""
        return tuple(int(p) for p in re.findall(r"\d+", self.ipf_version))

    def member(self, rel: str) -> str:
        """A member's path as the user would find it (for messages)."""
        if self.zip_path is not None:
            return f"{self.zip_path}!{_join(self.inner_root, rel)}"
        return str(Path(self.source) / rel)

    def gdal_path(self, rel: str) -> str:
        """A member's path for rasterio/GDAL (``/vsizip/`` inside a zip)."""
        if self.zip_path is not None:
            return f"/vsizip/{Path(self.zip_path).resolve()}/{_join(self.inner_root, rel)}"
        return str(Path(self.source) / rel)

    def read_member(self, rel: str) -> bytes:
        """The bytes of a member; DataError naming it when missing or unreadable."""
        return _read(self.source, self.zip_path, self.inner_root, rel)

    def parse_member(self, rel: str) -> Any:
        """A member XML's root element (defusedxml)."""
        return parse_xml(self.read_member(rel), self.member(rel))


def _join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if root else rel


def _read(source: str, zip_path: str | None, inner: str, rel: str) -> bytes:
    where = f"{zip_path}!{_join(inner, rel)}" if zip_path else str(Path(source) / rel)
    if zip_path is None:
        p = Path(source) / rel
        if not p.is_file():
            raise DataError(f"member {rel} is missing from the product", path=where)
        try:
            return p.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read member {rel} ({e.strerror})", path=where) from None
    try:
        with zipfile.ZipFile(zip_path) as z:
            try:
                return z.read(_join(inner, rel))
            except KeyError:
                raise DataError(f"member {rel} is missing from the zipped product", path=where) from None
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
        raise DataError(f"the zip is damaged or truncated ({e}) while reading member {rel}",
                        path=where) from None


def parse_xml(data: bytes, where: str) -> Any:
    """Parse product XML with defusedxml; DataError for malformed XML or entity tricks."""
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        return DET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise DataError(f"refused XML: {type(e).__name__} (entity declarations and external entities "
                        "are not allowed in product metadata)", path=where) from None
    except Exception as e:  # xml.etree.ElementTree.ParseError and expat errors
        raise DataError(f"malformed XML ({e})", path=where) from None


def local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def find_all(root: Any, tag: str) -> list[Any]:
    """Every descendant element named ``tag`` (any namespace)."""
    return [el for el in root.iter() if local(el.tag) == tag]


def find_text(root: Any, tag: str, default: str | None = None) -> str | None:
    for el in root.iter():
        if local(el.tag) == tag:
            return (el.text or "").strip()
    return default


def is_grd_product(path: str | Path) -> bool:
    """Whether a path names an S1 product (a ``S1?_...SAFE`` folder or ``...SAFE.zip`` / ``.zip``)."""
    p = Path(path)
    name = p.name
    if name.lower().endswith(".zip"):
        name = name[:-4]
    if not _NAME.match(name):
        return False
    if p.is_dir():
        return (p / "manifest.safe").exists() or name.upper().endswith(".SAFE")
    return p.suffix.lower() == ".zip" or name.upper().endswith(".SAFE")


def _zip_root(zip_path: str) -> str:
    """The ``X.SAFE`` folder inside a zip that holds ``manifest.safe`` ("" if at the root)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"not a readable zip (damaged or truncated: {e})", path=zip_path) from None
    roots = sorted({n[: -len("manifest.safe")].rstrip("/") for n in names
                    if n == "manifest.safe" or n.endswith("/manifest.safe")}, key=len)
    if not roots:
        raise DataError("the zip holds no manifest.safe: not a SAFE product", path=zip_path)
    return roots[0]


def _safe_rel(href: str, where: str) -> str:
    """A manifest href as a clean relative member path; refuse names that leave the product."""
    rel = PurePosixPath(href.strip())
    parts = [p for p in rel.parts if p not in (".", "")]
    if rel.is_absolute() or ".." in parts or not parts or "\\" in href:
        raise DataError(f"manifest.safe names a file outside the product ({href!r}): refused", path=where)
    return "/".join(parts)


def _stamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=UTC)
    except ValueError:
        return None


def open_grd(path: str | Path) -> GrdProduct:
    """Find and check a GRD product (folder or zip); no pixel is read.

    Raises:
        DataError: not an S1 product, not IW GRD VV+VH, manifest or a member missing, broken zip.
    """
    src = str(path)
    p = Path(src)
    if not p.exists():
        raise DataError("S1 product not found", path=src)
    zip_path: str | None = None
    inner = ""
    if p.is_file():
        if p.suffix.lower() != ".zip":
            raise DataError("an S1 product is a .SAFE folder or its .zip", path=src)
        zip_path = src
        inner = _zip_root(src)
    name = p.name[:-4] if p.name.lower().endswith(".zip") else p.name
    name = re.sub(r"\.SAFE$", "", name, flags=re.IGNORECASE)
    if inner:
        name = re.sub(r"\.SAFE$", "", PurePosixPath(inner).name, flags=re.IGNORECASE)
    where = f"{zip_path}!{_join(inner, 'manifest.safe')}" if zip_path else str(p / "manifest.safe")
    manifest = parse_xml(_read(src, zip_path, inner, "manifest.safe"), where)
    mode = (find_text(manifest, "mode") or "").upper()
    ptype = (find_text(manifest, "productType") or "").upper()
    pols = tuple(sorted({(e.text or "").strip().upper()
                         for e in find_all(manifest, "transmitterReceiverPolarisation")}))
    m = _NAME.match(name)
    if not ptype and m:
        ptype = m.group(3).upper()
    if not mode and m:
        mode = m.group(2).upper()
    resolution = m.group(4).upper().strip("_") if m else ""
    mission = (m.group(1).upper() if m else "") or "S1" + (find_text(manifest, "number") or "")
    check_kind(ptype, mode, pols, src)
    ipf = ipf_version(manifest)
    files = _members(manifest, where)
    out: dict[str, PolFiles] = {}
    for q in GRD_POLS:
        kinds = files.get(q, {})
        lack = [k for k in ("annotation", "calibration", "noise", "measurement") if k not in kinds]
        if lack:
            raise DataError(f"manifest.safe lists no {' / '.join(lack)} file for {q}: the product is "
                            "incomplete", path=where)
        out[q] = PolFiles(**kinds)
    for q in GRD_POLS:  # every member must be there before anything is written
        for kind in ("annotation", "calibration", "noise", "measurement"):
            rel = getattr(out[q], kind)
            if zip_path is None and not (p / rel).is_file():
                raise DataError(f"{kind} file {rel} of {q} is missing from the product", path=str(p / rel))
    if zip_path is not None:
        _check_zip_members(zip_path, inner, [getattr(out[q], k) for q in GRD_POLS
                                             for k in ("annotation", "calibration", "noise", "measurement")])
    start = _stamp(find_text(manifest, "startTime"))
    stop = _stamp(find_text(manifest, "stopTime"))
    return GrdProduct(name=name, source=src, zip_path=zip_path, inner_root=inner, mission=mission, mode=mode,
                      product_type=ptype, resolution=resolution, ipf_version=ipf, polarisations=pols,
                      files=out, start=start, stop=stop)


def check_kind(ptype: str, mode: str, pols: tuple[str, ...], src: str) -> None:
    """Refuse what is not an IW GRD product with VV and VH, naming ``src``."""
    if ptype != "GRD":
        raise DataError(f"a {ptype or 'non-GRD'} product: only GRD (ground-range detected) products are "
                        "supported (an SLC needs debursting and multilooking first, e.g. SNAP TOPS Deburst "
                        "+ Multilook, or download the GRD)", path=src)
    if mode != "IW":
        raise DataError(f"an {mode or '?'} mode product: only IW (Interferometric Wide swath) GRD is "
                        "supported (BigEarthNet-S1 and the csmae S1 sensor are IW VV/VH)", path=src)
    missing = [q for q in GRD_POLS if q not in pols]
    if missing:
        raise DataError(f"the product has polarisations {'/'.join(pols) or 'none'}: VV and VH are both "
                        f"needed (HH/HV products are not supported; missing {', '.join(missing)})",
                        path=src)


def ipf_version(manifest: Any) -> str:
    """The IPF version a manifest.safe names ("" when it names none)."""
    for el in find_all(manifest, "software"):
        if "IPF" in (el.get("name") or "").upper() and el.get("version"):
            return el.get("version") or ""
    return ""


def name_parts(name: str) -> dict[str, str]:
    """Mission, mode, product type and resolution from a product name (empty strings when it is not one)."""
    m = _NAME.match(name)
    if m is None:
        return {"mission": "", "mode": "", "product_type": "", "resolution": ""}
    return {"mission": m.group(1).upper(), "mode": m.group(2).upper(), "product_type": m.group(3).upper(),
            "resolution": m.group(4).upper().strip("_")}


def _members(manifest: Any, where: str) -> dict[str, dict[str, str]]:
    """{pol: {kind: member}} from the manifest's dataObjects."""
    out: dict[str, dict[str, str]] = {}
    for obj in find_all(manifest, "dataObject"):
        kind = _SCHEMAS.get(obj.get("repID") or "")
        if kind is None:
            continue
        locs = [el for el in obj.iter() if local(el.tag) == "fileLocation"]
        if not locs:
            continue
        rel = _safe_rel(locs[0].get("href") or "", where)
        m = _POL_IN_FILE.search(PurePosixPath(rel).name)
        if m is None:
            continue
        out.setdefault(m.group(1).upper(), {})[kind] = rel
    return out


def _check_zip_members(zip_path: str, inner: str, rels: list[str]) -> None:
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"not a readable zip (damaged or truncated: {e})", path=zip_path) from None
    for rel in rels:
        if _join(inner, rel) not in names:
            raise DataError(f"member {rel} is missing from the zipped product",
                            path=f"{zip_path}!{_join(inner, rel)}")
