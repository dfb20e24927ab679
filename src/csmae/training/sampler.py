"""A resumable, rank-aware batch sampler and the DataLoader that checkpoints its position.

The order of an epoch is a pure function of ``(seed, epoch)``; the flips of a batch are a pure
function of ``(seed, epoch, batch number, rank)``. The only state to checkpoint is therefore the
epoch and how many batches of it the training loop has consumed; on resume the sampler skips
those batches, so a run killed mid-epoch sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)


class BatchRequest(NamedTuple):
    """What a worker fetches: dataset positions of one batch and the seed of its augmentation."""

    positions: list[int]
    seed: int


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (independent streams per epoch/batch/rank)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


class ResumableBatchSampler(Sampler[BatchRequest]):
    """Yields :class:`BatchRequest` s; shards the global batch across ranks.

    Global batch ``b`` of an epoch is positions ``perm[b*B*W:(b+1)*B*W]`` and rank ``r`` takes its
    ``r``-th slice of ``B`` (B = per-rank batch, W = world size), so the union over ranks is the same
    for any W with the same global batch.

    Args:
        n: number of items.
        batch_size: per-rank batch size.
        seed: base seed (order and augmentation).
        shuffle: random order per epoch (train) or ``0..n-1`` (validation).
        drop_last: drop the incomplete last global batch (always done when ``world_size > 1``
            so that every rank runs the same number of steps).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle = shuffle
        self.drop_last = drop_last or world_size > 1
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, batches to skip) after a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue epoch ``epoch`` after its first ``batches_done`` batches."""
        self.epoch = int(epoch)
        self._skip = (int(epoch), int(batches_done))

    def __len__(self) -> int:
        gb = self.batch_size * self.world_size
        return self.n // gb if self.drop_last else -(-self.n // gb)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5A3D))
        return torch.randperm(self.n, generator=g).numpy()

    def __iter__(self) -> Iterator[BatchRequest]:
        epoch = self.epoch
        skip = 0
        if self._skip is not None:
            if self._skip[0] == epoch:
                skip = self._skip[1]
            self._skip = None
        perm = self.order(epoch)
        gb = self.batch_size * self.world_size
        batches = []
        for b in range(skip, len(self)):
            start = b * gb + self.rank * self.batch_size
            pos = perm[start : min(start + self.batch_size, self.n)].tolist()
            if pos:
                batches.append(BatchRequest(pos, mix_seed(self.seed, epoch, b, self.rank, 0xF11B)))
        return iter(batches)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` that Lightning checkpoints mid-epoch.

    Lightning stores ``state_dict()`` of every stateful train loader in its checkpoints and calls
    ``load_state_dict`` on resume. ``progress`` returns ``(batches consumed by the training loop in
    this epoch, batches in an epoch)``; the batches fetched ahead by workers do not count.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_sampler: ResumableBatchSampler,
        progress: Callable[[], tuple[int, int]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(dataset, sampler=batch_sampler, batch_size=None, **kwargs)
        self.batch_request_sampler = batch_sampler
        self.progress = progress
        self.wait_s = 0.0  # time the training loop spent waiting in next() (data loading)
        self.batches_out = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _TimedIterator(super().__iter__(), self)

    def state_dict(self) -> dict[str, int]:
        s = self.batch_request_sampler
        done, total = self.progress() if self.progress is not None else (0, len(s))
        if done >= total:  # saved at the end of an epoch: the next one starts from its beginning
            return {"epoch": s.epoch + 1, "batches_done": 0, "seed": s.seed}
        return {"epoch": s.epoch, "batches_done": int(done), "seed": s.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        s = self.batch_request_sampler
        if state.get("seed", s.seed) != s.seed:
            log.warning(
                "resuming with data seed %s, the checkpoint used %s: the data order changes",
                s.seed,
                state["seed"],
            )
        s.resume(state["epoch"], state["batches_done"])
        log.info("data order resumed at epoch %d after %d batch(es)", state["epoch"], state["batches_done"])


class _TimedIterator:
    """Counts the time spent waiting for each batch (what "data wait" means in the bench)."""

    def __init__(self, it: Iterator[Any], owner: ResumableLoader):
        self.it, self.owner = it, owner

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        t0 = time.perf_counter()
        batch = next(self.it)
        self.owner.wait_s += time.perf_counter() - t0
        self.owner.batches_out += 1
        return batch

    def __len__(self) -> int:
        return len(self.it)  # type: ignore[arg-type]
