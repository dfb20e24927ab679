"""Per-sample randomness: a counter-based hash of (seed, epoch, global sample index).

Every random draw of a training sample (its flips, its mask noise) is a pure function of the
sample's *key*, and the key is a pure function of ``(seed, stream, epoch, index)`` where
``index`` is the sample's place in the epoch's global order (``global batch * global batch
size + position in the global batch``). Nothing depends on the rank, the number of devices,
the loader worker that read the sample or on any generator state, so:

- N devices at per-device batch B draw exactly what one device at N x B draws;
- a resumed run draws exactly what an uninterrupted one would, whatever ``num_workers``;
- the CPU loader and a device-side batch transform agree (both call :func:`flip_draws`).

The hash is SplitMix64 (Steele, Lea and Flood 2014) in numpy ``uint64`` arithmetic; uniform
floats take its top 24 bits, as ``torch.rand`` does for float32.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

#: streams of keys: training samples and validation samples never share a key
TRAIN_STREAM = 0x7A11
VAL_STREAM = 0x7A12
#: salt of the flip draws (mask noise uses a salt per sensor name, see :func:`sensor_salt`)
FLIP_SALT = 0xF11B

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray | np.uint64 | int) -> np.ndarray:
    """The SplitMix64 output function of ``x`` (elementwise, uint64, wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def sample_keys(
    seed: int, epoch: int, indices: Sequence[int] | np.ndarray, *, stream: int = TRAIN_STREAM
) -> np.ndarray:
    """Keys (B,) uint64 of the samples at global places ``indices`` of epoch ``epoch``."""
    base = splitmix64(np.uint64(int(seed) & 0xFFFF_FFFF_FFFF_FFFF))
    base = splitmix64(base ^ np.uint64(int(stream) & 0xFFFF_FFFF_FFFF_FFFF))
    base = splitmix64(base ^ np.uint64(int(epoch) & 0xFFFF_FFFF_FFFF_FFFF))
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    return splitmix64(base ^ splitmix64(idx))


def keys_to_tensor(keys: np.ndarray) -> Tensor:
    """uint64 keys -> an int64 tensor (same bits) that batches, collation and devices carry."""
    return torch.from_numpy(np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64))


def keys_from(keys: Tensor | np.ndarray) -> np.ndarray:
    """The uint64 keys of an int64 key tensor (any device) or array."""
    if isinstance(keys, Tensor):
        keys = keys.detach().cpu().numpy()
    arr = np.asarray(keys)
    return arr.view(np.uint64) if arr.dtype == np.int64 else arr.astype(np.uint64)


def uniform(keys: Tensor | np.ndarray, salt: int, n: int) -> np.ndarray:
    """Uniform float32 draws (B, n) in [0, 1): draw j of sample i is a function of (key_i, salt, j)."""
    k = keys_from(keys)  # (B,)
    counters = (np.uint64(int(salt) & 0xFFFF_FFFF) << np.uint64(32)) + np.arange(n, dtype=np.uint64)  # (n,)
    h = splitmix64(k[:, None] ^ splitmix64(counters)[None, :])  # (B, n)
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def flip_draws(keys: Tensor | np.ndarray) -> Tensor:
    """(B, 2) bool: column 0 = flip horizontally (width), column 1 = vertically (height), p = 0.5.

    The same draw applies to every sensor of a pair (keeps them co-registered).
    """
    return torch.from_numpy(uniform(keys, FLIP_SALT, 2) < 0.5)


def sensor_salt(sensor: str) -> int:
    """The salt of a sensor's mask noise (by name, so the sensor order does not matter)."""
    return zlib.crc32(f"mask-noise:{sensor}".encode())


def mask_noise(
    keys: Tensor | np.ndarray,
    sensors: Sequence[str],
    num_tokens: int,
    *,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Masking noise {sensor: float32 (B, num_tokens)} for ``make_mask_plan(noise=...)``."""
    k = keys_from(keys)  # once per step, not once per sensor (a device->host copy for device keys)
    return {s: torch.from_numpy(uniform(k, sensor_salt(s), num_tokens)).to(device) for s in sensors}
