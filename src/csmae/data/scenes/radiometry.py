"""Radiometry: Sentinel-2 DN to the BigEarthNet convention, Sentinel-1 backscatter to dB.

Sentinel-2 L2A. Reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE. BigEarthNet (all
acquired before processing baseline 04.00) has no offset, so its DN = reflectance x 10000; products
of PB 04.00 and later (and the reprocessed collection) add an offset of -1000. The offset is read
from ``MTD_MSIL2A.xml`` (or a STAC item's ``raster:bands`` scale/offset), never guessed from the
date. The models were trained on the pre-2022 DN, so every valid pixel becomes
``round((DN * scale + offset) * 10000)`` clamped to [1, 65535], and DN 0 (nodata) stays 0: what
Google Earth Engine's ``S2_SR_HARMONIZED`` does. For a product without offset this is the identity.

Sentinel-1. BigEarthNet-S1 is dB. Linear power is converted with ``10 * log10``; zeros, negative
values, NaN and the declared nodata are nodata. Resampling is done in linear power (averaging dB
would be biased), so dB input is brought to linear first and back to dB after the warp.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csmae.data.base import DataError

log = logging.getLogger(__name__)

#: BigEarthNet DN per unit reflectance.
BEN_QUANTIFICATION = 10000.0
#: dB given to S1 nodata pixels and the floor of valid ones (linear power 1e-5).
S1_DB_FLOOR = -50.0
_LIN_FLOOR = 10 ** (S1_DB_FLOOR / 10)


@dataclass(frozen=True)
class S2Radiometry:
    """Reflectance = DN * scale + offset (per band); ``source`` says where the numbers came from."""

    scale: float = 1.0 / BEN_QUANTIFICATION
    offset: float = 0.0
    source: str = "default (no offset metadata: pre-PB04.00 convention)"

    @property
    def is_identity(self) -> bool:
        return self.offset == 0.0 and abs(self.scale * BEN_QUANTIFICATION - 1.0) <= 1e-12

    def to_dict(self) -> dict[str, object]:
        return {"scale": self.scale, "offset": self.offset, "source": self.source}


def band_name(physical: str) -> str:
    """``"B2"`` / ``"B02"`` / ``"B8A"`` -> the two-digit form csmae uses (``"B02"``, ``"B8A"``)."""
    p = physical.strip().upper()
    if p.startswith("B") and p[1:].isdigit():
        return f"B{int(p[1:]):02d}"
    return p


def read_mtd_msil2a(path: str | Path) -> dict[str, S2Radiometry]:
    """Per band (``"B02"``...), the radiometry declared by a ``MTD_MSIL2A.xml``.

    The offsets are listed by ``band_id`` (0..12), mapped to band names through
    ``Spectral_Information_List``; no ``BOA_ADD_OFFSET_VALUES_LIST`` means offset 0.
    """
    p = str(path)
    try:
        root = ET.parse(p).getroot()
    except (OSError, ET.ParseError) as e:
        raise DataError(f"cannot read the product metadata ({e})", path=p) from None

    def find_all(tag: str) -> list[ET.Element]:
        return [el for el in root.iter() if el.tag.split("}")[-1] == tag]

    quant = find_all("BOA_QUANTIFICATION_VALUE")
    q = float(quant[0].text or BEN_QUANTIFICATION) if quant else BEN_QUANTIFICATION
    names: dict[str, str] = {}
    for el in find_all("Spectral_Information"):
        bid, phys = el.get("bandId"), el.get("physicalBand")
        if bid is not None and phys:
            names[bid] = band_name(phys)
    offsets: dict[str, float] = {}
    for el in find_all("BOA_ADD_OFFSET"):
        bid = el.get("band_id")
        if bid is None or el.text is None:
            continue
        band = names.get(bid)
        if band is None:
            raise DataError(f"BOA_ADD_OFFSET for band_id {bid} has no Spectral_Information entry", path=p)
        offsets[band] = float(el.text)
    baseline = find_all("PROCESSING_BASELINE")
    pb = baseline[0].text if baseline else "?"
    bands = set(names.values()) | set(offsets)
    src = f"{Path(p).name} (processing baseline {pb})"
    return {b: S2Radiometry(scale=1.0 / q, offset=offsets.get(b, 0.0) / q, source=src) for b in bands}


def s2_to_ben_dn(dn: np.ndarray, rad: S2Radiometry) -> np.ndarray:
    """uint16 DN of any baseline -> uint16 DN of the BigEarthNet convention (0 stays nodata)."""
    if rad.is_identity:
        return dn
    valid = dn != 0
    q = rad.scale * BEN_QUANTIFICATION
    add = rad.offset * BEN_QUANTIFICATION
    if abs(q - 1.0) <= 1e-12 and float(add).is_integer():
        v = dn.astype(np.int32) + int(add)  # the common case (-1000): exact integer arithmetic
    else:
        v = np.rint(dn.astype(np.float64) * q + add)
    out = np.clip(v, 1, 65535).astype(np.uint16)
    out[~valid] = 0
    return out


def s1_to_linear(x: np.ndarray, *, units: str, nodata: float | None) -> np.ndarray:
    """Backscatter in ``units`` ("linear" power or "db") -> float32 linear power, NaN where nodata."""
    a = x.astype(np.float32, copy=True)
    bad = ~np.isfinite(a)
    if nodata is not None and not np.isnan(nodata):
        bad |= a == nodata
    if units == "db":
        a[bad] = S1_DB_FLOOR
        lin = np.power(np.float32(10.0), a / np.float32(10.0), dtype=np.float32)
    elif units == "linear":
        bad |= a <= 0
        lin = a
    else:
        raise ValueError(f"S1 units must be 'linear' or 'db', got {units!r}")
    lin[bad] = np.nan
    return lin


def linear_to_db(lin: np.ndarray) -> np.ndarray:
    """Linear power (NaN = nodata) -> float32 dB, floored at ``S1_DB_FLOOR`` (nodata gets the floor)."""
    db = 10.0 * np.log10(np.fmax(lin, np.float32(_LIN_FLOOR)))
    return np.maximum(db, np.float32(S1_DB_FLOOR)).astype(np.float32)  # the floor exactly, not -50.000004
