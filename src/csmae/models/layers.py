"""Small building blocks: fixed 2-D sin-cos position tables, the per-sensor patch stem, ViT stacks.

Transformer blocks are timm's ``Block`` (pre-norm MHSA with fused scaled-dot-product attention +
MLP), so no attention is written by hand here.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import Tensor, nn


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(M,) positions -> (M, dim): [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-k / (dim/2))."""
    if dim % 2:
        raise ValueError(f"sin-cos dimension must be even, got {dim}")
    k = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0**k  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d_table(dim: int, grid: int, *, cls_token: bool = True) -> Tensor:
    """Fixed (1 + grid*grid, dim) float32 table for a row-major token grid; the CLS row is zeros.

    The first half of the channels encodes the column (x) of a token, the second half its row (y),
    the convention of MAE-style models (and of the reference checkpoints).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos dimension must be a multiple of 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    table = torch.cat(
        [sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1
    )  # (grid*grid, dim)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.to(torch.float32)


class PatchStem(nn.Module):
    """Conv patch embedding of one sensor: (N, C, H, W) -> (N, L, D), kernel = stride = patch."""

    def __init__(self, *, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (N, D, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (N, L, D)


def vit_blocks(*, depth: int, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> nn.Sequential:
    """``depth`` timm ViT blocks (qkv bias, LayerNorm with ``eps``)."""
    norm: Any = partial(nn.LayerNorm, eps=eps)
    return nn.Sequential(
        *[Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
    )


def init_weights(module: nn.Module) -> None:
    """MAE-style init: xavier-uniform linears (and conv stems as linears), zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def prefer_fused_attention(device_type: str, lowp_dtype: torch.dtype | None) -> bool:
    """Whether timm's fused SDPA path beats its explicit (matmul + softmax) path.

    Measured for ViT-B/decoder shapes (33 and 65 tokens, bench/README.md ``## model``): on CPU under
    bf16 autocast the explicit path is 1.4-1.75x faster forward + backward and ~10 % faster for
    inference; in fp32 on CPU and on GPUs the fused kernel is as fast or faster.
    """
    return not (device_type == "cpu" and lowp_dtype is not None)


def set_fused_attention(modules: list[Attention], fused: bool) -> None:
    """Switch timm Attention modules between the fused SDPA kernel and the explicit path."""
    for m in modules:
        if m.fused_attn != fused:
            m.fused_attn = fused  # type: ignore[misc]
