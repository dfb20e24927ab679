"""Synthetic places through time: the same ground at several dates, with known change events.

A series archive holds ``n`` places, each acquired by both sensors on every date of
:attr:`Series.dates` (S1 a day or two off S2, as in BigEarthNet). Rows are (place, date) pairs,
place-major. What varies between the dates of one place, and is **not** change:

- season: vegetation classes' red-edge/NIR reflectance follows a phenology curve of the day of year
  (crops with a larger swing than natural vegetation) and their visible reflectance falls as they
  green up; their VH backscatter rises with it (more biomass); land backscatter follows a wet
  spring / dry late summer soil-moisture cycle (about 2 dB) plus a random offset per date;
- illumination and sensor noise (S2), speckle (S1, fresh every date);
- clouds: on a date S2 is cloudy with probability ``cloud_prob``; a smooth cloud field then hides
  60-100% of the patch (bright, flat spectrum). S1 sees through clouds.

What is change: in a known set of places (``change_fraction`` of them), at a known date between
``change_start`` and ``change_end``, the patch's largest land-cover class is replaced by another
class that both sensors tell apart from it (another S1 backscatter group); labels follow the new
cover. The ground truth (events, cloudy S2 ids with their cloud fraction) goes into the store's
manifest (``source.synthetic_series``) or the v1 folder's ``synth.json``.

Everything is a function of the seed, with one random stream per place and per (place, date), so a
place's ground (cover, texture) is the same on every date.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

from csmae.data import synth_scene as scene
from csmae.labels import LABELS_19
from csmae.sensors import S1

#: classes whose spectrum follows the phenology curve (vegetation)
_VEGETATION_GROUPS = ("agri", "forest", "shrub", "grass", "wetland")
_VEG = np.array([g in _VEGETATION_GROUPS for g in scene.S1_GROUP_OF])
_CROP = np.array([g == "agri" for g in scene.S1_GROUP_OF])
_WATER = np.array([g == "water" for g in scene.S1_GROUP_OF])
#: bands (S2_SPECTRUM_BANDS order) that rise with leaf area: red edge + NIR
_PHENO_BANDS = np.array([b in ("B05", "B06", "B07", "B08", "B8A", "B09") for b in scene.S2_SPECTRUM_BANDS])
#: bands that fall as vegetation greens up (chlorophyll absorption): the visible
_VISIBLE = np.array([b in ("B01", "B02", "B03", "B04") for b in scene.S2_SPECTRUM_BANDS])
#: a cloud's DN per band (bright and flat in the visible/NIR, darker in the SWIR)
_CLOUD_DN = np.array([7200, 7400, 7300, 7500, 7400, 7300, 7300, 7200, 7100, 3000, 4300, 3100], np.float32)


@dataclass(frozen=True, kw_only=True)
class Series:
    """The time axis of a synthetic series archive (see the module docstring).

    Attributes:
        dates: S2 acquisition days (ISO), in order; S1 is -2..+2 days off each.
        change_fraction: fraction of places with a change event.
        change_start, change_end: the event dates are drawn uniformly in [start, end] (ISO days).
        cloud_prob: probability that S2 is cloudy on a date.
    """

    dates: tuple[str, ...] = ("2018-04-08", "2018-05-03", "2018-05-28", "2018-08-06", "2018-08-31",
                              "2018-09-25")
    change_fraction: float = 0.3
    change_start: str = "2018-06-05"
    change_end: str = "2018-07-25"
    cloud_prob: float = 0.25

    def __post_init__(self) -> None:
        days = [date.fromisoformat(d) for d in self.dates]
        if len(days) < 2 or days != sorted(set(days)):
            raise ValueError(f"a series needs at least 2 distinct dates in order, got {list(self.dates)}")
        if not 0 <= self.change_fraction <= 1 or not 0 <= self.cloud_prob <= 1:
            raise ValueError("change_fraction and cloud_prob must be in [0, 1]")
        if date.fromisoformat(self.change_end) < date.fromisoformat(self.change_start):
            raise ValueError(f"change_end {self.change_end} is before change_start {self.change_start}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def phenology(day: date, *, crop: bool = False) -> float:
    """Leaf-area factor of a day: natural vegetation 0.7 (mid-winter) to 1.15 (early July); crops
    0.5 to 1.2, peaking in late July (sown in spring)."""
    doy = day.timetuple().tm_yday
    if crop:
        return float(0.85 + 0.35 * np.cos(2 * np.pi * (doy - 205) / 365.25))
    return float(0.925 + 0.225 * np.cos(2 * np.pi * (doy - 185) / 365.25))


def wetness(day: date) -> float:
    """Soil-moisture anomaly in [-1, 1]: wet in late winter / spring, dry in late summer."""
    return float(np.cos(2 * np.pi * (day.timetuple().tm_yday - 60) / 365.25))


def _season_factor(cover: np.ndarray, day: date) -> np.ndarray:
    """(H, W) leaf-area factor of each pixel's class on ``day`` (1 for non-vegetation)."""
    per_class = np.where(_CROP, phenology(day, crop=True), np.where(_VEG, phenology(day), 1.0))
    return per_class[cover].astype(np.float32)


