"""Per-epoch reconstruction pictures: input, masked input, UMR and CMR outputs of a fixed batch.

One row per pair; for every target sensor the columns are its input, its masked input and the
reconstruction from each source sensor (S2 in true colour, S1 as the VV/VH/ratio false colour of
:func:`csmae.sensors.display_rgb`). The same pairs and masks are used every epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from csmae.atomic import atomic_path
from csmae.sensors import Sensor, display_rgb

log = logging.getLogger(__name__)


def _rgb(raw: np.ndarray, spec: Sensor, ref: np.ndarray | None) -> np.ndarray:
    """display_rgb, but S2-like sensors use the stretch of ``ref`` (the row's input) for every panel."""
    if spec.name == "s1" or ref is None:
        return display_rgb(raw, spec)
    chans = [spec.index(b) for b in spec.display]
    ref_rgb = ref[chans]
    finite = ref_rgb[np.isfinite(ref_rgb)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    return np.clip((np.moveaxis(raw[chans], 0, -1) - lo) / (hi - lo), 0, 1).astype(np.float32)


def picture_panels(
    rec: dict[str, Any], sensors: dict[str, Sensor]
) -> tuple[list[str], list[list[np.ndarray]]]:
    """Column titles and rows of (H, W, 3) images from ``model.reconstruct`` output (normalised units).

    Per target sensor: input, masked input, the UMR output (same source), then the CMR outputs.
    """
    titles: list[str] = []
    columns: list[list[np.ndarray]] = []
    preds = rec.get("pred", {})
    for tgt in sensors:
        if tgt not in rec.get("input", {}):
            continue
        spec = sensors[tgt]
        sources = [tgt] + [s for s in sensors if s != tgt]
        entries = [
            (f"{tgt.upper()} input", rec["input"][tgt]),
            (f"{tgt.upper()} masked", rec.get("masked", {}).get(tgt)),
        ]
        entries += [
            (f"{'UMR' if src == tgt else 'CMR'} {src.upper()}->{tgt.upper()}", preds[(src, tgt)])
            for src in sources
            if (src, tgt) in preds
        ]
        ref = [spec.denormalize(a) for a in _numpy(rec["input"][tgt])]
        for title, imgs in entries:
            if imgs is None:
                continue
            titles.append(title)
            columns.append([_rgb(spec.denormalize(a), spec, ref[i]) for i, a in enumerate(_numpy(imgs))])
    n = len(columns[0]) if columns else 0
    rows = [[col[i] for col in columns] for i in range(n)]
    return titles, rows


def _numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)


def save_grid(path: Path, titles: list[str], rows: list[list[np.ndarray]], *, suptitle: str = "") -> None:
    """Write the grid as a PNG atomically (temp file + rename)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncol, nrow = len(titles), len(rows)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.6 * ncol, 1.7 * nrow + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class ReconstructionPictures(pl.Callback):
    """Saves ``pictures/epoch-XXX.png`` every ``every_n_epochs`` epochs (global rank 0 only).

    Args:
        out_dir: folder of the PNGs.
        n_samples: pairs shown (the first ones of the validation set, or of the training set).
        every_n_epochs: how often.
        seed: seed of the masks (fixed across epochs).
    """

    def __init__(self, out_dir: str | Path, *, n_samples: int = 4, every_n_epochs: int = 1, seed: int = 0):
        self.out_dir = Path(out_dir)
        self.n_samples = n_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self._batch: dict[str, torch.Tensor] | None = None

    def _fixed_batch(self, trainer: pl.Trainer) -> dict[str, torch.Tensor] | None:
        if self._batch is None:
            dm = getattr(trainer, "datamodule", None)
            ds = getattr(dm, "val_set", None) or getattr(dm, "train_set", None)
            if ds is None or len(ds) == 0:
                return None
            from csmae.training.datamodule import _normalize

            raw = ds.raw_batch(list(range(min(self.n_samples, len(ds)))))
            self._batch = _normalize(raw, ds.sensors)
        return self._batch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or self.every_n_epochs <= 0 or (epoch + 1) % self.every_n_epochs:
            return
        model: Any = getattr(pl_module, "model")  # noqa: B009
        if not hasattr(model, "reconstruct") or getattr(model, "decoder", True) is None:
            return  # e.g. the dual encoder: nothing to picture
        batch = self._fixed_batch(trainer)
        if batch is None:
            return
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                inputs = {s: t.to(pl_module.device) for s, t in batch.items()}
                noise_gen = torch.Generator().manual_seed(self.seed)
                n = next(iter(inputs.values())).shape[0]
                num_tokens = getattr(getattr(model, "config", None), "num_patches", 64)
                noise = {
                    s: torch.rand(n, num_tokens, generator=noise_gen).to(pl_module.device) for s in inputs
                }
                rec = model.reconstruct(inputs, noise=noise)
            titles, rows = picture_panels(rec, model.sensors)
            if rows:
                path = self.out_dir / f"epoch-{epoch:03d}.png"
                save_grid(path, titles, rows, suptitle=f"epoch {epoch}, step {trainer.global_step}")
                log.info("wrote %s", path)
        finally:
            model.train(was_training)
