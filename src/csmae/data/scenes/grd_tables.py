"""The tables of a GRD product's XMLs: image size and geolocation grid, calibration LUTs, noise vectors.

Parsed once per polarisation into numpy arrays (no pixel is read). Layout, from the Sentinel-1
Product Specification:

- annotation ``imageAnnotation/imageInformation``: ``numberOfSamples``, ``numberOfLines``;
  ``geolocationGrid``: points with line, pixel, latitude, longitude, height, incidenceAngle.
- calibration: ``calibrationVector`` per line with ``pixel`` and ``sigmaNought`` / ``betaNought`` /
  ``gamma`` / ``dn`` lists of the same length.
- noise (IPF >= 2.9): ``noiseRangeVector`` (line, pixel list, ``noiseRangeLut``) and
  ``noiseAzimuthVector`` blocks (swath, first/last azimuth line, first/last range sample, ``line``
  list, ``noiseAzimuthLut``); before IPF 2.9: ``noiseVector`` (line, pixel, ``noiseLut``), range only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.data.scenes.grd_safe import GrdProduct, find_all, local
from csmae.errors import DataError

CALIBRATIONS = ("sigma0", "gamma0", "beta0")
_LUT_TAG = {"sigma0": "sigmaNought", "gamma0": "gamma", "beta0": "betaNought"}


@dataclass(frozen=True)
class VectorTable:
    """Vectors given at some lines, each over its own pixel list: ``values[i]`` at ``pixels[i]``."""

    lines: np.ndarray  # (n,) int, increasing
    pixels: tuple[np.ndarray, ...]  # n x (m_i,) int, increasing
    values: tuple[np.ndarray, ...]  # n x (m_i,) float64


@dataclass(frozen=True)
class AzimuthBlock:
    """One ``noiseAzimuthVector``: a gain over lines, valid on a block of lines x samples."""

    swath: str
    first_line: int
    last_line: int
    first_sample: int
    last_sample: int
    lines: np.ndarray
    lut: np.ndarray


@dataclass(frozen=True)
class NoiseTables:
    range: VectorTable
    azimuth: tuple[AzimuthBlock, ...] = ()

    @property
    def has_azimuth(self) -> bool:
        return bool(self.azimuth)


@dataclass(frozen=True)
class Annotation:
    """Image size and the geolocation grid of one polarisation."""

    samples: int
    lines: int
    pixel_spacing: tuple[float, float]  # (range, azimuth) metres
    gcps: np.ndarray  # (k, 6): line, pixel, latitude, longitude, height, incidence (deg)
    polarisation: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_incidence(self) -> float:
        return float(np.mean(self.gcps[:, 5]))


def _floats(el: Any, where: str, tag: str) -> np.ndarray:
    for c in el:
        if local(c.tag) == tag:
            try:
                return np.array((c.text or "").split(), dtype=np.float64)
            except ValueError:
                raise DataError(f"<{tag}> holds a non-number", path=where) from None
    raise DataError(f"a <{local(el.tag)}> has no <{tag}>", path=where)


def _int(el: Any, tag: str, where: str) -> int:
    for c in el:
        if local(c.tag) == tag:
            try:
                return int(float((c.text or "").strip()))
            except ValueError:
                break
    raise DataError(f"a <{local(el.tag)}> has no integer <{tag}>", path=where)


def _table(vectors: list[Any], lut: str, where: str) -> VectorTable:
    if not vectors:
        raise DataError(f"no vectors with <{lut}>", path=where)
    lines, pixels, values = [], [], []
    for v in vectors:
        px = _floats(v, where, "pixel").astype(np.int64)
        val = _floats(v, where, lut)
        if px.size != val.size or px.size == 0:
            raise DataError(f"a vector at line {_int(v, 'line', where)} has {px.size} pixels and "
                            f"{val.size} {lut} values", path=where)
        if (np.diff(px) <= 0).any():
            raise DataError(f"the pixel list of the vector at line {_int(v, 'line', where)} is not "
                            "increasing", path=where)
        lines.append(_int(v, "line", where))
        pixels.append(px)
        values.append(val)
    ln = np.array(lines, dtype=np.int64)
    if (np.diff(ln) <= 0).any():
        raise DataError("the vectors' lines are not increasing", path=where)
    return VectorTable(lines=ln, pixels=tuple(pixels), values=tuple(values))


def read_annotation(product: GrdProduct, pol: str) -> Annotation:
    rel = product.files[pol].annotation
    where = product.member(rel)
    root = product.parse_member(rel)
    info = find_all(root, "imageInformation")
    if not info:
        raise DataError("no <imageInformation> in the annotation", path=where)
    samples, lines = _int(info[0], "numberOfSamples", where), _int(info[0], "numberOfLines", where)
    spacing = []
    for tag in ("rangePixelSpacing", "azimuthPixelSpacing"):
        got = [float(c.text) for c in info[0] if local(c.tag) == tag and c.text]
        spacing.append(got[0] if got else float("nan"))
    pts = find_all(root, "geolocationGridPoint")
    rows = []
    for pt in pts:
        vals = {local(c.tag): c.text for c in pt}
        try:
            rows.append([float(vals[k]) for k in ("line", "pixel", "latitude", "longitude", "height",
                                                    "incidenceAngle")])
        except (KeyError, TypeError, ValueError):
            raise DataError("a <geolocationGridPoint> lacks line/pixel/latitude/longitude/height/"
                            "incidenceAngle", path=where) from None
    if len(rows) < 10:
        raise DataError(f"the geolocation grid has {len(rows)} points (at least 10 are needed to "
                        "geocode with a 3rd-order polynomial or a thin-plate spline)", path=where)
    gcps = np.array(rows, dtype=np.float64)
    return Annotation(samples=samples, lines=lines, pixel_spacing=(spacing[0], spacing[1]), gcps=gcps,
                      polarisation=pol)


def read_calibration(product: GrdProduct, pol: str, kind: str) -> VectorTable:
    """The calibration LUT ``kind`` (sigma0 / gamma0 / beta0) of one polarisation."""
    if kind not in CALIBRATIONS:
        raise ValueError(f"--s1-calibration must be one of {CALIBRATIONS}, got {kind!r}")
    rel = product.files[pol].calibration
    where = product.member(rel)
    root = product.parse_member(rel)
    table = _table(find_all(root, "calibrationVector"), _LUT_TAG[kind], where)
    if any((v <= 0).any() or not np.isfinite(v).all() for v in table.values):
        raise DataError(f"the {_LUT_TAG[kind]} LUT has non-positive or non-finite values", path=where)
    return table


def read_noise(product: GrdProduct, pol: str) -> NoiseTables:
    """Range (and, IPF >= 2.9, azimuth) thermal noise vectors of one polarisation."""
    rel = product.files[pol].noise
    where = product.member(rel)
    root = product.parse_member(rel)
    rv = find_all(root, "noiseRangeVector")
    if rv:
        rng = _table(rv, "noiseRangeLut", where)
    else:
        legacy = find_all(root, "noiseVector")
        if not legacy:
            raise DataError("no <noiseRangeVector> (IPF >= 2.9) nor <noiseVector> (older IPF)", path=where)
        rng = _table(legacy, "noiseLut", where)
    blocks = []
    for v in find_all(root, "noiseAzimuthVector"):
        sw = [c.text for c in v if local(c.tag) == "swath"]
        ln = _floats(v, where, "line").astype(np.int64)
        lut = _floats(v, where, "noiseAzimuthLut")
        if ln.size != lut.size or ln.size == 0:
            raise DataError(f"a noiseAzimuthVector has {ln.size} lines and {lut.size} values", path=where)
        blocks.append(AzimuthBlock(swath=(sw[0] or "") if sw else "",
                                   first_line=_int(v, "firstAzimuthLine", where),
                                   last_line=_int(v, "lastAzimuthLine", where),
                                   first_sample=_int(v, "firstRangeSample", where),
                                   last_sample=_int(v, "lastRangeSample", where), lines=ln, lut=lut))
    return NoiseTables(range=rng, azimuth=tuple(blocks))
