"""Callbacks: throughput (samples/s, data wait) in the progress bar, and the end-of-run numbers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from csmae.training.sampler import ResumableLoader

log = logging.getLogger(__name__)


@dataclass
class ThroughputStats:
    """Totals of this process's training (this session: a resumed run counts from the resume)."""

    samples: int = 0  # global samples (all ranks)
    steps: int = 0  # training batches run in this session
    seconds: float = 0.0  # wall time of the training batches (data wait + step; no validation)
    data_wait_s: float = 0.0  # time the loop waited for batches

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_s / self.seconds if self.seconds > 0 else 0.0


class Throughput(pl.Callback):
    """Measures samples/s and the share of time spent waiting for data, logs them.

    ``perf/samples_per_s`` (over the last ``window`` batches) shows in the progress bar.
    """

    def __init__(self, window: int = 20):
        self.window = window
        self.stats = ThroughputStats()
        self._t0: float | None = None
        self._mark = 0.0
        self._wait0 = 0.0
        self._recent: list[tuple[float, int]] = []

    def _loader(self, trainer: pl.Trainer) -> ResumableLoader | None:
        dl = trainer.train_dataloader
        return dl if isinstance(dl, ResumableLoader) else None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()
        self._recent = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()
            loader = self._loader(trainer)
            self._wait0 = loader.wait_s if loader is not None else 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Time from the previous batch end (or the epoch start) to this batch end: data wait + step.
        # Validation and epoch-end callbacks (pictures, retrieval) fall outside and are not counted.
        now = time.perf_counter()
        n = len(batch["id"]) * trainer.world_size
        self.stats.samples += n
        self.stats.steps += 1
        self.stats.seconds += now - self._mark
        self._mark = now
        self._recent.append((now, n))
        if len(self._recent) > self.window + 1:
            self._recent.pop(0)
        if len(self._recent) >= 2:
            dt = self._recent[-1][0] - self._recent[0][0]
            rate = sum(k for _, k in self._recent[1:]) / dt if dt > 0 else 0.0
            pl_module.log(
                "perf/samples_per_s",
                rate,
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                batch_size=len(batch["id"]),
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = self._loader(trainer)
        if loader is not None and self._t0 is not None:
            self.stats.data_wait_s = loader.wait_s - self._wait0


class ProgressBar(TQDMProgressBar):
    """Lightning's bar without the version number noise; samples/s comes from :class:`Throughput`."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if "perf/samples_per_s" in items:
            items["samples/s"] = items.pop("perf/samples_per_s")
        return items
