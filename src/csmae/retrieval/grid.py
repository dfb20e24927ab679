"""Retrieval grids: the query on the left, the top-k on the right, one row per query.

S2 is shown in true colour and S1 in false colour (VV, VH, VV-VH) via :func:`csmae.sensors.display_rgb`;
under each tile: a sensor badge (in the sensor spec's ``badge_colour``), the score and the labels
shared with the query.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csmae.sensors import SENSORS

#: Badge colour of a sensor the package does not know.
UNKNOWN_SENSOR_COLOUR = "#444444"


def badge_colour(sensor: str) -> str:
    """The badge colour of a sensor name, from its :class:`csmae.sensors.Sensor` spec."""
    spec = SENSORS.get(sensor)
    return spec.badge_colour if spec is not None else UNKNOWN_SENSOR_COLOUR


@dataclass
class Tile:
    """One picture of the grid."""

    rgb: np.ndarray | None  # (H, W, 3) in [0, 1]; None draws a placeholder
    sensor: str
    title: str  # first line under the tile (id or rank + score)
    lines: list[str] = field(default_factory=list)  # further lines (labels, overlap)
    relevant: bool | None = None  # frame colour: green relevant, red not, none unknown


def _short(label: str, width: int = 22) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _clip(text: str, width: int) -> str:
    """Keep the end of long ids (their distinctive part)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def overlap_lines(overlap: Sequence[str], n_query: int | None, max_lines: int = 2) -> list[str]:
    head = f"shared {len(overlap)}/{n_query}" if n_query is not None else f"shared {len(overlap)}"
    body = [_short(x) for x in overlap[:max_lines]]
    if len(overlap) > max_lines:
        body[-1] += f" +{len(overlap) - max_lines}"
    return [head, *body]


def draw_grid(
    rows: Sequence[tuple[Tile, Sequence[Tile]]],
    out: str | os.PathLike[str],
    *,
    title: str | None = None,
    tile_inches: float = 1.9,
    dpi: int = 110,
) -> Path:
    """Draw query rows (query tile, result tiles) into a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not rows:
        raise ValueError("nothing to draw: no query rows")
    ncols = 1 + max(len(r[1]) for r in rows)
    nrows = len(rows)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(tile_inches * ncols, (tile_inches + 0.75) * nrows), squeeze=False
    )
    for r, (query, results) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            tile = query if c == 0 else (results[c - 1] if c - 1 < len(results) else None)
            if tile is None:
                ax.axis("off")
                continue
            if tile.rgb is not None:
                ax.imshow(tile.rgb, interpolation="nearest")
            else:
                ax.set_facecolor("#dddddd")
                ax.text(0.5, 0.5, "no preview", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            colour = {True: "#2ca02c", False: "#d62728", None: "#888888"}[tile.relevant]
            if c == 0:
                colour = "#1f77b4"
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(3 if c == 0 else 2)
            ax.add_patch(
                Rectangle(
                    (0.0, 0.84),
                    0.24,
                    0.16,
                    transform=ax.transAxes,
                    color=badge_colour(tile.sensor),
                    clip_on=False,
                )
            )
            ax.text(
                0.12,
                0.92,
                tile.sensor.upper(),
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="white",
                fontsize=7,
                weight="bold",
            )
            text = "\n".join([_clip(tile.title, 34), *tile.lines])
            ax.set_xlabel(text, fontsize=6.5, linespacing=1.1)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, out)
    return out
