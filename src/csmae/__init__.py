"""csmae: Cross-Sensor Masked Autoencoders for sensor-agnostic image retrieval in remote sensing."""

from __future__ import annotations

from typing import Any

from csmae.version import __version__

__all__ = ["__version__", "create_model", "from_pretrained", "list_models"]


def create_model(name: str, **overrides: Any) -> Any:
    """Build a registered model preset (see :func:`list_models`), e.g. ``create_model("csmae_sesd_base")``."""
    from csmae.models import create_model as _create

    return _create(name, **overrides)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered model presets (optionally filtered by a glob pattern)."""
    from csmae.models import list_models as _list

    return _list(pattern)


def from_pretrained(path: Any, **kwargs: Any) -> Any:
    """Load a model saved with ``model.save_pretrained(dir)`` (safetensors + config.json)."""
    from csmae.models import from_pretrained as _load

    return _load(path, **kwargs)
