"""Previews of archive items: their raw samples, display RGB and PNG bytes, from the dataset.

:class:`ArchivePreviews` opens the dataset sources an index was built from (or others given)
lazily, on the first preview, and draws images with :func:`csmae.sensors.display_rgb` (S2 true
colour, S1 VV/VH/ratio false colour). Result grids of hits are drawn by :mod:`csmae.retrieval.grid`
and :func:`csmae.retrieval.report.grid_for_hits` from these pictures.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


class ArchivePreviews:
    """Pictures of archive items from the dataset sources.

    Args:
        sources: dataset source paths (BigEarthNet folders, LMDB, store); empty: no previews.
        sensors: the sensors to open the dataset with (those of the index).
    """

    def __init__(self, sources: Sequence[str | os.PathLike[str]] | None, *, sensors: Sequence[str]):
        self.sources = [str(d) for d in sources] if sources else []
        self.sensors = list(sensors)
        self._dataset: Any = None

    @property
    def dataset(self) -> Any:
        """The dataset, opened on first use."""
        if self._dataset is None:
            if not self.sources:
                raise ValueError("previews need the dataset: pass data=<dataset source path(s)>")
            from csmae.data import open_dataset

            self._dataset = open_dataset(*self.sources, sensors=tuple(self.sensors))
        return self._dataset

    def sample(self, patch_id: str) -> dict[str, Any]:
        """The raw sample of an archive pair."""
        return self.dataset.get(patch_id)

    def preview_rgb(self, patch_id: str, sensor: str) -> np.ndarray:
        """(H, W, 3) float image in [0, 1] of one archive image."""
        from csmae.sensors import display_rgb

        smp = self.sample(patch_id)
        if sensor not in smp:
            raise ValueError(f"patch {patch_id!r} has no {sensor!r} image in the dataset")
        return display_rgb(smp[sensor], self.dataset.sensors[sensor])

    def preview_png(self, patch_id: str, sensor: str) -> bytes:
        """PNG bytes of an archive image (S2 true colour, S1 VV/VH/ratio false colour)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        plt.imsave(buf, self.preview_rgb(patch_id, sensor), format="png")
        return buf.getvalue()
