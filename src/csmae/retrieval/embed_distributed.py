"""Embedding on several devices or nodes with Lightning's ``Trainer.predict`` under DDP.

Each rank embeds whole shards of the embeddings folder: shard ``i`` goes to rank ``i % world_size``,
read through a DataLoader built once the rank is known (``use_distributed_sampler=False``, so
Lightning pads nothing and no pair is embedded twice). A rank writes each of its shards atomically
as soon as the shard's last batch is done, so a killed run resumes from the finished shards on any
number of devices. Precision is Lightning's (``bf16-mixed`` autocast or ``32-true``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from csmae.retrieval.embed import EmbedJob, batch_loader

log = logging.getLogger(__name__)

_ACCELERATORS = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}


class ShardPredictor(pl.LightningModule):
    """Runs ``job.model.embed`` over this rank's unfinished shards and writes them."""

    def __init__(
        self, job: EmbedJob, *, workers: int, on_progress: Callable[[int, int], None] | None
    ) -> None:
        super().__init__()
        self.job, self.workers, self.on_progress = job, workers, on_progress
        self.model = job.model  # registered, so Lightning moves it to this rank's device
        self.todo: list[tuple[int, Any]] = []
        self.done = 0

    def predict_dataloader(self) -> Any:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        mine = [si for si in range(len(self.job.shards)) if si % world == rank]
        self.todo = self.job.pending(mine)
        self.done = self.job.pairs_done()
        log.info("rank %d/%d: %d shard(s), %d batch(es) to embed", rank, world, len(mine), len(self.todo))
        return batch_loader(self.job.read, [idx for _, idx in self.todo], self.workers, pin=self.job.pin)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # raw numpy; EmbedJob.embed normalises and moves it

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        si, idx = self.todo[batch_idx]
        self.job.add(si, idx, batch, self.job.embed(batch, self.device))
        self.done += len(idx) * self.trainer.world_size
        if self.on_progress and self.trainer.global_rank == 0:
            self.on_progress(min(self.done, self.job.n), self.job.n)


def predict_shards(
    job: EmbedJob,
    *,
    accelerator: str,
    devices: int,
    num_nodes: int,
    workers: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Embed every unfinished shard of ``job`` across all ranks; returns this process's global rank.

    Every rank returns after a barrier, so when rank 0 returns all shards are on disk.
    """
    if accelerator not in _ACCELERATORS:
        raise ValueError(
            f"device must be one of {sorted(_ACCELERATORS)} for a multi-device run, got {accelerator!r}"
        )
    trainer = pl.Trainer(
        accelerator=_ACCELERATORS[accelerator],
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp",
        precision="bf16-mixed" if job.precision == "bf16" else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    module = ShardPredictor(job, workers=workers, on_progress=on_progress)
    with warnings.catch_warnings():  # predict_step writes shards and returns nothing, on purpose
        warnings.filterwarnings("ignore", message=".*predict returned None.*")
        trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier("csmae-embed-shards-written")
    return trainer.global_rank
