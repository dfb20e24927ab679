"""The LightningModule: the model's own ``training_loss``, AdamW and the per-step schedule.

Global-batch semantics: on N devices at per-device batch B a step computes what one device
computes at N x B. The mask noise of each sample is drawn from its key (its place in the global
batch, :mod:`csmae.training.sample_rng`), the MIM negatives are the descriptors of all ranks
(:mod:`csmae.training.gather`), and each rank's loss is its share of the global loss, so DDP's
gradient average is the one-device gradient (:func:`step_loss`). Anything else drawn from torch's
global generators is re-seeded from ``(seed, epoch, batch index)`` at the start of every step, so a
resumed run draws exactly what an uninterrupted one would, without carrying RNG state around.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from csmae.training.config import ConfigError, FitConfig
from csmae.training.datamodule import model_inputs
from csmae.training.gather import RowGather, check_gather_possible
from csmae.training.optim import build_optimizer, lr_lambda, scaled_lr
from csmae.training.sample_rng import mask_noise
from csmae.training.sampler import mix_seed, rank_sizes
from csmae.training.weight_copies import Bf16WeightCopies

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient) became NaN/inf; the step was not applied."""


def step_loss(
    model: Any,
    batch: dict[str, Any],
    sensors: list[str],
    *,
    rank: int = 0,
    world_size: int = 1,
    per_rank_mim: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """This rank's loss of one step, such that the mean over ranks is the global-batch loss.

    Args:
        model: a csmae model.
        batch: this rank's share of a global batch: sensor tensors, ``"key"`` (B,) int64 per-sample
            keys (mask noise; without it the noise comes from torch's global generator) and
            ``"global_n"`` (the global batch size; default B x world_size).
        sensors: the model's sensor names.
        rank, world_size: this process in the process group.
        per_rank_mim: NT-Xent negatives from this rank's batch only (no gather).

    Returns:
        (loss to back-propagate, the unweighted terms of this rank's rows). The loss is scaled by
        ``B x world_size / global_n`` (exactly 1 for equal shares), so that DDP's mean over ranks of
        the gradients is the gradient of the global batch's loss.
    """
    inputs = model_inputs(batch, sensors)
    n = next(iter(inputs.values())).shape[0]
    noise = None
    if "key" in batch:
        cfg = model.config
        noise = mask_noise(batch["key"], cfg.sensors, cfg.num_patches, device=inputs[sensors[0]].device)
    global_n = int(batch.get("global_n", n * world_size))
    gather = None
    if world_size > 1 and not per_rank_mim:
        gather = RowGather(tuple(rank_sizes(global_n, world_size)), rank)
    loss, terms = model.training_loss(inputs, noise=noise, gather=gather)
    if n * world_size != global_n:  # an uneven share (the incomplete last batch)
        loss = loss * (n * world_size / global_n)
    return loss, terms


class CSMAEModule(pl.LightningModule):
    """Trains any model with ``training_loss(batch) -> (loss, terms)`` and ``sensors``.

    Args:
        model: a csmae model (``csmae.create_model(...)``).
        cfg: the whole training config (optimiser, schedule, seed are read from it).
    """

    def __init__(self, model: nn.Module, cfg: FitConfig):
        super().__init__()
        self.model: Any = model
        self.cfg = cfg
        self.sensor_names: list[str] = list(getattr(model, "sensors"))  # noqa: B009
        self.peak_lr: float | None = None
        self.last_loss: Tensor | None = None
        self.weight_copies: Bf16WeightCopies | None = None  # trainer.bf16_weight_copies, made on the device

    # ------------------------------------------------------------------------------ steps
    def _seed_step(self, batch_idx: int, salt: int) -> None:
        torch.manual_seed(mix_seed(self.cfg.trainer.seed, self.current_epoch, batch_idx, salt))

    def _step_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        return step_loss(
            self.model,
            batch,
            self.sensor_names,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
            per_rank_mim=self.cfg.trainer.mim_per_rank,
        )

    def on_train_epoch_end(self) -> None:
        # Resumed from a checkpoint written at an epoch's end with validation on and max_steps set,
        # Lightning 2.6 replays that epoch's end as an empty epoch and counts it as processed a
        # second time: the resumed run stopped an epoch early (issue 14.1). Between the processed and
        # the completed increments of an epoch's end they differ by exactly one in every consistent
        # state; restore that before the checkpoint callbacks (which run after this hook) save it.
        progress = self.trainer.fit_loop.epoch_progress
        counters: list[Any] = [progress.current, progress.total]  # _ProcessedTracker
        for counts in counters:
            if counts.processed > counts.completed + 1:
                counts.processed = counts.completed + 1

    def on_fit_start(self) -> None:
        if self.cfg.trainer.bf16_weight_copies and self.trainer.world_size > 1:
            raise ConfigError(
                "trainer.bf16_weight_copies=true runs on one device only (DDP reduces the gradients of "
                f"the module's own parameters), here {self.trainer.world_size} processes; set it to false"
            )
        if not self.cfg.trainer.mim_per_rank and getattr(self.model.config, "w_mim", 0) > 0:
            check_gather_possible(self.trainer.world_size)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self._seed_step(batch_idx, 0x7A11)
        if self.cfg.trainer.bf16_weight_copies:
            if self.weight_copies is None:
                self.weight_copies = Bf16WeightCopies(model=self.model)
            with self.weight_copies.swapped():  # the backward hands fp32 gradients to the masters
                loss, terms = self._step_loss(batch)
        else:
            loss, terms = self._step_loss(batch)
        self._check_finite(loss, terms, batch_idx)
        n = batch[self.sensor_names[0]].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(mix_seed(self.cfg.trainer.seed, batch_idx, 0x7A12))
            loss, terms = self._step_loss(batch)
        n = batch[self.sensor_names[0]].shape[0]
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=n)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"val/{name}", value, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def _check_finite(self, loss: Tensor, terms: dict[str, Tensor], batch_idx: int) -> None:
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.world_size > 1:  # every rank must stop together, or DDP hangs
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise NonFiniteLossError(
                f"loss is {float(loss.detach()):.4g} (not finite) at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); terms: {parts}. The step was not applied "
                "and no checkpoint of this state was written. Lower optim.lr, use trainer.precision=32 or "
                "check the data."
            )
        self.last_loss = loss.detach()  # a tensor: reading it later costs no sync now

    def on_train_start(self) -> None:
        if self.weight_copies is not None:  # a checkpoint may have been loaded since they were made
            self.weight_copies.stale = True

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.weight_copies is not None:  # refreshed from the new masters before the next forward
            self.weight_copies.stale = True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        # 16-mixed: inf gradients are expected now and then; the GradScaler skips those steps.
        if self.cfg.trainer.precision != "16-mixed" and not bool(torch.isfinite(norm)):
            raise NonFiniteLossError(
                f"gradient norm is {float(norm)} at step {self.global_step} (epoch "
                f"{self.current_epoch}); the step was not applied and no checkpoint of this state was "
                "written. Lower optim.lr or set trainer.gradient_clip_val."
            )

    # --------------------------------------------------------------------- optimisation
    def global_batch(self) -> int:
        t = self.trainer
        dm = getattr(t, "datamodule", None)
        per_rank = getattr(dm, "batch_size", None) or self.cfg.data.batch_size
        return int(per_rank) * t.world_size * t.accumulate_grad_batches

    def schedule_steps(self) -> tuple[int, int]:
        """(total optimiser steps, steps per epoch), from the DataModule, without building loaders.

        (Lightning's ``estimated_stepping_batches`` would build the train loader before a resumed
        checkpoint's data position is restored.)
        """
        t = self.trainer
        batches = getattr(t, "datamodule").batches_per_epoch()  # noqa: B009
        limit = t.limit_train_batches
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif limit is not None and limit < 1.0:
            batches = int(batches * limit)
        per_epoch = max(1, math.ceil(batches / t.accumulate_grad_batches))
        by_epochs = per_epoch * t.max_epochs if t.max_epochs and t.max_epochs > 0 else None
        total = [v for v in (by_epochs, t.max_steps if t.max_steps > 0 else None) if v is not None]
        return (min(total) if total else per_epoch), per_epoch

    def configure_optimizers(self) -> Any:
        self.peak_lr = scaled_lr(self.cfg.optim, self.global_batch())
        opt = build_optimizer(self.model, self.cfg.optim, lr=self.peak_lr, device_type=self.device.type)
        total, per_epoch = self.schedule_steps()
        fn = lr_lambda(self.cfg.schedule, total_steps=total, steps_per_epoch=per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        log.info(
            "AdamW peak lr %.3g (global batch %d), %d steps (%d per epoch)",
            self.peak_lr,
            self.global_batch(),
            total,
            per_epoch,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ---------------------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.weight_copies is not None:  # the fp32 masters are about to be replaced
            self.weight_copies.stale = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from csmae.version import __version__

        cfg = getattr(self.model, "config", None)
        checkpoint["csmae"] = {
            "version": __version__,
            "model_config": cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else None,
            "fit_config": self.cfg.to_dict(),
        }