@dataclass
class _Ground:
    """What stays the same at a place: cover (before/after its event), per-class jitter, texture."""

    cover: np.ndarray  # (120, 120) class indices before the event
    after: np.ndarray | None  # cover after the event, None for a place without one
    event: date | None
    jitter: np.ndarray  # (19,) spectral jitter per class
    texture: np.ndarray  # (120, 120)
    relief: np.ndarray  # (120, 120) S1 incidence/relief field in dB


def _ground(rng: np.random.Generator, changed: bool, event: date | None) -> tuple[_Ground, dict[str, Any]]:
    cover = scene.land_cover(rng)
    jitter = rng.uniform(0.9, 1.1, size=len(LABELS_19)).astype(np.float32)
    texture = 1 + 0.08 * scene.smooth_noise(rng, 12) + 0.04 * scene.smooth_noise(rng, 40)
    relief = rng.normal(0, 0.8) + 1.2 * scene.smooth_noise(rng, 8)
    info: dict[str, Any] = {}
    after = None
    if changed:
        frac = np.bincount(cover.reshape(-1), minlength=len(LABELS_19))
        old = int(np.argmax(frac))
        options = [c for c in range(len(LABELS_19)) if scene.S1_GROUP_OF[c] != scene.S1_GROUP_OF[old]]
        p = scene.FREQ[options] / scene.FREQ[options].sum()
        new = int(rng.choice(options, p=p))
        after = np.where(cover == old, new, cover)
        info = {"from": LABELS_19[old], "to": LABELS_19[new], "fraction": float(frac[old] / cover.size)}
    return _Ground(cover, after, event, jitter, texture.astype(np.float32), relief.astype(np.float32)), info


def _s2(rng: np.random.Generator, g: _Ground, cover: np.ndarray, day: date, cloud: float
        ) -> dict[str, np.ndarray]:
    base = scene.SPECTRA[cover].transpose(2, 0, 1)  # (12, H, W)
    f = _season_factor(cover, day)[None]  # (1, H, W)
    pheno = np.where(_PHENO_BANDS[:, None, None], f, np.where(_VISIBLE[:, None, None], 1 / np.sqrt(f), 1.0))
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=(12, 1, 1)).astype(np.float32)
    img = base * pheno * gain * (g.jitter[cover] * g.texture)[None]
    if cloud > 0:
        field = scene.smooth_noise(rng, 4)
        thr = np.quantile(field, 1 - cloud)
        alpha = np.clip((field - thr) / 0.15 + 0.5, 0, 1)[None]  # soft cloud edges
        img = img * (1 - alpha) + _CLOUD_DN[:, None, None] * (0.9 + 0.2 * rng.random()) * alpha
    out: dict[str, np.ndarray] = {}
    for factor, bands in scene.S2_NATIVE_GROUPS.items():
        idx = [scene.S2_SPECTRUM_BANDS.index(b) for b in bands]
        arr = img[idx] if factor == 1 else scene.block_mean(img[idx], factor)
        arr = arr + rng.standard_normal(size=arr.shape, dtype=np.float32) * (0.02 * arr + 15)
        for b, a in zip(bands, np.clip(arr, 1, 20000), strict=True):
            out[b] = np.rint(a).astype(np.uint16)
    return out


def _s1(rng: np.random.Generator, g: _Ground, cover: np.ndarray, day: date) -> dict[str, np.ndarray]:
    mean_db = scene.S1_MEAN_DB[cover].transpose(2, 0, 1).copy()  # (2, H, W)
    mean_db[1] += 3.0 * (_season_factor(cover, day) - 1.0)  # VH: biomass (0 off vegetation)
    moisture = np.where(_WATER[cover], 0.0, 1.0 * wetness(day) + rng.normal(0, 0.6))  # soil moisture today
    mean_db = mean_db + moisture[None] + g.relief[None]
    power = 10 ** (mean_db / 10)
    looks = 4.4
    speckle = rng.standard_gamma(looks, size=power.shape, dtype=np.float32) / looks
    arr = (10 * np.log10(power * speckle + 1e-6)).astype(np.float32)
    return {b: arr[S1.index(b)] for b in S1.bands}


