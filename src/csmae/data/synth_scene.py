"""Procedural scenes for the synthetic archive: land-cover maps, S2 spectra, S1 backscatter.

Everything here is pure numpy and deterministic given a ``numpy.random.Generator``. The physics is
deliberately simple but keeps the structure that matters for cross-sensor retrieval:

- land cover: warped Voronoi regions over 1-5 of the 19 classes (class frequencies roughly as in
  BigEarthNet), so patches have spatially coherent regions and several labels;
- S2: a per-class reflectance spectrum (DN = reflectance x 10000) for the 12 L2A bands (vegetation
  has a red edge and high NIR, water is dark beyond the visible, sand is bright), per-patch
  illumination, a smooth texture field and sensor noise; 20 m and 60 m bands are produced by
  block-averaging to their native 60x60 and 20x20;
- S1: per-class VV/VH backscatter in dB with multiplicative speckle (gamma, 4.4 looks) in linear
  power; classes S1 cannot tell apart share statistics, as in reality: all agricultural classes,
  the three forest types, the two water classes, urban and industrial.
"""

from __future__ import annotations

import numpy as np

from csmae.labels import LABELS_19

SIZE = 120
S2_SPECTRUM_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

# class: (relative frequency, S2 spectrum in S2_SPECTRUM_BANDS order, S1 group)
_CLASSES: dict[str, tuple[float, tuple[int, ...], str]] = {
    "Agro-forestry areas": (2, (300, 380, 620, 520, 950, 2000, 2450, 2650, 2750, 900, 1900, 1050), "agri"),
    "Arable land": (12, (480, 600, 850, 950, 1300, 2000, 2300, 2500, 2600, 850, 2600, 1800), "agri"),
    "Beaches, dunes, sands": (1, (1300, 1400, 1700, 1900, 2100, 2300, 2400, 2500, 2550, 900, 3200, 2700),
                              "sand"),
    "Broad-leaved forest": (9, (200, 250, 500, 280, 800, 2400, 3200, 3500, 3600, 1100, 1700, 750), "forest"),
    "Coastal wetlands": (1, (300, 350, 520, 450, 650, 1000, 1200, 1300, 1350, 450, 900, 550), "wetland"),
    "Complex cultivation patterns": (6, (420, 500, 780, 780, 1200, 2100, 2450, 2650, 2750, 880, 2400, 1600),
                                     "agri"),
    "Coniferous forest": (12, (170, 200, 380, 220, 600, 1500, 1900, 2100, 2200, 700, 1100, 500), "forest"),
    "Industrial or commercial units": (2, (1000, 1100, 1200, 1250, 1350, 1500, 1600, 1700, 1750, 600, 2200,
                                           2000), "urban"),
    "Inland waters": (3, (380, 400, 500, 300, 250, 200, 180, 150, 140, 60, 80, 50), "water"),
    "Inland wetlands": (2, (260, 300, 500, 400, 700, 1400, 1700, 1800, 1850, 600, 1100, 600), "wetland"),
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        6, (340, 400, 680, 600, 1050, 2200, 2650, 2850, 2950, 950, 2100, 1200), "agri"),
    "Marine waters": (3, (330, 350, 400, 250, 180, 140, 120, 100, 90, 40, 50, 30), "water"),
    "Mixed forest": (10, (190, 230, 440, 250, 700, 1950, 2550, 2800, 2900, 900, 1400, 620), "forest"),
    "Moors, heathland and sclerophyllous vegetation": (2, (350, 400, 600, 600, 950, 1600, 1900, 2100, 2200,
                                                           720, 2100, 1300), "grass"),
    "Natural grassland and sparsely vegetated areas": (2, (450, 550, 800, 850, 1200, 1900, 2200, 2400, 2500,
                                                           800, 2700, 1900), "grass"),
    "Pastures": (8, (300, 350, 650, 450, 1000, 2500, 3100, 3300, 3400, 1050, 2000, 1000), "agri"),
    "Permanent crops": (3, (380, 450, 700, 700, 1100, 2100, 2500, 2700, 2800, 900, 2200, 1400), "agri"),
    "Transitional woodland, shrub": (8, (280, 330, 560, 450, 900, 1900, 2300, 2500, 2600, 820, 1900, 1000),
                                     "shrub"),
    "Urban fabric": (6, (800, 900, 1000, 1050, 1200, 1450, 1600, 1750, 1800, 600, 2000, 1700), "urban"),
}
# S1 group: (VV dB, VH dB) mean backscatter
S1_GROUPS: dict[str, tuple[float, float]] = {
    "agri": (-11.0, -18.0), "forest": (-7.5, -13.0), "shrub": (-9.0, -15.5), "grass": (-13.0, -21.0),
    "urban": (-3.5, -10.5), "water": (-22.0, -28.5), "sand": (-17.0, -25.0), "wetland": (-15.0, -21.5),
}

