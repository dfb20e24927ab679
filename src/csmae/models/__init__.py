"""Models: CrossSensorMAE (four variants, uni-modal MAEs, dual encoder), registry, save/load, import.

Public API::

    create_model(name, **overrides), list_models(pattern=None), from_pretrained(dir),
    import_reference(ckpt, args_yaml), normalize_batch(raw, sensors), batch_from_samples(samples, sensors),
    CrossSensorMAE, ModelConfig, TrainOutput
"""

from __future__ import annotations

from csmae.models.batch import batch_from_samples, normalize_batch
from csmae.models.config import VARIANTS, ModelConfig, VariantSpec
from csmae.models.csmae import CrossSensorMAE, TrainOutput
from csmae.models.io import from_pretrained
from csmae.models.reference import import_reference
from csmae.models.registry import create_model, get_config, list_models

__all__ = [
    "VARIANTS",
    "CrossSensorMAE",
    "ModelConfig",
    "TrainOutput",
    "VariantSpec",
    "batch_from_samples",
    "create_model",
    "from_pretrained",
    "get_config",
    "import_reference",
    "list_models",
    "normalize_batch",
]
