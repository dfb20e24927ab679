"""Typed model configuration: sizes, the variant spec, masking, pooling and loss weights as data.

A :class:`ModelConfig` is all it takes to rebuild a model (it is saved as ``config.json`` next to
the weights). Variants are :class:`VariantSpec` rows in :data:`VARIANTS`, not code paths.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from csmae.sensors import DEFAULT_SENSORS, Sensor, get_sensor

#: Decoder layouts. ``per_target``: one decoder (body + pixel head) per target sensor, fed by every
#: source sensor. ``shared``: one decoder body for all targets, a pixel head per target.
#: ``none``: no decoder (a contrastive dual encoder).
DECODER_SHARING = ("per_target", "shared", "none")

#: Pooling of the final encoder tokens into one descriptor per sensor.
POOLINGS = ("avg", "token")

#: Attention kernels (timm Attention.fused_attn); "auto" picks by device and precision.
ATTENTION_MODES = ("auto", "fused", "math")

#: Mask strategies across sensors (see csmae.masking.MASK_STRATEGIES).
MASK_STRATEGY_NAMES = ("random", "identical", "disjoint")


@dataclass(frozen=True)
class VariantSpec:
    """Where the encoder is shared and whether the decoder is.

    Attributes:
        private_depth: ViT blocks per sensor (weights not shared).
        shared_depth: ViT blocks whose weights are shared by all sensors (applied to each separately).
        decoder_sharing: one of :data:`DECODER_SHARING`.
    """

    private_depth: int
    shared_depth: int
    decoder_sharing: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The paper's four variants (method.md section 2).
VARIANTS: dict[str, VariantSpec] = {
    "sesd": VariantSpec(private_depth=10, shared_depth=2, decoder_sharing="per_target"),
    "secd": VariantSpec(private_depth=10, shared_depth=2, decoder_sharing="shared"),
    "cesd": VariantSpec(private_depth=12, shared_depth=0, decoder_sharing="per_target"),
    "cecd": VariantSpec(private_depth=12, shared_depth=0, decoder_sharing="shared"),
}

#: ViT sizes: (embed_dim, num_heads).
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (192, 3),
    "small": (384, 6),
    "base": (768, 12),
    "large": (1024, 16),
}


@dataclass
class ModelConfig:
    """Everything that defines a CrossSensorMAE.

    Loss terms are enabled by a weight > 0 (``w_umr``, ``w_cmr``, ``w_mim``, ``w_mde``).
    ``bands`` maps a sensor name to an explicit band order (default: the sensor's default bands);
    ``create_model`` also accepts ``<sensor>_bands=...`` (e.g. ``s2_bands="all"``).
    ``input_transpose`` swaps H and W of every input image inside the model (imported reference
    checkpoints were trained on transposed images; users still pass normally oriented images).
    """

    name: str = "custom"
    variant: str = "custom"
    sensors: tuple[str, ...] = DEFAULT_SENSORS
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    img_size: int = 120
    patch_size: int = 15
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    private_depth: int = 10
    shared_depth: int = 2
    norm_eps: float = 1e-6
    decoder_sharing: str = "per_target"
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_norm_eps: float = 1e-5  # the reference decoder uses nn.LayerNorm's default
    pooling: str = "avg"
    mask_strategy: str = "random"
    mask_ratio: float = 0.5
    norm_pix_loss: bool = False
    w_umr: float = 1.0
    w_cmr: float = 1.0
    w_mim: float = 1.0
    w_mde: float = 0.0
    mim_tau: float = 0.5
    input_transpose: bool = False
    attention: str = "auto"  # "auto" | "fused" | "math": timm's SDPA path or its explicit one

    def __post_init__(self) -> None:
        self.sensors = tuple(self.sensors)
        self.bands = {k: tuple(v) if not isinstance(v, str) else v for k, v in (self.bands or {}).items()}
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def spec(self) -> VariantSpec:
        return VariantSpec(self.private_depth, self.shared_depth, self.decoder_sharing)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def uses_decoder(self) -> bool:
        return self.decoder_sharing != "none" and (self.w_umr > 0 or self.w_cmr > 0)

    @property
    def uses_features(self) -> bool:
        """Whether a loss term reads the pooled descriptors."""
        return self.w_mim > 0 or self.w_mde > 0

    def sensor_specs(self) -> dict[str, Sensor]:
        """The Sensor specs (band order and statistics) this config asks for."""
        return {s: get_sensor(s, bands=self.bands.get(s)) for s in self.sensors}

    def reconstruction_pairs(self) -> list[tuple[str, str]]:
        """(source, target) pairs the enabled reconstruction terms need."""
        if not self.uses_decoder:
            return []
        pairs = []
        for src in self.sensors:
            for tgt in self.sensors:
                if (src == tgt and self.w_umr > 0) or (src != tgt and self.w_cmr > 0):
                    pairs.append((src, tgt))
        return pairs

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the field and what was expected."""
        checks: list[tuple[bool, str]] = [
            (
                len(self.sensors) >= 1 and len(set(self.sensors)) == len(self.sensors),
                f"sensors must be distinct names, got {self.sensors}",
            ),
            (
                self.img_size % self.patch_size == 0,
                f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}",
            ),
            (
                self.embed_dim % self.num_heads == 0,
                f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}",
            ),
            (self.embed_dim % 4 == 0, f"embed_dim {self.embed_dim} must be a multiple of 4 (2-D sin-cos)"),
            (
                self.decoder_embed_dim % self.decoder_num_heads == 0,
                f"decoder_embed_dim {self.decoder_embed_dim} must be divisible by decoder_num_heads "
                f"{self.decoder_num_heads}",
            ),
            (
                self.decoder_embed_dim % 4 == 0,
                f"decoder_embed_dim {self.decoder_embed_dim} must be a multiple of 4 (2-D sin-cos)",
            ),
            (
                self.private_depth >= 0
                and self.shared_depth >= 0
                and self.private_depth + self.shared_depth > 0,
                f"private_depth ({self.private_depth}) + shared_depth ({self.shared_depth}) must be > 0",
            ),
            (
                self.decoder_sharing in DECODER_SHARING,
                f"decoder_sharing {self.decoder_sharing!r} not in {DECODER_SHARING}",
            ),
            (self.pooling in POOLINGS, f"pooling {self.pooling!r} not in {POOLINGS}"),
            (self.attention in ATTENTION_MODES, f"attention {self.attention!r} not in {ATTENTION_MODES}"),
            (
                self.mask_strategy in MASK_STRATEGY_NAMES,
                f"mask_strategy {self.mask_strategy!r} not in {MASK_STRATEGY_NAMES}",
            ),
            (0.0 <= self.mask_ratio < 1.0, f"mask_ratio must be in [0, 1), got {self.mask_ratio}"),
            (self.mim_tau > 0, f"mim_tau must be > 0, got {self.mim_tau}"),
            (min(self.w_umr, self.w_cmr, self.w_mim, self.w_mde) >= 0, "loss weights must be >= 0"),
            (
                not (self.uses_features and len(self.sensors) < 2),
                f"w_mim/w_mde need two sensors, the model has {self.sensors}",
            ),
            (
                not (self.w_umr > 0 or self.w_cmr > 0) or self.decoder_sharing != "none",
                "w_umr/w_cmr > 0 need a decoder (decoder_sharing 'per_target' or 'shared')",
            ),
            (
                self.w_umr + self.w_cmr + self.w_mim + self.w_mde > 0,
                "at least one loss weight (w_umr, w_cmr, w_mim, w_mde) must be > 0",
            ),
            (
                set(self.bands) <= set(self.sensors),
                f"bands given for unknown sensor(s) {sorted(set(self.bands) - set(self.sensors))}; "
                f"sensors: {self.sensors}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid model config: {msg}")

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sensors"] = list(self.sensors)
        d["bands"] = {k: (list(v) if not isinstance(v, str) else v) for k, v in self.bands.items()}
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {cls.field_names()}")
        return cls(**d)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with ``overrides`` applied (``<sensor>_bands`` keys go into ``bands``)."""
        d = self.to_dict()
        bands = dict(d["bands"])
        valid = set(self.field_names())
        band_keys = {f"{s}_bands": s for s in d["sensors"]}
        for key in ("sensors",):
            if key in overrides:
                d[key] = list(overrides[key])
                band_keys = {f"{s}_bands": s for s in d["sensors"]}
        unknown = sorted(k for k in overrides if k not in valid and k not in band_keys)
        if unknown:
            raise ValueError(
                f"unknown model override(s) {unknown}; valid keys: {sorted(valid | set(band_keys))}"
            )
        for k, v in overrides.items():
            if k in band_keys:
                if v is None:
                    bands.pop(band_keys[k], None)
                else:
                    bands[band_keys[k]] = v if isinstance(v, str) else list(v)
            elif k != "sensors":
                d[k] = v
        if "bands" not in overrides:
            d["bands"] = bands
        d["bands"] = {s: b for s, b in d["bands"].items() if s in d["sensors"]}
        return ModelConfig.from_dict(d)
