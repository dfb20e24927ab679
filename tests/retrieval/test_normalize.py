"""Row-wise L2 normalisation against a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.retrieval import normalize
from csmae.retrieval.normalize import l2_normalize, l2_normalize_inplace, row_norms


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_l2_normalize_equals_float64_reference_and_leaves_its_input(dtype):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 33)) * rng.uniform(1e-3, 1e3, size=(50, 1))).astype(dtype)
    x[7] = 0  # a zero row stays zero (no NaN)
    before = x.copy()
    y = l2_normalize(x)
    ref = x.astype(np.float32).astype(np.float64)
    norms = np.sqrt((ref**2).sum(1, keepdims=True))
    ref = np.divide(ref, norms, out=np.zeros_like(ref), where=norms > 0)
    assert y.dtype == np.float32 and y is not x
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-7)
    assert (y[7] == 0).all()
    assert np.array_equal(x, before)  # the input is not touched


def test_in_place_normalisation_gives_the_same_values_in_the_same_array():
    x = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
    want = l2_normalize(x)
    out = l2_normalize_inplace(x)
    assert out is x and np.array_equal(x, want)
    with pytest.raises(TypeError, match="float32"):
        l2_normalize_inplace(np.zeros((2, 2)))


@pytest.mark.parametrize("rows", [0, 1, 5, 64, 65, 200])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_row_norms_equal_numpy_norm_bit_for_bit_across_steps(monkeypatch, rows, dtype):
    """The stepped norm is np.linalg.norm(x, axis=1) exactly (the normalised vectors, and so every
    exact ranking, stay as they were), whether a step holds all rows, some, or a ragged last part."""
    monkeypatch.setattr(normalize, "NORM_ROWS", 64)
    rng = np.random.default_rng(rows)
    high = 3.0 if dtype == np.float16 else 1e2  # float16 squares overflow above ~9 x 768
    x = (rng.normal(size=(rows, 768)) * rng.uniform(1e-3, high, size=(rows, 1))).astype(dtype)
    want = np.linalg.norm(x, axis=1)
    got = row_norms(x)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(l2_normalize(x), np.array(x, np.float32) / np.maximum(
        np.linalg.norm(np.array(x, np.float32), axis=1, keepdims=True), 1e-12))
