"""The LightningModule: the model's own ``training_loss``, AdamW and the per-step schedule.

Randomness inside a step (mask noise, anything else drawn from torch's global generators) is
re-seeded from ``(seed, epoch, batch index, rank)`` at the start of every training step, so a
resumed run draws exactly what an uninterrupted one would, without carrying RNG state around.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from csmae.training.config import FitConfig
from csmae.training.datamodule import model_inputs
from csmae.training.optim import build_optimizer, lr_lambda, scaled_lr
from csmae.training.sampler import mix_seed

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient) became NaN/inf; the step was not applied."""


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

    # ------------------------------------------------------------------------------ steps
    def _seed_step(self, batch_idx: int, salt: int) -> None:
        torch.manual_seed(
            mix_seed(self.cfg.trainer.seed, self.current_epoch, batch_idx, self.global_rank, salt)
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self._seed_step(batch_idx, 0x7A11)
        loss, terms = self.model.training_loss(model_inputs(batch, self.sensor_names))
        self._check_finite(loss, terms, batch_idx)
        n = batch[self.sensor_names[0]].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(mix_seed(self.cfg.trainer.seed, batch_idx, self.global_rank, 0x7A12))
            loss, terms = self.model.training_loss(model_inputs(batch, self.sensor_names))
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
        return self.cfg.data.batch_size * t.world_size * t.accumulate_grad_batches

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
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from csmae import __version__

        cfg = getattr(self.model, "config", None)
        checkpoint["csmae"] = {
            "version": __version__,
            "model_config": cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else None,
            "fit_config": self.cfg.to_dict(),
        }