def series_names(rng: np.random.Generator, n: int, series: Series
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one name dict per (place, date) row, one truth dict per place), place-major.

    Name dicts have the keys of :func:`csmae.data.synth._pair_names` plus ``place_index`` and
    ``date_index``; places are grouped into tiles of 64 like the plain archive. S2 names (the ids)
    are unique: each tile has its own hour and minute (up to 180 tiles).
    """
    from csmae.data.synth import _SEASON, COUNTRIES, PATCHES_PER_TILE

    days = [date.fromisoformat(d) for d in series.dates]
    lo, hi = date.fromisoformat(series.change_start), date.fromisoformat(series.change_end)
    rows: list[dict[str, Any]] = []
    places: list[dict[str, Any]] = []
    tile_i = 0
    while len(places) < n:
        zone, band = int(rng.integers(29, 36)), "TUVW"[int(rng.integers(4))]
        tile = f"{zone}{band}{chr(65 + tile_i % 26)}{chr(65 + tile_i // 26 % 26)}"
        country = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        cells = rng.choice(100 * 100, size=min(PATCHES_PER_TILE, n - len(places)), replace=False)
        if tile_i >= 180:
            raise ValueError(f"a series archive holds at most {180 * PATCHES_PER_TILE} places, asked {n}")
        times = [(9 + tile_i // 60, tile_i % 60, int(rng.integers(0, 60)), int(rng.integers(-2, 3)),
                  int(rng.integers(4, 18))) for _ in days]
        for c in cells:
            h, v = int(c // 100), int(c % 100)
            changed = bool(rng.random() < series.change_fraction)
            event = lo + timedelta(days=int(rng.integers(0, (hi - lo).days + 1))) if changed else None
            places.append({"tile": tile, "h": h, "v": v, "changed": changed,
                           "event": None if event is None else event.isoformat()})
            for j, (day, (hour, minute, sec, off, s1_hour)) in enumerate(zip(days, times, strict=True)):
                s1_day = day + timedelta(days=off)
                s2_time, s1_time = f"{hour}{minute:02d}{sec:02d}", f"{s1_hour:02d}{minute:02d}{sec:02d}"
                rows.append({
                    "s2": f"S2A_MSIL2A_{day:%Y%m%d}T{s2_time}_{h}_{v}",
                    "s1": f"S1A_IW_GRDH_1SDV_{s1_day:%Y%m%d}T{s1_time}_{tile}_{h}_{v}",
                    "country": country, "season": _SEASON[day.month],
                    "s2_date": f"{day:%Y-%m-%d} {hour:02d}:{minute:02d}:{sec:02d}",
                    "s1_date": f"{s1_day:%Y-%m-%d}T{s1_time[:2]}:{s1_time[2:4]}:{s1_time[4:]}",
                    "tile": tile, "place_index": len(places) - 1, "date_index": j,
                })
        tile_i += 1
    return rows, places


def series_generator(rows: list[dict[str, Any]], places: list[dict[str, Any]], series: Series, *, seed: int,
                     min_fraction: float) -> tuple[Callable[[], dict[str, Any]], dict[str, Any]]:
    """A ``gen()`` yielding the pairs of ``rows`` in order, and the ground truth it fills.

    The truth, filled as rows are generated: ``places`` (the ``places`` dicts, changed ones with the
    replaced class ``from``, its replacement ``to`` and the ``fraction`` of the patch it covered)
    and ``cloud_s2`` (S2 id -> cloud fraction of that image).
    """
    truth: dict[str, Any] = {"places": places, "cloud_s2": {}}
    grounds: dict[int, _Ground] = {}

    def pairs() -> Iterator[dict[str, Any]]:
        for nm in rows:
            p = int(nm["place_index"])
            if p not in grounds:
                grounds.clear()  # rows are place-major: one ground in memory
                info = places[p]
                event = None if info["event"] is None else date.fromisoformat(info["event"])
                g, ev = _ground(np.random.default_rng([seed, 10, p]), info["changed"], event)
                grounds[p] = g
                info.update(ev)
            g = grounds[p]
            rng = np.random.default_rng([seed, 11, p, int(nm["date_index"])])
            day = date.fromisoformat(nm["s2_date"][:10])
            cover = g.after if g.after is not None and g.event is not None and day >= g.event else g.cover
            cloud = float(rng.uniform(0.6, 1.0)) if rng.random() < series.cloud_prob else 0.0
            if cloud:
                truth["cloud_s2"][nm["s2"]] = round(cloud, 3)
            s2 = _s2(rng, g, cover, day, cloud)
            s1_day = date.fromisoformat(nm["s1_date"][:10])
            changed_s1 = g.after is not None and g.event is not None and s1_day >= g.event
            s1_cover = g.after if changed_s1 and g.after is not None else g.cover
            yield {"s1": _s1(rng, g, s1_cover, s1_day), "s2": s2,
                   "labels": scene.labels_of(cover, min_fraction), "cover": cover}

    it = pairs()
    return (lambda: next(it)), truth


def series_archive(rng: np.random.Generator, n: int, series: Series, *, seed: int, min_fraction: float,
                   split_fractions: Any
                   ) -> tuple[list[dict[str, Any]], list[str], Callable[[], dict[str, Any]], dict[str, Any]]:
    """(row names with footprints, row splits, ``gen()``, ground truth) of a series archive of ``n`` places.

    All dates of a place share its footprint (so its place key) and its split.
    """
    from csmae.data.synth import _splits
    from csmae.geo.place import places_of
    from csmae.geo.synthetic import place

    rows, places = series_names(rng, n, series)
    place(rows, seed)
    place_split = _splits(rng, len(places), split_fractions)
    first = {int(nm["place_index"]): nm for nm in reversed(rows)}
    for p, key in enumerate(places_of([first[p]["geometry"] for p in range(len(places))])):
        places[p]["place"] = key
    splits = [place_split[int(nm["place_index"])] for nm in rows]
    gen, truth = series_generator(rows, places, series, seed=seed, min_fraction=min_fraction)
    truth["series"] = series.to_dict()
    return rows, splits, gen, truth
