"""The encoder side of retrieval: the model an index names, and query images turned into descriptors.

:class:`QueryEncoder` loads the model lazily (only searches by arrays/files need it), checks it is
the model that made the index (:func:`check_model_matches_index`: the sha256 of its weights
recorded in the manifest, and the descriptor size D), and embeds raw query images in the archive
descriptors' precision. :meth:`QueryEncoder.descriptors` is the single place where query tensors go
through the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.index import SearchIndex
from csmae.sensors import IMAGE_SIZE, Sensor


class QueryEncoder:
    """The model of an index, loaded on first use, and the embedding of query images.

    Args:
        index: the index the queries search (its manifest records the model and the precision).
        model_dir: a model folder; None: no model on this machine (searches by arrays fail clearly).
        model: an already loaded model (used as is, not checked).
        checked: ``model_dir`` was already checked against the index manifest.
    """

    def __init__(
        self,
        index: SearchIndex,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        model: Any = None,
        checked: bool = False,
    ):
        self.index = index
        self.model_dir = Path(model_dir) if model_dir else None
        self._model = model
        self.checked = checked

    def use_index(self, index: SearchIndex) -> None:
        """Follow a reloaded index (the model, once loaded, stays)."""
        self.index = index

    @property
    def model(self) -> Any:
        """The model, loaded (and checked against the index manifest) on first use."""
        if self._model is None:
            if self.model_dir is None:
                raise ValueError(
                    "this search needs the model: pass model_dir (the index manifest "
                    "records none that exists on this machine)"
                )
            from csmae.models import from_pretrained

            if not self.checked:
                recorded = self.index.manifest.get("model") or {}
                check_model_matches_index(self.model_dir, recorded, self.index.dim)
            self._model = from_pretrained(self.model_dir)
        return self._model

    def query_sensor(self, sensor: str) -> Sensor:
        """The model's spec (band order) of a query sensor; ValueError when the model has none."""
        model = self.model
        if sensor not in model.sensors:
            raise ValueError(f"the model has no sensor {sensor!r}; it embeds {list(model.sensors)}")
        return model.sensors[sensor]

    def embed_arrays(self, raw: np.ndarray, *, sensor: str) -> np.ndarray:
        """Descriptors (N, D) of raw images (C, 120, 120) or (N, C, 120, 120) in the model's band order."""
        spec = self.query_sensor(sensor)
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (spec.num_channels, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"a {sensor} query must be raw ({spec.num_channels}, {IMAGE_SIZE}, {IMAGE_SIZE}) in band "
                f"order {list(spec.bands)}; got shape {tuple(np.shape(raw))}"
            )
        if not np.isfinite(x).all():
            raise ValueError("the query array has NaN/inf values")
        vec = self.descriptors(x, sensor=sensor, spec=spec)
        if not np.isfinite(vec).all():  # else FAISS silently returns no neighbours
            raise ValueError(f"the model gives a non-finite descriptor for this {sensor} query; are its "
                             "values in the sensor's units (S1 dB, S2 reflectance x 10000)?")
        return vec

    def descriptors(self, raw: np.ndarray, *, sensor: str, spec: Sensor) -> np.ndarray:
        """The model's (N, D) float32 descriptors of checked raw images (N, C, 120, 120).

        The one place query tensors go through the model: normalised with the sensor's statistics,
        in the precision of the archive descriptors (so a file query of an archive image gives its
        vector).
        """
        import torch

        from csmae.models import normalize_batch

        bf16 = self.index.manifest.get("embed_precision") == "bf16"
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = self.model.embed(normalize_batch({sensor: raw}, {sensor: spec}))[sensor]
        return out.float().numpy()


def check_model_matches_index(model_dir: Path, recorded: dict[str, Any], dim: int) -> None:
    """Refuse a model that did not make the index (sha256 of model.safetensors, or D).

    Raises:
        FileNotFoundError: ``model_dir`` is not a model folder.
        ValueError: another model (sha256), or descriptors of another size than the index's.
    """
    from csmae.retrieval.artifacts import sha256_file

    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no model.safetensors)")
    want = recorded.get("sha256")
    if want:
        got = sha256_file(weights)
        if got != want:
            raise ValueError(
                f"the index was built with another model (sha256 {want[:12]}..., "
                f"{recorded.get('name')}); {model_dir} has sha256 {got[:12]}...: rebuild the index "
                "with this model or pass the right model_dir"
            )
    cfg = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").exists() else {}
    d = (cfg.get("config") or {}).get("embed_dim")
    if d is not None and int(d) != dim:
        raise ValueError(f"{model_dir} makes D={d} descriptors but the index holds D={dim}")
