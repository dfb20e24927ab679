"""Optional callback: retrieval metrics (method.md section 7) on a validation subset every N epochs.

The first ``max_samples`` validation pairs are embedded without masking; the first half are the
queries, the second half the archive (disjoint, so no self-matches). Every direction between the
model's sensors is scored with ``csmae.retrieval.evaluate`` and logged as
``retrieval/<query>-<archive>/<metric>@<k>``. Runs on global rank 0 only.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

log = logging.getLogger(__name__)


def _evaluate_fn() -> Any:
    try:
        from csmae.retrieval import evaluate
    except ImportError:
        return None
    return evaluate


@torch.no_grad()
def embed_dataset(
    model: Any, ds: Any, n: int, *, batch_size: int, device: torch.device
) -> tuple[dict, np.ndarray]:
    """{sensor: (n, D) float32, L2-normalised} and labels (n, 19) of the first ``n`` items of ``ds``."""
    from csmae.training.datamodule import _normalize

    feats: dict[str, list[np.ndarray]] = {s: [] for s in ds.sensors}
    labels = []
    for start in range(0, n, batch_size):
        raw = ds.raw_batch(list(range(start, min(n, start + batch_size))))
        inputs = {s: t.to(device) for s, t in _normalize(raw, ds.sensors).items()}
        out = model.embed(inputs)
        for s in feats:
            z = torch.nn.functional.normalize(out[s].float(), dim=-1)
            feats[s].append(z.cpu().numpy())
        labels.append(np.asarray(raw["labels"], dtype=bool))
    return {s: np.concatenate(v) for s, v in feats.items()}, np.concatenate(labels)


class RetrievalMetrics(pl.Callback):
    """Logs retrieval metrics every ``every_n_epochs`` epochs (see the module docstring)."""

    def __init__(
        self,
        *,
        every_n_epochs: int,
        max_samples: int = 2000,
        ks: tuple[int, ...] = (5, 10),
        batch_size: int = 128,
    ):
        self.every_n_epochs = every_n_epochs
        self.max_samples = max_samples
        self.ks = tuple(ks)
        self.batch_size = batch_size
        self._warned = False
        self.last: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs <= 0 or (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        evaluate = _evaluate_fn()
        ds = getattr(getattr(trainer, "datamodule", None), "val_set", None)
        if evaluate is None or ds is None:
            if not self._warned:
                log.warning(
                    "retrieval callback skipped: %s",
                    "csmae.retrieval.evaluate is not available"
                    if evaluate is None
                    else "no validation set (data.val_split / data.val_ids)",
                )
                self._warned = True
            return
        n = min(len(ds), self.max_samples)
        if n < 4:
            log.warning("retrieval callback skipped: only %d validation pairs", n)
            return
        model: Any = getattr(pl_module, "model")  # noqa: B009
        was_training = model.training
        model.eval()
        try:
            feats, labels = embed_dataset(model, ds, n, batch_size=self.batch_size, device=pl_module.device)
        finally:
            model.train(was_training)
        half = n // 2
        metrics: dict[str, float] = {}
        for q in feats:
            for a in feats:
                res = evaluate(feats[q][:half], labels[:half], feats[a][half:], labels[half:], ks=self.ks)
                for metric, by_k in res.items():
                    for k, value in by_k.items():
                        metrics[f"retrieval/{q}-{a}/{metric}@{k}"] = float(value)
        self.last = metrics
        for key, value in metrics.items():
            pl_module.log(key, value, rank_zero_only=True, on_epoch=True)
        log.info(
            "retrieval at epoch %d: %s",
            epoch,
            ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "/map@" in k),
        )
