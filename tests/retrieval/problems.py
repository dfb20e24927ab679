"""Search problems shared by the exact top-k property tests."""

from __future__ import annotations

import numpy as np


def tie_problem(seed: int, nq: int, na: int, d: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nq, d) queries and (na, d) archive of small integers (exact scores, many ties), and (nq, 2)
    archive rows each query excludes (-1: none)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (nq, d)).astype(np.float32)
    a = rng.integers(-2, 3, (na, d)).astype(np.float32)
    return q, a, rng.integers(-1, na, (nq, 2))
