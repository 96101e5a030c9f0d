"""Dropout: the kernel equals its NumPy twin, the mask statistics are right, and p = 0 is the identity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.blocks.dropout import dropout_backward, dropout_forward
from tinymobilebert.kernels.dropout import dropout_apply, dropout_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(n=st.integers(1, 300_000), p=st.sampled_from([0.05, 0.1, 0.5, 0.9]), seed=st.integers(0, 2**31 - 1))
def test_kernels_equal_twins(dtype, n, p, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    u = rng.random(n, dtype=dtype)
    y1, k1 = dropout_apply.numba(x, u, p, 1 / (1 - p))
    y2, k2 = dropout_apply.numpy(x, u, p, 1 / (1 - p))
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(y1, y2)  # the same single product per element
    dy = rng.standard_normal(n).astype(dtype)
    np.testing.assert_array_equal(dropout_grad.numba(dy, k1, 1 / (1 - p)), dropout_grad.numpy(dy, k2, 1 / (1 - p)))


def test_statistics_and_identity():
    rng = np.random.default_rng(0)
    x = np.ones((400, 500), np.float32)
    y, mask = dropout_forward(x, 0.1, rng)
    assert mask.keep.dtype == np.uint8 and abs(1 - mask.keep.mean() - 0.1) < 0.003
    assert np.allclose(y[mask.keep == 1], 1 / 0.9) and np.all(y[mask.keep == 0] == 0)
    assert abs(y.mean() - 1) < 0.01  # unbiased
    dx = dropout_backward(np.ones_like(x), mask)
    np.testing.assert_array_equal(dx, y)
    same, none = dropout_forward(x, 0.0, rng)
    assert same is x and none is None and dropout_backward(x, None) is x
    assert dropout_forward(x, 0.3, None)[1] is None  # eval mode
