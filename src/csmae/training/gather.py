"""A differentiable all-gather of per-rank rows, for losses over the whole global batch.

Rank ``r`` holds rows ``[offset_r, offset_r + n_r)`` of the global batch (the sampler's
contiguous slices, :func:`csmae.training.sampler.rank_sizes`); sizes may differ by one (the
incomplete last batch), so every rank pads to the largest size before ``all_gather``.

Gradients: each rank's loss reads every rank's rows, so the gradient of rank ``r``'s rows is the
sum over all ranks of what their losses send it. The backward therefore sums the full gradient
over ranks (``all_reduce``) and keeps this rank's slice. DDP then averages parameter gradients
over ranks; with each rank's loss being its share of the global loss (see
:func:`csmae.training.module.step_loss`) that gives exactly the one-device gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor


class RowGather(NamedTuple):
    """Gathers (n_r, ...) rows of every rank into the global (sum(sizes), ...) tensor.

    Attributes:
        sizes: rows held by each rank, in rank order.
        rank: this process's rank in ``group``.
        group: the process group (None: the default group).
    """

    sizes: tuple[int, ...]
    rank: int
    group: Any = None

    @property
    def offset(self) -> int:
        """Index of this rank's first row in the gathered tensor."""
        return sum(self.sizes[: self.rank])

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[0] != self.sizes[self.rank]:
            raise ValueError(f"rank {self.rank} holds {x.shape[0]} rows, expected {self.sizes[self.rank]}")
        return _GatherRows.apply(x, self.sizes, self.rank, self.group)  # type: ignore[no-any-return]


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: Sequence[int], rank: int, group: Any) -> Tensor:
        ctx.sizes, ctx.rank, ctx.group = tuple(sizes), rank, group
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = grads
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None, None, None


def check_gather_possible(world_size: int) -> None:
    """Raise a clear error when a global-batch gather cannot run in this process.

    Raises:
        RuntimeError: several ranks but no initialised ``torch.distributed`` process group.
    """
    if world_size <= 1:
        return
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"the MIM loss gathers descriptors over {world_size} ranks, but torch.distributed has no "
            "initialised process group (strategy without one, e.g. 'dp'?): use trainer.strategy=ddp, "
            "or trainer.mim_per_rank=true for per-device negatives"
        )
    if dist.get_world_size() != world_size:
        raise RuntimeError(
            f"the trainer reports {world_size} ranks but the process group has {dist.get_world_size()}: "
            "the MIM gather cannot run; check trainer.devices/num_nodes against the launcher"
        )
