"""From raw samples to model batches: stacking and per-band normalisation with the Sensor specs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from csmae.sensors import Sensor


def _normalize_one(x: np.ndarray | Tensor, sensor: Sensor) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] != sensor.num_channels:
        raise ValueError(
            f"{sensor.name}: expected raw (N, {sensor.num_channels}, H, W) or ({sensor.num_channels}, H, W) "
            f"in band "
            f"order {list(sensor.bands)}, got shape {tuple(t.shape)}"
        )
    t = t.to(torch.float32)
    mean, std = _stats(sensor, t.device)
    return (t - mean) / std


def _stats(sensor: Sensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """The sensor's per-band mean and std as float32 (1, C, 1, 1) tensors."""
    mean = torch.tensor(sensor.mean, dtype=torch.float32, device=device)[None, :, None, None]
    std = torch.tensor(sensor.std, dtype=torch.float32, device=device)[None, :, None, None]
    return mean, std


def normalize_(x: Tensor, sensor: Sensor) -> Tensor:
    """In-place version of the per-band normalisation of a float32 (N, C, H, W) tensor (same values)."""
    mean, std = _stats(sensor, x.device)
    return x.sub_(mean).div_(std)


def normalize_batch(raw: Mapping[str, Any], sensors: Mapping[str, Sensor]) -> dict[str, Tensor]:
    """Raw {sensor: (N, C, H, W) or (C, H, W)} in the sensors' band order -> normalised float32 tensors.

    Keys that are not sensors of ``sensors`` (``"labels"``, ``"id"``, ...) are ignored. An optional
    ``raw["bands"] = {sensor: [band, ...]}`` is checked against the expected order.
    """
    for s, bands in (raw.get("bands") or {}).items():
        if s in sensors and tuple(bands) != tuple(sensors[s].bands):
            raise ValueError(
                f"{s}: band order {list(bands)} does not match the expected {list(sensors[s].bands)}"
            )
    return {s: _normalize_one(raw[s], spec) for s, spec in sensors.items() if s in raw}


def batch_from_samples(
    samples: Sequence[Mapping[str, Any]], sensors: Mapping[str, Sensor]
) -> dict[str, Tensor]:
    """Stack sample dicts (csmae.data.base) into a normalised batch of the sensors all samples hold."""
    if not samples:
        raise ValueError("batch_from_samples needs at least one sample")
    present = [s for s in sensors if all(s in smp for smp in samples)]
    raw = {s: np.stack([np.asarray(smp[s], dtype=np.float32) for smp in samples]) for s in present}
    return normalize_batch(raw, {s: sensors[s] for s in present})
