"""Row-wise L2 normalisation (numpy only: ``csmae index`` and search never import torch for it)."""

from __future__ import annotations

import numpy as np

#: rows per step of :func:`row_norms` (its temporary is this many rows, not the whole array)
NORM_ROWS = 4096


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    return l2_normalize_inplace(np.array(x, dtype=np.float32), eps)  # a float32 copy, normalised


def l2_normalize_inplace(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """:func:`l2_normalize` of a float32 array in place (the same values, no copy); returns ``x``."""
    if x.dtype != np.float32:
        raise TypeError(f"in-place normalisation needs float32, got {x.dtype}")
    np.divide(x, np.maximum(row_norms(x), eps)[:, None], out=x)
    return x


def row_norms(x: np.ndarray) -> np.ndarray:
    """``np.linalg.norm(x, axis=1)`` of a 2-D array, bit for bit, :data:`NORM_ROWS` rows at a time.

    ``np.linalg.norm`` squares the whole array into a temporary first (as large as ``x``: fresh
    memory, page faults); each row's squares are summed by the same reduction here, so the result
    is identical with a temporary of a few MB (125,866 x 768 float32: 0.072 -> 0.037 s on a warm
    heap; np.linalg.norm took 0.35 s a call inside the evaluation, its temporary fresh memory).
    """
    n = x.shape[0]
    out = np.empty(n, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    step = max(1, min(NORM_ROWS, n))
    sq = np.empty((step,) + x.shape[1:], dtype=out.dtype)
    for lo in range(0, n, step):
        part = x[lo : lo + step]
        np.multiply(part, part, out=sq[: len(part)])
        np.add.reduce(sq[: len(part)], axis=1, out=out[lo : lo + len(part)])
    return np.sqrt(out, out=out)