FREQ = np.array([_CLASSES[c][0] for c in LABELS_19], dtype=np.float64)
FREQ /= FREQ.sum()
SPECTRA = np.array([_CLASSES[c][1] for c in LABELS_19], dtype=np.float32)  # (19, 12)
S1_MEAN_DB = np.array([S1_GROUPS[_CLASSES[c][2]] for c in LABELS_19], dtype=np.float32)  # (19, 2)
S1_GROUP_OF = tuple(_CLASSES[c][2] for c in LABELS_19)


def smooth_noise(rng: np.random.Generator, cells: int, size: int = SIZE) -> np.ndarray:
    """A smooth random field in about [-1, 1]: bilinear upsampling of a (cells+1)^2 grid."""
    grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (size, cells+1)
    return (rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]).astype(np.float32)


#: block-averaging factor from 10 m -> native bands at that factor
S2_NATIVE_GROUPS = {1: ("B02", "B03", "B04", "B08"), 2: ("B05", "B06", "B07", "B8A", "B11", "B12"),
                    6: ("B01", "B09")}

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def land_cover(rng: np.random.Generator) -> np.ndarray:
    """(120, 120) int class map (indices into LABELS_19) with 1-5 coherent regions."""
    m = int(min(5, 1 + rng.poisson(1.6)))
    classes = rng.choice(len(LABELS_19), size=m, replace=False, p=FREQ)
    k = m + int(rng.integers(0, 4))
    seeds = rng.uniform(0, SIZE, size=(k, 2)).astype(np.float32)
    owner = np.concatenate([classes, rng.choice(classes, size=k - m)])
    wy = _YY + 18 * smooth_noise(rng, 3)
    wx = _XX + 18 * smooth_noise(rng, 3)
    d = (wy[None] - seeds[:, 0, None, None]) ** 2 + (wx[None] - seeds[:, 1, None, None]) ** 2  # (k, H, W)
    return owner[np.argmin(d, axis=0)]


def labels_of(cover: np.ndarray, min_fraction: float) -> np.ndarray:
    """(19,) bool: classes covering at least ``min_fraction`` of the patch (always the largest)."""
    frac = np.bincount(cover.reshape(-1), minlength=len(LABELS_19)) / cover.size
    out = frac >= min_fraction
    out[np.argmax(frac)] = True
    return out


def s2_image(rng: np.random.Generator, cover: np.ndarray) -> dict[str, np.ndarray]:
    """Reflectance DN per band of S2_SPECTRUM_BANDS at native size (120, 60 or 20 px), float32."""
    base = SPECTRA[cover].transpose(2, 0, 1)  # (12, H, W)
    # per-patch illumination / phenology, per-class jitter of the spectrum, smooth texture
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=(12, 1, 1)).astype(np.float32)
    jitter = rng.uniform(0.9, 1.1, size=len(LABELS_19)).astype(np.float32)[cover]
    texture = 1 + 0.08 * smooth_noise(rng, 12) + 0.04 * smooth_noise(rng, 40)
    img = base * gain * (jitter * texture)[None]
    out: dict[str, np.ndarray] = {}
    for factor, bands in S2_NATIVE_GROUPS.items():
        idx = [S2_SPECTRUM_BANDS.index(b) for b in bands]
        arr = img[idx] if factor == 1 else block_mean(img[idx], factor)
        arr = arr + rng.standard_normal(size=arr.shape, dtype=np.float32) * (0.02 * arr + 15)  # sensor noise
        for b, a in zip(bands, np.clip(arr, 1, 20000), strict=True):
            out[b] = a
    return out


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """(C, H, W) -> (C, H/f, W/f) block averages."""
    c, h, w = img.shape
    return img.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def s1_image(rng: np.random.Generator, cover: np.ndarray) -> np.ndarray:
    """(2, 120, 120) float32 (VV, VH) backscatter in dB with multiplicative speckle."""
    mean_db = S1_MEAN_DB[cover].transpose(2, 0, 1)  # (2, H, W)
    mean_db = mean_db + rng.normal(0, 0.8) + 1.2 * smooth_noise(rng, 8)[None]  # incidence, moisture
    power = 10 ** (mean_db / 10)
    looks = 4.4
    speckle = rng.standard_gamma(looks, size=power.shape, dtype=np.float32) / looks
    return (10 * np.log10(power * speckle + 1e-6)).astype(np.float32)
