"""GRD radiometry on a window of DN: calibration, thermal noise removal, border noise, nodata.

ESA's Sentinel-1 Level-1 calibration note: ``sigma0 = (DN^2 - eta) / A^2``, with ``A`` the
``sigmaNought`` LUT (``gamma`` for gamma0, ``betaNought`` for beta0) and the thermal noise power
``eta = noiseRange(line, pixel) x noiseAzimuth(line, pixel)``, all interpolated bilinearly to the
pixel's (line, pixel) from the vectors of the product's XMLs (:mod:`csmae.data.scenes.grd_tables`).
Before IPF 2.9 the noise is the range vectors alone. Outside the vectors' span the nearest vector /
value is used (clamped), as the tables cover the image in practice.

Nodata (NaN in the float32 output): DN 0 (outside the swath, and the border noise that the IPF
zeroes since IPF 2.90), and every pixel whose noise-removed power is <= 0 (no signal, not a tiny
backscatter). Border noise of products processed before IPF 2.90 (non-zero noise along the near and
far range edges): from each image edge, within ``BORDER_LIMIT`` columns, the contiguous run of
columns whose noise-removed power ``DN^2 - eta`` is <= ``BORDER_THRESHOLD`` is nodata (the rule of
SNAP's Remove-GRD-Border-Noise, ``borderLimit`` 500 and ``trimThreshold`` 0.5).

All functions take a window: DN rows/columns ``[l0, l0 + h) x [p0, p0 + w)`` of the full image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from csmae.data.scenes.grd_tables import NoiseTables, VectorTable

#: columns from each image edge searched for border noise (pre-IPF 2.90 products)
BORDER_LIMIT = 500
#: noise-removed power (DN^2) at or below which an edge column is border noise
BORDER_THRESHOLD = 0.5
#: first IPF version whose GRD border noise is zeroed by the processor
IPF_BORDER_REMOVED = (2, 90)
#: first IPF version with azimuth noise vectors
IPF_AZIMUTH_NOISE = (2, 90)


def interp_table(table: VectorTable, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a vector table at every (row, col): (len(rows), len(cols)) float32.

    Each vector is interpolated along its own pixel list first (so irregular pixel lists work), then
    the two vectors around each row are blended linearly; values beyond the ends are clamped.
    """
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    lines = table.lines.astype(np.float64)
    n = len(lines)
    if n == 1:
        one = np.interp(cols, table.pixels[0], table.values[0]).astype(np.float32)
        return np.broadcast_to(one, (len(rows), len(cols))).copy()
    idx = np.clip(np.searchsorted(lines, rows, side="right") - 1, 0, n - 2)
    w = np.clip((rows - lines[idx]) / (lines[idx + 1] - lines[idx]), 0.0, 1.0).astype(np.float32)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    per = np.stack([np.interp(cols, table.pixels[i], table.values[i]) for i in range(lo, hi + 1)]
                   ).astype(np.float32)  # (vectors used, len(cols))
    a = per[idx - lo]
    b = per[idx + 1 - lo]
    a *= (1.0 - w)[:, None]
    b *= w[:, None]
    a += b
    return a


