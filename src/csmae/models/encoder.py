"""The cross-sensor ViT encoder: per-sensor stems, CLS tokens and private blocks; shared blocks.

Per sensor: patch stem -> + fixed 2-D sin-cos position -> keep the unmasked tokens -> prepend
the sensor's CLS token -> ``private_depth`` private blocks -> LayerNorm (when private blocks
exist) -> ``shared_depth`` shared blocks (same weights for every sensor, each sequence on its
own) -> final LayerNorm. Sequences of equal length go through the shared blocks as one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from csmae.models.config import ModelConfig
from csmae.models.layers import PatchStem, init_weights, sincos_2d_table, vit_blocks


class CrossSensorEncoder(nn.Module):
    """Encoder of every sensor in ``channels`` (sensor name -> input channel count)."""

    def __init__(self, config: ModelConfig, channels: Mapping[str, int]):
        super().__init__()
        c = config
        self.sensors = tuple(channels)
        self.embed_dim = c.embed_dim
        blocks: dict[str, Any] = dict(
            dim=c.embed_dim, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, eps=c.norm_eps
        )
        self.stems = nn.ModuleDict(
            {
                s: PatchStem(in_chans=ch, embed_dim=c.embed_dim, patch_size=c.patch_size)
                for s, ch in channels.items()
            }
        )
        self.cls_tokens = nn.ParameterDict(
            {s: nn.Parameter(torch.zeros(1, 1, c.embed_dim)) for s in channels}
        )
        self.private = nn.ModuleDict({s: vit_blocks(depth=c.private_depth, **blocks) for s in channels})
        # The reference has a per-sensor LayerNorm only when private blocks exist.
        self.private_norms = nn.ModuleDict(
            {s: nn.LayerNorm(c.embed_dim, eps=c.norm_eps) for s in channels} if c.private_depth else {}
        )
        self.shared = vit_blocks(depth=c.shared_depth, **blocks)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        grid = c.img_size // c.patch_size
        self.register_buffer("pos_embed", sincos_2d_table(c.embed_dim, grid)[None], persistent=False)
        init_weights(self)
        for p in self.cls_tokens.values():
            nn.init.normal_(p, std=0.02)

    def embed_tokens(self, sensor: str, x: Tensor, ids_keep: Tensor | None = None) -> Tensor:
        """Stem + position + masking + CLS + private blocks: (N, C, H, W) -> (N, 1+K, D)."""
        pos: Tensor = self.pos_embed  # type: ignore[assignment]
        tokens = self.stems[sensor](x) + pos[:, 1:]  # (N, L, D); float32 residual under autocast
        if ids_keep is not None:
            idx = ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, idx)  # (N, K, D)
        cls = (self.cls_tokens[sensor] + pos[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls.to(tokens.dtype), tokens], dim=1)  # (N, 1+K, D)
        tokens = self.private[sensor](tokens)
        if sensor in self.private_norms:
            tokens = self.private_norms[sensor](tokens)
        return tokens

    def shared_forward(self, tokens: dict[str, Tensor]) -> dict[str, Tensor]:
        """Shared blocks + final norm; sequences with equal shapes are batched together."""
        groups: dict[tuple[int, ...], list[str]] = {}
        for s, t in tokens.items():
            groups.setdefault(tuple(t.shape[1:]), []).append(s)
        out: dict[str, Tensor] = {}
        for names in groups.values():
            x = torch.cat([tokens[s] for s in names], dim=0) if len(names) > 1 else tokens[names[0]]
            x = self.norm(self.shared(x))
            for s, part in zip(names, x.split([tokens[s].shape[0] for s in names], dim=0)):
                out[s] = part
        return out

    def forward(
        self, images: Mapping[str, Tensor], ids_keep: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Encode each sensor's (N, C, H, W) images; ``ids_keep`` {sensor: (N, K)} masks when given."""
        tokens = {
            s: self.embed_tokens(s, x, None if ids_keep is None else ids_keep[s]) for s, x in images.items()
        }
        return self.shared_forward(tokens)
