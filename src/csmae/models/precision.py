"""bf16 parameter copies for inference under autocast: the weights autocast would cast, cast once.

Under ``torch.autocast(dtype=bfloat16)`` every ``nn.Linear`` / ``nn.Conv2d`` call casts its fp32
weight and bias to bf16 (round to nearest) before the matmul, batch after batch. Holding those
parameters in bf16 gives the same kernel the same bf16 operands, so the outputs are identical bit
for bit, without the per-batch casts (embedding on the 2-core Zen 4 dev CPU: +8 %, bench/README.md
``## Issue 13``). LayerNorm weights, tokens and other parameters stay fp32 (autocast leaves them,
and CPU LayerNorm needs fp32 parameters with fp32 inputs). The model must then only run under bf16
autocast.
"""

from __future__ import annotations

import torch
from torch import nn


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> list[nn.Parameter]:
    """Cast the parameters of every Linear and Conv2d of ``model`` to ``dtype`` in place; return them."""
    low = [
        p
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
        for p in m.parameters(recurse=False)
    ]
    for p in low:
        p.data = p.data.to(dtype)
    return low
