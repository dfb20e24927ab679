"""Tiny versions of every registered preset (same variant structure, small widths and depths)."""

from __future__ import annotations

import torch

from csmae.models import get_config

TINY = dict(embed_dim=48, num_heads=2, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


def tiny_overrides(name: str, **extra) -> dict:
    """Shrink a preset but keep its structure: private blocks iff it has some, shared iff it has some."""
    cfg = get_config(name)
    depth = dict(private_depth=2 if cfg.private_depth else 0, shared_depth=1 if cfg.shared_depth else 0)
    if not cfg.private_depth:
        depth["shared_depth"] = 2
    return {**TINY, **depth, **extra}


def random_batch(model, n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(n, spec.num_channels, 120, 120, generator=g) for s, spec in model.sensors.items()}


def fixed_noise(model, n: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {s: torch.rand(n, model.num_patches, generator=g) for s in model.sensors}
