"""A callback that crashes a fit right before a given optimiser step (for the resume tests)."""

from __future__ import annotations

import lightning.pytorch as pl


class Crash(Exception):
    pass


class CrashAt(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash(f"crash before step {self.step}")
