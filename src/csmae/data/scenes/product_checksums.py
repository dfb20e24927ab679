"""A Sentinel product's own checksums: ``manifest.safe`` lists every data file with its checksum.

Recent S2 products record SHA3-256, S1 and older S2 products MD5 (``<checksum checksumName="MD5">``
inside each ``dataObject``'s ``byteStream``, beside the ``fileLocation href``). A file whose bytes
differ from what the product says is refused: JPEG 2000 decoders read many corrupt codestreams
without an error and give wrong pixels. Only the files a run reads are hashed; a name in the
manifest never makes anything outside the product be opened.

Used by the S2 SAFE reader and by any reader of a SAFE product (a folder, or a ``.zip`` of one).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from csmae.data.base import DataError
from csmae.data.scenes.rasters import require_regular_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.safe"
#: checksumName in manifest.safe -> hash constructor
ALGORITHMS: dict[str, Callable[[], Any]] = {"SHA3-256": hashlib.sha3_256, "MD5": hashlib.md5}
#: the largest manifest.safe read (real ones are < 1 MB)
MAX_MANIFEST_BYTES = 32 * 2**20
_BLOCK = 4 * 2**20


@dataclass(frozen=True)
class ProductChecksums:
    """What was checked against a product's ``manifest.safe``."""

    product: str  # the SAFE folder or zip
    manifest: str | None  # the manifest.safe read (None: the product has none)
    checked: dict[str, str] = field(default_factory=dict)  # member (relative) -> algorithm
    unlisted: list[str] = field(default_factory=list)  # members the manifest gives no checksum for

    def to_dict(self) -> dict[str, Any]:
        """The store manifest's entry (``checked``: whether every member matched a recorded checksum)."""
        return {"product": self.product, "manifest": self.manifest,
                "checked": bool(self.checked) and not self.unlisted,
                "files_checked": len(self.checked), "algorithms": sorted(set(self.checked.values())),
                "unlisted": self.unlisted}


def _normal(href: str) -> str | None:
    """``./GRANULE/x.jp2`` -> ``GRANULE/x.jp2``; None for a name that leaves the product."""
    h = href.strip().replace("\\", "/")
    if not h or h.startswith("/") or "://" in h:
        return None
    n = posixpath.normpath(h)
    return None if n == ".." or n.startswith("../") else n


def parse_manifest(data: bytes, where: str) -> dict[str, tuple[str, str]]:
    """``{member: (algorithm, hex digest)}`` of a manifest.safe's data objects."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DataError(f"the product's {MANIFEST} is not valid XML ({e})", path=where) from None
    out: dict[str, tuple[str, str]] = {}
    for stream in (el for el in root.iter() if el.tag.split("}")[-1] == "byteStream"):
        loc = next((c for c in stream if c.tag.split("}")[-1] == "fileLocation"), None)
        sums = [c for c in stream if c.tag.split("}")[-1] == "checksum"]
        member = _normal(loc.get("href", "")) if loc is not None else None
        if member is None or not sums:
            continue
        for s in sums:
            alg = (s.get("checksumName") or "").strip().upper()
            if alg in ALGORITHMS and s.text:
                out[member] = (alg, s.text.strip().lower())
                break
    return out


def _digest(f: IO[bytes], alg: str) -> str:
    h = ALGORITHMS[alg]()
    while block := f.read(_BLOCK):
        h.update(block)
    return str(h.hexdigest())


def _check(member: str, table: dict[str, tuple[str, str]], opener: Callable[[], IO[bytes]], shown: str,
           got: ProductChecksums) -> None:
    if member not in table:
        got.unlisted.append(member)
        return
    alg, want = table[member]
    if not shown.startswith("/vsi") and Path(shown).exists():
        require_regular_file(shown)
    with opener() as f:
        have = _digest(f, alg)
    if have != want:
        raise DataError(f"{alg} checksum mismatch: the file is corrupt or was altered since the product "
                        f"was made ({MANIFEST} records {want[:16]}..., the file has {have[:16]}...); "
                        "download it again (or pass --no-product-checksums to skip this check)", path=shown)
    got.checked[member] = alg


def verify_product_checksums(safe_root: str | os.PathLike[str], members: Iterable[str | os.PathLike[str]]
                             ) -> ProductChecksums:
    """Check ``members`` of a SAFE product against its ``manifest.safe``; DataError naming a bad file.

    Args:
        safe_root: the ``.SAFE`` folder, or a ``.zip`` holding one (``X.SAFE/manifest.safe``).
        members: the files to check: paths inside the folder (absolute or relative to it), or
            for a zip, names relative to the SAFE folder inside it.

    Returns what was checked; a product without ``manifest.safe`` checks nothing (``manifest`` None).
    """
    root = Path(safe_root)
    if root.is_file() and zipfile.is_zipfile(root):
        return _verify_zip(root, [str(m) for m in members])
    got = ProductChecksums(product=str(root), manifest=None)
    mpath = root / MANIFEST
    if mpath.is_symlink() or not mpath.is_file():
        return got
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise DataError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MB: not a Sentinel "
                        "product manifest", path=str(mpath))
    table = parse_manifest(mpath.read_bytes(), str(mpath))
    got = ProductChecksums(product=str(root), manifest=str(mpath))
    base = root.resolve()
    for m in members:
        p = Path(m) if Path(m).is_absolute() else root / m
        try:
            rel = p.resolve().relative_to(base).as_posix()
        except ValueError:
            raise DataError(f"the file is outside the product {root}", path=str(p)) from None
        _check(rel, table, lambda p=p: open(p, "rb"), str(p), got)  # type: ignore[misc]
    return got


def _verify_zip(zpath: Path, members: list[str]) -> ProductChecksums:
    with zipfile.ZipFile(zpath) as zf:
        names = [n for n in zf.namelist() if posixpath.basename(n) == MANIFEST and n.count("/") == 1]
        if not names:
            return ProductChecksums(product=str(zpath), manifest=None)
        info = zf.getinfo(names[0])
        if info.file_size > MAX_MANIFEST_BYTES:
            raise DataError(f"{names[0]} is larger than {MAX_MANIFEST_BYTES >> 20} MB", path=str(zpath))
        table = parse_manifest(zf.read(info), f"{zpath}/{names[0]}")
        top = names[0].split("/")[0]
        got = ProductChecksums(product=str(zpath), manifest=f"{zpath}/{names[0]}")
        for m in members:
            rel = _normal(m)
            if rel is None:
                raise DataError("the member name leaves the product", path=f"{zpath}/{m}")
            name = f"{top}/{rel}"
            if name not in zf.NameToInfo:
                raise DataError("no such member in the product zip", path=f"{zpath}/{name}")
            _check(rel, table, lambda name=name: zf.open(name), f"{zpath}/{name}", got)  # type: ignore[misc]
    return got


def skipped(product: str) -> dict[str, Any]:
    """The store manifest's entry when the check was turned off (``--no-product-checksums``)."""
    return {"product": product, "checked": False, "reason": "--no-product-checksums"}
