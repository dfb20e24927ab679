"""AdamW parameter groups, learning-rate scaling and the warm-up + cosine schedule (per step)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from csmae.training.config import OptimSection, ScheduleSection


def scaled_lr(optim: OptimSection, global_batch: int) -> float:
    """The peak learning rate for ``global_batch`` (``optim.lr`` itself unless lr_scaling is set)."""
    ratio = global_batch / optim.lr_base_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[optim.lr_scaling]
    return optim.lr * factor


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases and learned tokens (cls/mask tokens, 1-D or token-shaped)."""
    return param.ndim <= 1 or name.endswith("token") or name.endswith("_token")


def param_groups(model: nn.Module, optim: OptimSection) -> list[dict]:
    """Parameter groups for AdamW: one group, or decay / no-decay when ``no_decay_norm_bias``."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not optim.no_decay_norm_bias:
        return [{"params": [p for _, p in params], "weight_decay": optim.weight_decay}]
    decay = [p for n, p in params if not _no_decay(n, p)]
    no_decay = [p for n, p in params if _no_decay(n, p)]
    return [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, optim: OptimSection, *, lr: float, device_type: str
) -> torch.optim.AdamW:
    # fused AdamW kernels exist for CPU and CUDA; the per-tensor loop is the slow fallback
    fused = optim.fused if optim.fused is not None else device_type in ("cuda", "cpu")
    return torch.optim.AdamW(
        param_groups(model, optim),
        lr=lr,
        betas=(optim.betas[0], optim.betas[1]),
        eps=optim.eps,
        fused=fused or None,
    )


def lr_lambda(
    schedule: ScheduleSection, *, total_steps: int, steps_per_epoch: float
) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based).

    Linear warm-up from 0 over ``warmup_steps`` (or ``warmup_epochs * steps_per_epoch``), then cosine
    from 1 to ``min_lr_ratio`` at ``total_steps``. ``kind: constant`` keeps 1 after the warm-up.
    """
    if schedule.warmup_steps is not None:
        warmup = int(schedule.warmup_steps)
    else:
        warmup = int(round(schedule.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total_steps)
    floor = schedule.min_lr_ratio
    constant = schedule.kind == "constant"

    def f(step: int) -> float:
        if step < warmup:
            return step / warmup
        if constant or total_steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
