"""One registry of model presets: ``create_model(name, **overrides)`` and ``list_models()``.

Presets (method.md sections 2 and 6):
- ``csmae_{sesd,secd,cesd,cecd}_{tiny,small,base,large}``: the four paper variants.
- ``mae_s1_{size}``, ``mae_s2_{size}``: plain uni-modal MAEs (one sensor, UMR only).
- ``dual_encoder_{size}``: contrastive-only dual encoder (MIM only, no decoder), 10 private + 2 shared blocks.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from csmae.models.config import SIZES, VARIANTS, ModelConfig
from csmae.sensors import DEFAULT_SENSORS

_PRESETS: dict[str, dict[str, Any]] = {}


def register(name: str, **fields: Any) -> None:
    """Register a preset: ModelConfig field values (validated on creation)."""
    if name in _PRESETS:
        raise ValueError(f"model preset {name!r} is already registered")
    _PRESETS[name] = {"name": name, **fields}


def _register_defaults() -> None:
    for size, (dim, heads) in SIZES.items():
        sizes = {"embed_dim": dim, "num_heads": heads}
        for variant, spec in VARIANTS.items():
            register(f"csmae_{variant}_{size}", variant=variant, **spec.to_dict(), **sizes)
        for sensor in DEFAULT_SENSORS:
            register(
                f"mae_{sensor}_{size}",
                variant="mae",
                sensors=(sensor,),
                private_depth=0,
                shared_depth=12,
                decoder_sharing="per_target",
                w_umr=1.0,
                w_cmr=0.0,
                w_mim=0.0,
                w_mde=0.0,
                **sizes,
            )
        register(
            f"dual_encoder_{size}",
            variant="dual_encoder",
            private_depth=10,
            shared_depth=2,
            decoder_sharing="none",
            w_umr=0.0,
            w_cmr=0.0,
            w_mim=1.0,
            w_mde=0.0,
            **sizes,
        )


_register_defaults()


def list_models(pattern: str | None = None) -> list[str]:
    """Registered preset names, sorted; optionally filtered by a glob ``pattern`` (e.g. ``"*_base"``)."""
    names = sorted(_PRESETS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """ModelConfig of preset ``name`` with ``overrides`` (ModelConfig fields or ``<sensor>_bands``)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    base = ModelConfig(**_PRESETS[name])
    return base.replace(**overrides) if overrides else base


def create_model(name: str, **overrides: Any):
    """Build preset ``name`` with ``overrides``, e.g. ``create_model("csmae_sesd_base", mask_ratio=0.75)``.

    Raises:
        KeyError: unknown preset (the message lists the registered ones).
        ValueError: an unknown override key (the message lists valid keys) or an invalid value.
    """
    from csmae.models.csmae import CrossSensorMAE

    return CrossSensorMAE(get_config(name, **overrides))
