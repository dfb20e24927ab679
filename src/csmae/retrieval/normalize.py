"""Row-wise L2 normalisation (numpy only: ``csmae index`` and search never import torch for it)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    return l2_normalize_inplace(np.array(x, dtype=np.float32), eps)  # a float32 copy, normalised


def l2_normalize_inplace(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """:func:`l2_normalize` of a float32 array in place (the same values, no copy); returns ``x``."""
    if x.dtype != np.float32:
        raise TypeError(f"in-place normalisation needs float32, got {x.dtype}")
    np.divide(x, np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps), out=x)
    return x