def azimuth_gain(noise: NoiseTables, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """The azimuth noise factor at every (row, col) (1 outside every block); None without blocks."""
    if not noise.azimuth:
        return None
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    out = np.ones((len(rows), len(cols)), dtype=np.float32)
    for b in noise.azimuth:
        rsel = np.flatnonzero((rows >= b.first_line) & (rows <= b.last_line))
        csel = np.flatnonzero((cols >= b.first_sample) & (cols <= b.last_sample))
        if not rsel.size or not csel.size:
            continue
        g = np.interp(rows[rsel].astype(np.float64), b.lines.astype(np.float64), b.lut).astype(np.float32)
        out[rsel[0]:rsel[-1] + 1, csel[0]:csel[-1] + 1] = g[:, None]  # blocks are rectangles
    return out


def noise_power(noise: NoiseTables, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Thermal noise power eta (DN^2 units) at every (row, col), float32."""
    eta = interp_table(noise.range, rows, cols)
    az = azimuth_gain(noise, rows, cols)
    if az is not None:
        eta *= az
    return eta


def border_noise(power: np.ndarray, p0: int, samples: int, *, limit: int = BORDER_LIMIT,
                 threshold: float = BORDER_THRESHOLD) -> np.ndarray:
    """Mask (True = border noise) of a window of noise-removed power ``DN^2 - eta``.

    A window that reaches into the first (last) ``limit`` columns of the image must start at
    column 0 (end at the last column): the caller widens its window to the edge zone.
    """
    h, w = power.shape
    mask = np.zeros((h, w), dtype=bool)
    if p0 < limit:
        if p0 != 0:
            raise ValueError("a window reaching into the near-range edge zone must start at column 0")
        zone = power[:, :min(limit, w)] <= threshold
        run = np.cumprod(zone, axis=1, dtype=np.uint8).astype(bool)  # contiguous from the edge
        mask[:, :zone.shape[1]] = run
    if p0 + w > samples - limit:
        if p0 + w != samples:
            raise ValueError("a window reaching into the far-range edge zone must end at the last column")
        k = min(limit, w)
        zone = power[:, w - k:][:, ::-1] <= threshold
        run = np.cumprod(zone, axis=1, dtype=np.uint8).astype(bool)[:, ::-1]
        mask[:, w - k:] |= run
    return mask


@dataclass(frozen=True)
class RadiometrySteps:
    """Which steps run on a product (recorded in the store manifest)."""

    calibration: str  # sigma0 | gamma0 | beta0
    thermal_noise: str  # "range+azimuth" | "range" | "off"
    border_noise: str  # how border noise is handled

    def to_dict(self) -> dict[str, str]:
        return {"calibration": self.calibration, "thermal_noise": self.thermal_noise,
                "border_noise": self.border_noise}


def steps_for(ipf: tuple[int, ...], calibration: str, noise: NoiseTables | None) -> RadiometrySteps:
    if noise is None:
        tn = "off"
    else:
        tn = "range+azimuth" if noise.has_azimuth else "range"
    if ipf and ipf < IPF_BORDER_REMOVED:
        bn = (f"edge trim: within {BORDER_LIMIT} columns of the near/far edge, the contiguous run with "
              f"DN^2 - noise <= {BORDER_THRESHOLD} (SNAP Remove-GRD-Border-Noise rule); DN 0 = nodata")
    else:
        bn = "removed by the IPF (>= 2.90): DN 0 = nodata"
    return RadiometrySteps(calibration=calibration, thermal_noise=tn, border_noise=bn)


def calibrate_window(dn: np.ndarray, l0: int, p0: int, *, lut: VectorTable, noise: NoiseTables | None,
                     samples: int, trim_border: bool, seconds: dict[str, float] | None = None) -> np.ndarray:
    """uint16 DN window -> float32 calibrated linear backscatter, NaN = nodata.

    Args:
        dn: (h, w) DN of image rows ``l0..`` and columns ``p0..``.
        lut: the calibration LUT (sigmaNought / gamma / betaNought).
        noise: thermal noise tables; None to skip noise removal.
        samples: image width (for the border zones).
        trim_border: apply the edge trim of pre-IPF 2.90 products (:func:`border_noise`).
        seconds: adds the time of the noise and calibration steps under "noise" / "calibration".
    """
    sec = seconds if seconds is not None else {}
    h, w = dn.shape
    rows = np.arange(l0, l0 + h)
    cols = np.arange(p0, p0 + w)
    t0 = time.perf_counter()
    power = dn.astype(np.float32)
    np.square(power, out=power)
    t1 = time.perf_counter()
    if noise is not None:
        power -= noise_power(noise, rows, cols)
    bad = (dn == 0) | ~(power > 0)
    if trim_border:
        bad |= border_noise(power, p0, samples)
    t2 = time.perf_counter()
    a = interp_table(lut, rows, cols)
    np.square(a, out=a)
    power /= a
    power[bad] = np.nan
    t3 = time.perf_counter()
    sec["noise"] = sec.get("noise", 0.0) + t2 - t1
    sec["calibration"] = sec.get("calibration", 0.0) + (t1 - t0) + (t3 - t2)
    return power
