"""Sensor specifications: the single place that knows band names, order, units and statistics.

Sensors are data. A third sensor is a new :class:`Sensor` plus a reader; nothing else in the
package hard-codes a channel index. Everything that needs a channel looks it up by band name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: Per-band (mean, std) on the BigEarthNet v1 train split (data-formats.md).
BAND_STATS: dict[str, tuple[float, float]] = {
    "VV": (-12.619993741972035, 5.115911777546365),
    "VH": (-19.29044597721542, 5.464428464912864),
    "B01": (340.76769064, 554.81258967),
    "B02": (429.9430203, 572.41639287),
    "B03": (614.21682446, 582.87945694),
    "B04": (590.23569706, 675.88746967),
    "B05": (950.68368468, 729.89827633),
    "B06": (1792.46290469, 1096.01480586),
    "B07": (2075.46795189, 1273.45393088),
    "B08": (2218.94553375, 1365.45589904),
    "B8A": (2266.46036911, 1356.13789355),
    "B09": (2246.0605464, 1302.3292881),
    "B11": (1594.42694882, 1079.19066363),
    "B12": (1009.32729131, 818.86747235),
}

#: Native ground sampling distance in metres of every band we know.
BAND_RESOLUTION_M: dict[str, int] = {
    "VV": 10, "VH": 10,
    "B02": 10, "B03": 10, "B04": 10, "B08": 10,
    "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20,
    "B01": 60, "B09": 60,
}

#: Side length in pixels of a 1.2 km BigEarthNet patch at each resolution.
PATCH_SIDE_AT_RESOLUTION: dict[int, int] = {10: 120, 20: 60, 60: 20}

IMAGE_SIZE = 120


@dataclass(frozen=True)
class Sensor:
    """One imaging sensor as data.

    Attributes:
        name: short key used everywhere (``"s1"``, ``"s2"``).
        bands: ordered band names; channel ``i`` of every array of this sensor is ``bands[i]``.
        dtype: on-disk dtype of the raw bands (``"uint16"`` for S2, ``"float32"`` for S1).
        units: physical units of raw values.
        mean, std: per-band normalisation statistics, in ``bands`` order.
        display: band names used for a 3-channel picture (true colour for S2, VV/VH/ratio for S1).
        description: a human-readable line.
        scene_grid_priority: tiling whole scenes (``csmae tile``), the present sensor with the
            highest priority defines the patch grid; the others are warped onto it.
        scene_resampling: the GDAL resampling that warps this sensor's scenes onto another
            sensor's patch grid.
        plausible_range: (low, high) raw values a band of this sensor can hold; a query image
            outside it has wrong units or is corrupt. None: no check.
        quantity: what the raw values measure, in words (for messages about implausible values).
        badge_colour: colour of this sensor's badge in result grids (matplotlib colour string).
        skippable_query_bands: band files a query may carry besides the model's bands (all bands of
            the product, e.g. S2 B01, B09), skipped when the model does not use them; any other
            foreign band is refused.
    """

    name: str
    bands: tuple[str, ...]
    dtype: str
    units: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    display: tuple[str, ...]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # -- query checks and display (knowledge about the sensor, not part of its identity) --
    plausible_range: tuple[float, float] | None = field(default=None, compare=False)
    quantity: str = field(default="", compare=False)
    badge_colour: str = field(default="#444444", compare=False)
    skippable_query_bands: tuple[str, ...] = field(default=(), compare=False)
    # -- scene tiling --
    scene_grid_priority: int = field(default=0, compare=False)
    scene_resampling: str = field(default="bilinear", compare=False)

    def __post_init__(self) -> None:
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"sensor {self.name!r}: duplicate band names in {self.bands}")
        if not (len(self.mean) == len(self.std) == len(self.bands)):
            raise ValueError(f"sensor {self.name!r}: mean/std must have one value per band")
        unknown = [b for b in self.display if b not in self.bands]
        if unknown:
            raise ValueError(f"sensor {self.name!r}: display bands {unknown} not in {self.bands}")

    @property
    def num_channels(self) -> int:
        return len(self.bands)

    def index(self, band: str) -> int:
        """Channel index of ``band``; raises a clear error for an unknown band."""
        try:
            return self.bands.index(band)
        except ValueError:
            raise KeyError(f"sensor {self.name!r} has no band {band!r}; bands: {list(self.bands)}") from None

    def resolution_m(self, band: str) -> int:
        return BAND_RESOLUTION_M[band]

    def native_side(self, band: str) -> int:
        """Native pixel side of ``band`` in a BigEarthNet patch (120, 60 or 20)."""
        return PATCH_SIDE_AT_RESOLUTION[BAND_RESOLUTION_M[band]]

    def with_bands(self, bands: tuple[str, ...] | list[str]) -> Sensor:
        """The same sensor with another band order or subset (statistics follow the bands)."""
        bands = tuple(bands)
        unknown = [b for b in bands if b not in BAND_STATS]
        if unknown:
            raise KeyError(f"unknown band(s) {unknown} for sensor {self.name!r}")
        display = tuple(b for b in self.display if b in bands)
        return replace(
            self,
            bands=bands,
            mean=tuple(BAND_STATS[b][0] for b in bands),
            std=tuple(BAND_STATS[b][1] for b in bands),
            display=display,
        )

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Standardise raw values ``(..., C, H, W)`` with this sensor's per-band statistics."""
        if x.shape[-3] != self.num_channels:
            raise ValueError(
                f"sensor {self.name!r} expects {self.num_channels} channels {list(self.bands)}, "
                f"got an array of shape {tuple(x.shape)}"
            )
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return ((x.astype(np.float32, copy=False) - mean) / std).astype(np.float32, copy=False)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (x * std + mean).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bands": list(self.bands),
            "dtype": self.dtype,
            "units": self.units,
            "mean": list(self.mean),
            "std": list(self.std),
            "display": list(self.display),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensor:
        """The spec of :meth:`to_dict`; query checks and display come from the built-in sensor of
        the same name (they are not stored in artefacts)."""
        known = SENSORS.get(d["name"])
        knowledge: dict[str, Any] = {} if known is None else {f: getattr(known, f) for f in KNOWLEDGE_FIELDS}
        return cls(
            name=d["name"],
            bands=tuple(d["bands"]),
            dtype=d["dtype"],
            units=d["units"],
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            display=tuple(d["display"]),
            description=d.get("description", ""),
            **knowledge,
        )


