"""Raw, compact batches -> model inputs, on whatever device the raw arrays are on.

The host path (:class:`csmae.training.datamodule.BatchDataset`, :mod:`csmae.retrieval.embed`)
upsamples the 20 m (and 60 m) S2 bands, converts to float32, normalises and flips on the CPU, then
ships float32 (B, C, 120, 120) tensors: 2.5x the bytes of the stored native records, and CPU work
that a GPU does in microseconds. The device path ships the records as stored (uint16 S2 at native
size, float32 S1) and runs :func:`assemble` after the transfer. Its output is bit-for-bit the host
path's on the CPU device (same ``F.interpolate`` bicubic, ``align_corners=True``, on the same
float32 values; same per-band ``(x - mean) / std``; flips are exact), tested in
tests/models/test_device_batch.py.

The flip decisions are an input (a (B, 2) bool tensor: horizontal, vertical), so whoever draws
them (the batch's seed today, a per-sample generator tomorrow) plugs in unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from csmae.sensors import IMAGE_SIZE, Sensor


@dataclass(frozen=True)
class RawGroup:
    """One array of a raw batch: some bands of one sensor at one side length.

    Attributes:
        key: key of the array in the raw batch (``"s2_20m"``, or the sensor name).
        sensor: the sensor whose channels it fills.
        channels: model channels (positions in the sensor's band order) of its bands, in its order.
        side: pixel side of the array (120, or 60 / 20 for native 20 m / 60 m bands).
    """

    key: str
    sensor: str
    channels: tuple[int, ...]
    side: int


def dense_layout(sensors: Mapping[str, Sensor]) -> tuple[RawGroup, ...]:
    """One full-size array per sensor, already in the model's band order (any dataset)."""
    return tuple(RawGroup(s, s, tuple(range(spec.num_channels)), IMAGE_SIZE) for s, spec in sensors.items())


def store_layout(dataset: Any, sensors: Mapping[str, Sensor]) -> tuple[RawGroup, ...] | None:
    """The compact arrays of a dataset with ``get_raw_batch`` (a prepared store), in model channels.

    None when the dataset has no raw batches or a sensor's stored bands are not exactly the model's
    bands in some order (then :func:`dense_layout` and the host's band selection apply).
    """
    if not hasattr(dataset, "raw_groups"):
        return None
    groups = []
    for key, sensor, channels, side in dataset.raw_groups():
        if sensor not in sensors:
            continue
        have = list(dataset.sensors[sensor].bands)
        want = list(sensors[sensor].bands)
        if sorted(have) != sorted(want):
            return None
        groups.append(RawGroup(key, sensor, tuple(want.index(have[c]) for c in channels), side))
    covered = {s: sorted(c for g in groups if g.sensor == s for c in g.channels) for s in sensors}
    if any(covered[s] != list(range(spec.num_channels)) for s, spec in sensors.items()):
        return None
    return tuple(groups)


def assemble(
    raw: Mapping[str, Tensor],
    layout: Sequence[RawGroup],
    sensors: Mapping[str, Sensor],
    *,
    flips: Tensor | None = None,
) -> dict[str, Tensor]:
    """Raw arrays -> normalised, flipped float32 (B, C, 120, 120) per sensor, on their device.

    Args:
        raw: ``{group.key: (B, bands, side, side)}`` tensors (uint16 or float32), all on one device.
        layout: the groups of ``raw`` (see :func:`store_layout` / :func:`dense_layout`).
        sensors: the model's sensors (band order, mean, std).
        flips: optional (B, 2) bool: flip pair ``i`` horizontally (last axis) if ``flips[i, 0]``,
            vertically if ``flips[i, 1]`` (every sensor of a pair alike).

    Returns:
        ``{sensor: float32 (B, C, 120, 120)}``, new tensors (``raw`` is not modified).
    """
    out: dict[str, Tensor] = {}
    dev_type = next(iter(raw.values())).device.type if raw else "cpu"
    with torch.autocast(device_type=dev_type, enabled=False):  # float32 as on the host, always
        for s, spec in sensors.items():
            out[s] = _one_sensor(raw, [g for g in layout if g.sensor == s], s, spec, flips)
    return out


def _one_sensor(
    raw: Mapping[str, Tensor], groups: list[RawGroup], s: str, spec: Sensor, flips: Tensor | None
) -> Tensor:
    """The normalised, flipped float32 (B, C, 120, 120) batch of sensor ``s`` from its raw arrays."""
    if not groups:
        raise ValueError(f"the raw batch has no array for sensor {s!r} (arrays: {sorted(raw)})")
    first = raw[groups[0].key]
    n, dev = first.shape[0], first.device
    x = torch.empty(n, spec.num_channels, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32, device=dev)
    for g in groups:
        part = raw[g.key]  # (B, bands, side, side)
        want = (n, len(g.channels), g.side, g.side)
        if tuple(part.shape) != want:
            raise ValueError(f"raw[{g.key!r}]: expected {want}, got {tuple(part.shape)}")
        part = part.to(torch.float32)
        if g.side != IMAGE_SIZE:
            part = F.interpolate(part, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=True)
        lo = g.channels[0]
        if g.channels == tuple(range(lo, lo + len(g.channels))):
            x[:, lo : lo + len(g.channels)] = part
        else:
            x[:, list(g.channels)] = part
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev)[None, :, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32, device=dev)[None, :, None, None]
    x.sub_(mean).div_(std)  # (B, C, H, W): the same two roundings as the host path
    if flips is not None:  # selections, no arithmetic: exact, and no host sync on a GPU
        f = flips.to(device=dev, dtype=torch.bool)
        x = torch.where(f[:, 0, None, None, None], x.flip(-1), x)
        x = torch.where(f[:, 1, None, None, None], x.flip(-2), x)
    return x
