"""The one sample shape every reader produces, the dataset protocol, and shared helpers.

A sample is a plain dict (picklable, cheap to collate)::

    {
      "id": str,                        # S2 patch name (v1) / patch_id (v2): the pair's id
      "s1": float32 (2, 120, 120),      # dB, in the S1 sensor's band order     (if the source has S1)
      "s2": float32 (C, 120, 120),      # reflectance DN, S2 sensor band order  (if the source has S2)
      "labels": bool (19,),             # multi-hot, csmae.labels.LABELS_19 order
      "split": "train" | "val" | "test" | None,
      # optional metadata, when the source has it:
      "s1_name": str, "country": str, "season": str, "acquisition_date": str, ...
      # geo keys (csmae.geo.keys), from every reader of a source that knows them:
      "geometry": bytes | None,         # WKB polygon, EPSG:4326 (lon, lat); None = no georeferencing
      "crs": str | None,                # "EPSG:32633": native CRS of the patch grid (S2's, else S1's)
      "transform": tuple | None,        # affine (a, b, c, d, e, f) of the 120x120 grid
      "datetime": {"s1": str | None, "s2": str | None},   # ISO 8601 UTC "2017-06-13T10:10:31Z"
      "scene": {"s1": str | None, "s2": str | None},      # scene / product id per sensor
    }

The footprint is never invented: sources without georeferencing (LMDBs) give ``geometry`` None.

20 m (and 60 m) bands are upsampled to 120x120 with bicubic interpolation, align_corners=True,
through :func:`upsample_band` so that every reader (and the prepared store) gives identical pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from csmae.errors import DataError as DataError
from csmae.labels import LABELS_19
from csmae.sensors import IMAGE_SIZE, Sensor

Sample = dict[str, Any]


def upsample_band(band: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bicubic upsampling (align_corners=True) of one (h, w) band to (size, size) float32.

    Identity (as float32) for bands already at ``size``.
    """
    if band.shape == (size, size):
        return band.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(band, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=True)
    return out[0, 0].numpy()


def upsample_stack(bands: Sequence[np.ndarray], size: int = IMAGE_SIZE) -> np.ndarray:
    """Stack bands of mixed native sizes into (C, size, size) float32, upsampling where needed.

    Bands of the same native size are interpolated together in one call (same result as per band).
    """
    out = np.empty((len(bands), size, size), dtype=np.float32)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(bands):
        groups.setdefault(tuple(b.shape), []).append(i)  # type: ignore[arg-type]
    for shape, idx in groups.items():
        if shape == (size, size):
            for i in idx:
                out[i] = bands[i]
            continue
        t = torch.from_numpy(np.stack([np.asarray(bands[i], dtype=np.float32) for i in idx]))[None]
        up = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=True)[0].numpy()
        out[idx] = up
    return out


def check_band(arr: np.ndarray, *, band: str, expected_side: int, patch: str, path: str) -> None:
    """Raise :class:`DataError` for a band of the wrong shape or type, or with NaN/inf pixels."""
    if arr.dtype.kind not in "uif":  # complex, bool, object...: casting would drop data silently
        what = "complex-valued" if arr.dtype.kind == "c" else f"of type {arr.dtype}"
        raise DataError(f"band {band} is {what} ({arr.dtype}); expected real numbers (an integer or "
                        "float image)", patch=patch, path=path)
    if arr.shape != (expected_side, expected_side):
        raise DataError(
            f"band {band} has shape {tuple(arr.shape)}, expected ({expected_side}, {expected_side})",
            patch=patch, path=path,
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n = int((~np.isfinite(arr)).sum())
        raise DataError(f"band {band} has {n} NaN/inf pixel(s)", patch=patch, path=path)


class PairedDataset:
    """Base class of every reader: random access to samples by index or by id.

    Subclasses set ``self._ids`` (list of pair ids), ``self.sensors`` (name -> Sensor, only the
    sensors this dataset yields) and implement :meth:`load` (id -> Sample).
    """

    label_names: tuple[str, ...] = LABELS_19
    source: str = ""
    kind: str = ""

    def __init__(self, *, ids: Sequence[str], sensors: Mapping[str, Sensor], source: str = ""):
        self._ids = list(ids)
        self.sensors: dict[str, Sensor] = dict(sensors)
        self.source = source
        self._index = {pid: i for i, pid in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            seen: set[str] = set()
            dup = next(p for p in self._ids if p in seen or seen.add(p))  # type: ignore[func-returns-value]
            raise DataError(f"duplicate patch id {dup!r}", path=source)

    @property
    def ids(self) -> list[str]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} pairs")
        return self.load(self._ids[i])

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def get(self, patch_id: str) -> Sample:
        if patch_id not in self._index:
            raise KeyError(f"no patch {patch_id!r} in {self.source or type(self).__name__}")
        return self.load(patch_id)

    def index_of(self, patch_id: str) -> int:
        return self._index[patch_id]

    def load(self, patch_id: str) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def splits(self) -> list[str | None]:
        """Split of every pair in ``ids`` order (cheap: from metadata, no pixels read)."""
        return [None] * len(self)

    def __repr__(self) -> str:
        sens = ", ".join(f"{k}:{len(v.bands)}b" for k, v in self.sensors.items())
        return f"{type(self).__name__}({len(self)} pairs, {sens}, source={self.source!r})"
