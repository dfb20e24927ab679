"""Training on Lightning: config schema, DataModule, LightningModule, callbacks and ``fit``.

``from csmae.training import load_config, fit``; the CLI is ``csmae fit`` (docs/training.md).
Heavy modules (Lightning) are imported on first use.
"""

from __future__ import annotations

from typing import Any

from csmae.training.config import ConfigError, FitConfig, load_config

__all__ = ["ConfigError", "FitConfig", "fit", "load_config"]


def fit(cfg: FitConfig, **kwargs: Any) -> Any:
    """Train ``cfg`` into a run folder; see :func:`csmae.training.run.fit`."""
    from csmae.training.run import fit as _fit

    return _fit(cfg, **kwargs)
