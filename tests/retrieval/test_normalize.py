"""Row-wise L2 normalisation against a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.retrieval.normalize import l2_normalize, l2_normalize_inplace


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
