"""The demo report's pictures: metric bars, retrieval grids, reconstructions, loss curves.

Grids use the retrieval package's drawer (:func:`csmae.retrieval.grid.draw_grid`); reconstructions
use the training package's picture panels. Every file is written atomically (temp + rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.grid import Tile, draw_grid, overlap_lines

SERIES_COLOURS = {"csmae": "#1b9e77", "mae": "#d95f02", "random": "#9e9e9e"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int = 110) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def pretty(direction: str) -> str:
    q, a = direction.split("->")
    return f"{q.upper()}→{a.upper() if a != 'mixed' else 'mixed'}"


def metric_bars(values: dict[str, dict[str, dict[str, float]]], titles: dict[str, str],
                directions: Sequence[str], out: Path, *, k: int) -> Path:
    """Grouped bars: one panel per metric (values[metric][series][direction]), series side by side."""
    plt = _plt()
    metrics = list(values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 3.8), squeeze=False)
    x = np.arange(len(directions))
    for ax, m in zip(axes[0], metrics):
        series = list(values[m])
        w = 0.8 / len(series)
        for j, s in enumerate(series):
            v = [values[m][s][d] for d in directions]
            bars = ax.bar(x + (j - (len(series) - 1) / 2) * w, v, w, label=titles[s],
                          color=SERIES_COLOURS.get(s))
            for b, val in zip(bars, v):
                ax.text(b.get_x() + b.get_width() / 2, val + 0.01, f"{val:.2f}", ha="center", va="bottom",
                        fontsize=6, rotation=90)
        ax.set_xticks(x, [pretty(d) for d in directions], fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_title(f"{m}@{k}", fontsize=10)
        ax.axvspan(1.5, 3.5, color="#f2f2f2", zorder=0)
        ax.text(2.5, 1.03, "cross-modal", ha="center", fontsize=7, color="#555")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, out)


class Previews:
    """Display images of dataset items (cached), S2 true colour and S1 false colour."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self._cache: dict[str, dict[str, Any]] = {}

    def rgb(self, pid: str, sensor: str) -> np.ndarray | None:
        from csmae.sensors import display_rgb

        if pid not in self._cache:
            self._cache[pid] = self.dataset.get(pid)
        smp = self._cache[pid]
        return display_rgb(smp[sensor], self.dataset.sensors[sensor]) if sensor in smp else None


def _short_labels(lab: np.ndarray, names: Sequence[str]) -> str:
    got = [names[int(c)] for c in np.flatnonzero(lab)]
    s = "; ".join(x[:16] for x in got[:2])
    return s + (f" +{len(got) - 2}" if len(got) > 2 else "")


def ranking_rows(res: Any, direction: str, query_rows: Sequence[int], previews: Previews, *, k: int,
                 tag: str) -> list[tuple[Tile, list[Tile]]]:
    """Grid rows (query tile, top-k tiles) of ``direction`` in a protocol result, for chosen queries."""
    qs, a_s = direction.split("->")
    scores, idx = res.rankings[direction]
    q, a = res.queries[qs], res.archives[a_s]
    names = q.label_names
    rows = []
    for qi in query_rows:
        ql = q.labels[qi]
        qt = Tile(previews.rgb(str(q.ids[qi]), qs), qs, f"{tag}: query", [_short_labels(ql, names)])
        tiles = []
        for rank, (s, j) in enumerate(zip(scores[qi][:k], idx[qi][:k]), 1):
            ov = [names[c] for c in np.flatnonzero(ql & a.labels[j])]
            tiles.append(Tile(previews.rgb(str(a.ids[j]), str(a.sensors[j])), str(a.sensors[j]),
                              f"#{rank} {s:.3f}", overlap_lines(ov, int(ql.sum()), 1), bool(ov)))
        rows.append((qt, tiles))
    return rows


def shrink_png(path: Path) -> Path:
    """Re-save a picture with a 256-colour palette (~4x smaller, so the self-contained HTML stays small)."""
    from PIL import Image

    with Image.open(path) as im:
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    tmp = path.with_name(f".{path.stem}.small-{os.getpid()}{path.suffix}")
    q.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path


def grid(rows: list[tuple[Tile, list[Tile]]], out: Path, title: str) -> Path:
    return shrink_png(draw_grid(rows, out, title=title, tile_inches=1.6, dpi=90))


def reconstructions(model_dir: Path, dataset: Any, n: int, seed: int, out: Path) -> Path:
    """Input, masked input and UMR/CMR reconstructions of ``n`` pairs (fixed masks)."""
    import torch

    from csmae.models import from_pretrained, normalize_batch
    from csmae.training.pictures import picture_panels, save_grid

    model = from_pretrained(model_dir)
    b = dataset.get_batch(np.arange(min(n, len(dataset))))
    batch = normalize_batch({s: b[s] for s in model.sensors}, model.sensors)
    g = torch.Generator().manual_seed(seed)
    m = next(iter(batch.values())).shape[0]
    noise = {s: torch.rand(m, model.config.num_patches, generator=g) for s in batch}
    with torch.no_grad():
        rec = model.reconstruct(batch, noise=noise)
    titles, rows = picture_panels(rec, model.sensors)
    cfg = model.config
    save_grid(out, titles, rows, suptitle=f"{cfg.name}: {cfg.mask_ratio:.0%} of the patches masked")
    return shrink_png(out)


def loss_curves(runs: dict[str, Path], titles: dict[str, str], out: Path) -> Path | None:
    """Training loss per step of each run (from its logs/metrics.csv)."""
    import pandas as pd

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    drawn = 0
    for key, run in runs.items():
        csv = run / "logs" / "metrics.csv"
        if not csv.is_file():
            continue
        df = pd.read_csv(csv)
        col = "train/loss_step" if "train/loss_step" in df else ("train/loss" if "train/loss" in df else None)
        if col is None:
            continue
        d = df[["step", col]].dropna()
        ax.plot(d["step"], d[col], marker=".", label=titles[key], color=SERIES_COLOURS.get(key))
        drawn += 1
    if not drawn:
        _plt().close(fig)
        return None
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)