#: Sensor fields that are knowledge about the sensor (query checks, display, scene tiling), not part of
#: an artefact's spec: :meth:`Sensor.from_dict` takes them from the built-in sensor of the same name.
KNOWLEDGE_FIELDS = ("plausible_range", "quantity", "badge_colour", "skippable_query_bands",
                    "scene_grid_priority", "scene_resampling")


def _make(name: str, bands: tuple[str, ...], **kw: Any) -> Sensor:
    return Sensor(
        name=name,
        bands=bands,
        mean=tuple(BAND_STATS[b][0] for b in bands),
        std=tuple(BAND_STATS[b][1] for b in bands),
        **kw,
    )


S1_BANDS = ("VV", "VH")
S2_BANDS_10 = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
S2_BANDS_12 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

#: Query checks and display. Raw values a band can hold: S1 backscatter in dB (measured values lie
#: within about -50..+40 dB), S2 reflectance x 10000 as in L2A products (uint16; down to -1
#: reflectance for products with the radiometric offset applied). S2 query files may carry all 12
#: L2A bands.
_S1_KNOWLEDGE: dict[str, Any] = {
    "plausible_range": (-100.0, 100.0), "quantity": "backscatter in dB", "badge_colour": "#d95f02",
    "scene_grid_priority": 1, "scene_resampling": "bilinear"}
_S2_KNOWLEDGE: dict[str, Any] = {
    "plausible_range": (-10_000.0, 65_535.0),
    "quantity": "reflectance scaled by 10000 (L2A digital numbers)", "badge_colour": "#1b9e77",
    "skippable_query_bands": S2_BANDS_12, "scene_grid_priority": 2}

S1 = _make(
    "s1", S1_BANDS, dtype="float32", units="dB", display=("VV", "VH"),
    description="Sentinel-1 GRD IW, VV and VH backscatter in dB, 10 m", **_S1_KNOWLEDGE,
)
S2 = _make(
    "s2", S2_BANDS_10, dtype="uint16", units="reflectance x 10000", display=("B04", "B03", "B02"),
    description="Sentinel-2 L2A, 10 bands at 10 m and 20 m (20 m upsampled to 10 m)", **_S2_KNOWLEDGE,
)
S2_12 = _make(
    "s2", S2_BANDS_12, dtype="uint16", units="reflectance x 10000", display=("B04", "B03", "B02"),
    description="Sentinel-2 L2A, all 12 L2A bands (20 m and 60 m upsampled to 10 m)", **_S2_KNOWLEDGE,
)

#: Reference-implementation channel orders (data-formats.md), for importing its checkpoints.
REFERENCE_S2_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B11", "B12", "B8A")
REFERENCE_S1_BANDS = ("VH", "VV")

SENSORS: dict[str, Sensor] = {"s1": S1, "s2": S2}

#: The sensors a model preset pairs by default (the uni-modal MAE presets: one per sensor).
DEFAULT_SENSORS: tuple[str, ...] = ("s1", "s2")


def get_sensor(name: str, *, bands: str | tuple[str, ...] | list[str] | None = None) -> Sensor:
    """Look up a sensor by name (``"s1"``/``"s2"``) with an optional band set.

    Args:
        name: ``"s1"`` or ``"s2"``.
        bands: ``None`` for the default set, ``"all"``/``"12"`` for all 12 S2 bands, or an explicit
            ordered list of band names.
    """
    key = name.lower()
    if key not in SENSORS:
        raise KeyError(f"unknown sensor {name!r}; known sensors: {sorted(SENSORS)}")
    sensor = SENSORS[key]
    if bands is None:
        return sensor
    if isinstance(bands, str):
        if key == "s2" and bands in ("all", "12"):
            return S2_12
        if bands in ("default", "10"):
            return sensor
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    return sensor.with_bands(tuple(bands))


def display_rgb(x: np.ndarray, sensor: Sensor) -> np.ndarray:
    """A (H, W, 3) float image in [0, 1] for showing raw (un-normalised) values of one sensor.

    S2: true colour (B04, B03, B02) with a 2-98 percentile stretch. S1: false colour
    (VV, VH, VV - VH in dB) with fixed dB ranges, the convention of the field.
    """
    if sensor.name == "s1":
        vv = x[sensor.index("VV")]
        vh = x[sensor.index("VH")]
        r = np.clip((vv + 25.0) / 25.0, 0, 1)
        g = np.clip((vh + 32.0) / 27.0, 0, 1)
        b = np.clip((vv - vh) / 15.0, 0, 1)
        return np.stack([r, g, b], axis=-1).astype(np.float32)
    chans = [x[sensor.index(b)].astype(np.float32) for b in sensor.display]
    rgb = np.stack(chans, axis=-1)
    finite = rgb[np.isfinite(rgb)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((rgb - lo) / (hi - lo), 0, 1).astype(np.float32)
