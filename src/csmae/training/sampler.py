"""A resumable, rank-aware batch sampler and the DataLoader that checkpoints its position.

The order of an epoch is a pure function of ``(seed, epoch)``; the random draws of a sample
(flips, mask noise) are a pure function of ``(seed, epoch, its place in the epoch's global
order)`` (:mod:`csmae.training.sample_rng`), never of the rank or the loader worker. The only
state to checkpoint is therefore the epoch and how many batches of it the training loop has
consumed; on resume the sampler skips those batches, so a run killed mid-epoch sees exactly the
batches an uninterrupted run would, whatever ``num_workers``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from csmae.training.sample_rng import TRAIN_STREAM, sample_keys

log = logging.getLogger(__name__)


class BatchRequest(NamedTuple):
    """What a worker fetches: one rank's share of a global batch.

    Attributes:
        positions: dataset positions of this rank's samples.
        keys: (len(positions),) uint64 per-sample keys (:func:`csmae.training.sample_rng.sample_keys`).
        global_n: size of the whole global batch this share belongs to (all ranks together).
    """

    positions: list[int]
    keys: np.ndarray
    global_n: int


def rank_sizes(global_n: int, world_size: int) -> list[int]:
    """How a global batch of ``global_n`` splits over ranks: contiguous slices, sizes differing by <= 1."""
    base, extra = divmod(int(global_n), int(world_size))
    return [base + (1 if r < extra else 0) for r in range(world_size)]


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (independent streams per epoch/batch/rank)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


class ResumableBatchSampler(Sampler[BatchRequest]):
    """Yields :class:`BatchRequest` s; shards the global batch across ranks.

    Global batch ``b`` of an epoch is positions ``perm[b*B*W:(b+1)*B*W]`` and rank ``r`` takes its
    ``r``-th slice of ``B`` (B = per-rank batch, W = world size), so the union over ranks is the same
    for any W with the same global batch. An incomplete last global batch (``drop_last=False``) is
    split into slices whose sizes differ by at most one (:func:`rank_sizes`); when it has fewer
    samples than there are ranks it is dropped (every rank must take part in every step).

    Args:
        n: number of items.
        batch_size: per-rank batch size.
        seed: base seed (order and augmentation).
        shuffle: random order per epoch (train) or ``0..n-1`` (validation).
        drop_last: drop the incomplete last global batch.
        stream: key stream of the per-sample draws (training and validation differ).
        fixed_epoch: draw every epoch's keys as epoch ``fixed_epoch`` (validation: the same masks
            every epoch); None: the real epoch.
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
        stream: int = TRAIN_STREAM,
        fixed_epoch: int | None = None,
    ):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.stream, self.fixed_epoch = stream, fixed_epoch
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, batches to skip) after a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue epoch ``epoch`` after its first ``batches_done`` batches."""
        self.epoch = int(epoch)
        self._skip = (int(epoch), int(batches_done))

    def __len__(self) -> int:
        return batches_per_epoch(self.n, self.batch_size, self.world_size, drop_last=self.drop_last)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5A3D))
        return torch.randperm(self.n, generator=g).numpy()

    def __iter__(self) -> Iterator[BatchRequest]:
        # After a resume the checkpoint's position is authoritative until the loop has moved past the
        # resumed epoch: the iterators Lightning builds while it restores (with an epoch number one
        # too low or one too high, depending on where the checkpoint was written) serve the resumed
        # epoch after its consumed batches. The skip holds for every iteration of that epoch, not
        # only the first: a DataLoader with workers calls iter() on its sampler twice when it builds
        # its iterator (issue 14.1: a one-shot skip was spent on the first and the resumed run
        # replayed the epoch's first batches).
        skip = 0
        if self._skip is not None:
            if self.epoch <= self._skip[0]:
                self.epoch, skip = self._skip
            else:
                self._skip = None  # the resumed epoch is over
        epoch = self.epoch
        perm = self.order(epoch)
        gb = self.batch_size * self.world_size
        key_epoch = epoch if self.fixed_epoch is None else self.fixed_epoch
        batches = []
        for b in range(skip, len(self)):
            global_n = min(gb, self.n - b * gb)
            sizes = rank_sizes(global_n, self.world_size)
            start = b * gb + sum(sizes[: self.rank])  # place of this rank's first sample in the epoch
            index = np.arange(start, start + sizes[self.rank])
            keys = sample_keys(self.seed, key_epoch, index, stream=self.stream)
            batches.append(BatchRequest(perm[index].tolist(), keys, global_n))
        return iter(batches)


def batches_per_epoch(n: int, batch_size: int, world_size: int, *, drop_last: bool) -> int:
    """Steps of an epoch of ``n`` items at ``batch_size`` per rank on ``world_size`` ranks.

    Without ``drop_last`` the incomplete last global batch counts when every rank gets a sample.
    """
    gb = batch_size * world_size
    full, rest = divmod(n, gb)
    return full + (1 if rest and not drop_last and rest >= world_size else 0)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` that Lightning checkpoints mid-epoch.

    Lightning stores ``state_dict()`` of every stateful train loader in its checkpoints and calls
    ``load_state_dict`` on resume. ``progress`` returns ``(batches consumed by the training loop in
    this epoch, batches in an epoch)``; the batches fetched ahead by workers do not count.

    ``epoch``: returns the training loop's current epoch; when given, every new iterator takes its
    epoch from it rather than from Lightning's ``set_epoch`` calls (after a resume from a
    checkpoint written at an epoch's last batch, Lightning 2.6 calls ``set_epoch`` with one more
    than the epoch it runs, so the resumed run trained on a later epoch's order and draws: issue
    14.1). Until the loop has moved past a resumed epoch, the sampler serves that epoch.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_sampler: ResumableBatchSampler,
        progress: Callable[[], tuple[int, int]] | None = None,
        epoch: Callable[[], int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(dataset, sampler=batch_sampler, batch_size=None, **kwargs)
        self.batch_request_sampler = batch_sampler
        self.progress = progress
        self.epoch_fn = epoch
        self.wait_s = 0.0  # time the training loop spent waiting in next() (data loading)
        self.batches_out = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if self.epoch_fn is not None:
            self.batch_request_sampler.set_epoch(self.epoch_fn())
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
