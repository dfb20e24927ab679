"""``last.ckpt`` every N optimiser steps, never at the last batch of an epoch.

Lightning 2.6 does not resume exactly from a checkpoint written in ``on_train_batch_end`` of an
epoch's last batch (before validation and the epoch-end hooks): with validation on, the resumed
run counted that epoch twice, stopped an epoch early and iterated its data as the next epoch's
(issue 14.1, found with ``checkpoint_every_n_steps`` landing on an epoch's last step). A step
checkpoint that falls on an epoch's last batch is therefore written in ``on_train_epoch_end``
instead, the state Lightning restarts from cleanly ("restarted on epoch end").
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """A :class:`ModelCheckpoint` with ``every_n_train_steps`` that defers an epoch's last step to its end."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # written by on_train_epoch_end, after validation
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = self._every_n_train_steps
        if n < 1 or trainer.global_step % n != 0 or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
