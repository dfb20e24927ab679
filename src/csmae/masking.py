"""Token masking plans across sensors, and patchify / unpatchify for any channel count.

A plan is made from per-sample noise: ``ids_shuffle = argsort(noise)``; the first
``len_keep = int(L * (1 - ratio))`` positions of the shuffle are kept; ``ids_restore`` is the
inverse permutation; ``mask`` is 1 where a token is masked. Strategies across sensors live in
:data:`MASK_STRATEGIES` (a table, not a chain of ifs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


# ----------------------------------------------------------------------------- patches
def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """(N, C, H, W) -> (N, L, p*p*C), tokens row-major, pixel-major with channel last in a patch."""
    n, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    gh, gw = h // p, w // p
    x = imgs.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1)  # (N, gh, gw, p, p, C)
    return x.reshape(n, gh * gw, p * p * c)


def unpatchify(x: Tensor, patch_size: int, channels: int) -> Tensor:
    """(N, L, p*p*C) -> (N, C, H, W); the inverse of :func:`patchify` (square grids)."""
    n, length, dim = x.shape
    p = patch_size
    if dim != p * p * channels:
        raise ValueError(f"patch dim {dim} != {p}*{p}*{channels}")
    g = int(round(length**0.5))
    if g * g != length:
        raise ValueError(f"{length} tokens do not form a square grid")
    x = x.reshape(n, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (N, C, gh, p, gw, p)
    return x.reshape(n, channels, g * p, g * p)


# ----------------------------------------------------------------------------- plans
@dataclass
class SensorMask:
    """Masking of one sensor's token sequence.

    Attributes:
        ids_keep: (N, K) positions kept, in shuffle order.
        ids_restore: (N, L) inverse of the shuffle.
        mask: (N, L) float, 1 = masked.
    """

    ids_keep: Tensor
    ids_restore: Tensor
    mask: Tensor

    @property
    def len_keep(self) -> int:
        return int(self.ids_keep.shape[1])


def len_keep_for(num_tokens: int, ratio: float) -> int:
    """Tokens kept at mask ``ratio``: ``int(L * (1 - ratio))``."""
    return int(num_tokens * (1 - ratio))


def mask_from_shuffle(ids_shuffle: Tensor, len_keep: int) -> SensorMask:
    """Build a :class:`SensorMask` from a shuffle (N, L) keeping its first ``len_keep`` positions."""
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = (ids_restore >= len_keep).to(torch.float32)  # rank >= len_keep -> masked
    return SensorMask(ids_keep=ids_shuffle[:, :len_keep], ids_restore=ids_restore, mask=mask)


def _random(noise: Mapping[str, Tensor], sensors: Sequence[str], ratio: float) -> dict[str, SensorMask]:
    """Independent noise per sensor."""
    out = {}
    for s in sensors:
        shuffle = torch.argsort(noise[s], dim=1)
        out[s] = mask_from_shuffle(shuffle, len_keep_for(shuffle.shape[1], ratio))
    return out


def _identical(noise: Mapping[str, Tensor], sensors: Sequence[str], ratio: float) -> dict[str, SensorMask]:
    """Every sensor masks the positions of the first sensor's noise."""
    shuffle = torch.argsort(noise[sensors[0]], dim=1)
    m = mask_from_shuffle(shuffle, len_keep_for(shuffle.shape[1], ratio))
    return {s: m for s in sensors}


def _disjoint(noise: Mapping[str, Tensor], sensors: Sequence[str], ratio: float) -> dict[str, SensorMask]:
    """The second sensor keeps exactly the positions the first one masks (complementary masks).

    The second sensor's shuffle is the first one's reversed, so its kept tokens are in the same
    order as the reference implementation's. With one sensor this is ``random``.
    """
    if len(sensors) == 1:
        return _random(noise, sensors, ratio)
    if len(sensors) != 2:
        raise ValueError(f"disjoint masking needs exactly two sensors, got {list(sensors)}")
    first, second = sensors
    shuffle = torch.argsort(noise[first], dim=1)
    length = shuffle.shape[1]
    keep = len_keep_for(length, ratio)
    return {
        first: mask_from_shuffle(shuffle, keep),
        second: mask_from_shuffle(torch.flip(shuffle, dims=[1]), length - keep),
    }


#: strategy name -> function(noise by sensor, sensor order, ratio) -> {sensor: SensorMask}.
#: Each strategy reads the noise of the sensors it needs (``identical``/``disjoint``: the first).
MASK_STRATEGIES: dict[str, Callable[[Mapping[str, Tensor], Sequence[str], float], dict[str, SensorMask]]] = {
    "random": _random,
    "identical": _identical,
    "disjoint": _disjoint,
}


def draw_noise(
    sensors: Sequence[str],
    n: int,
    num_tokens: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Uniform noise (N, L) per sensor (sensor order = draw order)."""
    return {s: torch.rand(n, num_tokens, device=device, generator=generator) for s in sensors}


def make_mask_plan(
    strategy: str,
    ratio: float,
    sensors: Sequence[str],
    *,
    n: int,
    num_tokens: int,
    noise: Mapping[str, Tensor] | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, SensorMask]:
    """Masks for every sensor from explicit ``noise`` ({sensor: (N, L)}) or freshly drawn noise.

    Missing sensors in ``noise`` get fresh noise. Raises ValueError for an unknown strategy or
    noise of the wrong shape.
    """
    if strategy not in MASK_STRATEGIES:
        raise ValueError(f"unknown mask strategy {strategy!r}; valid: {sorted(MASK_STRATEGIES)}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    given = dict(noise or {})
    unknown = sorted(set(given) - set(sensors))
    if unknown:
        raise ValueError(f"noise given for unknown sensor(s) {unknown}; sensors: {list(sensors)}")
    for s, t in given.items():
        if tuple(t.shape) != (n, num_tokens):
            raise ValueError(f"noise for {s!r} has shape {tuple(t.shape)}, expected ({n}, {num_tokens})")
    missing = [s for s in sensors if s not in given]
    given.update(draw_noise(missing, n, num_tokens, device=device, generator=generator))
    given = {s: t.to(device) if device is not None else t for s, t in given.items()}
    return MASK_STRATEGIES[strategy](given, list(sensors), ratio)
