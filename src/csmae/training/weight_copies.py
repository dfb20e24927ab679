"""``trainer.bf16_weight_copies``: the training forward runs on bf16 copies of the Linear/Conv weights.

Under bf16 autocast every ``nn.Linear`` / ``nn.Conv2d`` call casts its fp32 weight and bias to bf16
before the matmul (Lightning's autocast keeps no cast cache, so a module called twice casts twice),
and the backward casts the bf16 gradients back to fp32. Here the modules keep their fp32 parameters
(the master weights: the optimiser, gradient clipping, checkpoints and the exported model see only
them) and, inside :meth:`Bf16WeightCopies.swapped`, every call of such a module runs on bf16 copies
made once per optimiser step: each call puts an identity node in front of the copy whose backward
hands the gradient to the fp32 master as ``.float()``, per call, as autocast's cast would. The copies
are refreshed from the masters (one round to nearest, the rounding autocast does) whenever they are
stale: at the first step, after each optimiser step and after a checkpoint is loaded. Same operands,
same gradients, so the same weights as without copies (tested through ``csmae fit``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


class _AsBf16(torch.autograd.Function):
    """Forward: the bf16 copy of ``master``; backward: the gradient as fp32, for ``master``."""

    @staticmethod
    def forward(ctx: Any, master: Tensor, low: Tensor) -> Tensor:  # noqa: ARG004
        return low.view_as(low)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return grad.float(), None


class Bf16WeightCopies:
    """bf16 copies of the Linear/Conv2d parameters of ``model``, used by its calls inside :meth:`swapped`.

    Args:
        model: the module whose ``nn.Linear`` / ``nn.Conv2d`` parameters get bf16 copies (on their
            device); its own parameters stay fp32 and are never replaced outside a module call.
    """

    def __init__(self, *, model: nn.Module) -> None:
        copies: dict[int, Tensor] = {}
        self.per_module: dict[nn.Module, list[tuple[str, nn.Parameter, Tensor]]] = {}
        for m in model.modules():
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                continue
            for name, p in m.named_parameters(recurse=False):
                if p.dtype != torch.float32:
                    raise ValueError(
                        f"trainer.bf16_weight_copies needs fp32 master weights; {type(m).__name__}.{name} "
                        f"is {p.dtype}"
                    )
                if id(p) not in copies:  # a parameter shared by two modules gets one copy
                    copies[id(p)] = torch.empty_like(p, dtype=torch.bfloat16)
                self.per_module.setdefault(m, []).append((name, p, copies[id(p)]))
        pairs = {id(low): (p, low) for slots in self.per_module.values() for _, p, low in slots}
        self.masters: list[Tensor] = [p for p, _ in pairs.values()]
        self.copies = [low for _, low in pairs.values()]
        self.stale = True

    def refresh(self) -> None:
        """Copy the fp32 masters into the bf16 copies (round to nearest), in place."""
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.masters)
        self.stale = False

    def _enter(self, module: nn.Module, args: Any) -> None:  # noqa: ARG002
        for name, master, low in self.per_module[module]:
            module._parameters[name] = _AsBf16.apply(master, low) if master.requires_grad else low  # type: ignore[assignment]

    def _leave(self, module: nn.Module, args: Any = None, out: Any = None) -> None:  # noqa: ARG002
        for name, master, _ in self.per_module[module]:
            module._parameters[name] = master

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Module calls inside the block run on the bf16 copies (refreshed first if stale)."""
        if self.stale:
            self.refresh()
        handles = []
        for m in self.per_module:
            handles.append(m.register_forward_pre_hook(self._enter))
            handles.append(m.register_forward_hook(self._leave))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for m in self.per_module:
                self._leave(m)
