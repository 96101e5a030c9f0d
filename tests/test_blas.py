"""gemm_accumulate (BLAS gemm with beta = 1) equals its twin ``c += a @ b`` for every operand layout."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.kernels.blas import blas_available, gemm_accumulate


def layouts(x, how, rng):
    """The same matrix as a row-major array, a transposed view, or a view of wider rows."""
    if how == "rows":
        return np.ascontiguousarray(x)
    if how == "transposed":
        return np.ascontiguousarray(x.T).T
    wide = rng.standard_normal((x.shape[0], x.shape[1] + 3)).astype(x.dtype)
    wide[:, 2:2 + x.shape[1]] = x
    return wide[:, 2:2 + x.shape[1]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(M=st.integers(0, 70), K=st.integers(0, 70), N=st.integers(0, 70), seed=st.integers(0, 2**31 - 1),
       la=st.sampled_from(["rows", "transposed", "slice"]), lb=st.sampled_from(["rows", "transposed", "slice"]),
       lc=st.sampled_from(["rows", "slice"]))
def test_equals_twin(dtype, M, K, N, seed, la, lb, lc):
    rng = np.random.default_rng(seed)
    a = layouts(rng.standard_normal((M, K)).astype(dtype), la, rng)
    b = layouts(rng.standard_normal((K, N)).astype(dtype), lb, rng)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    c1 = layouts(c0.copy(), lc, rng)
    c2 = c0.copy()
    gemm_accumulate.numba(a, b, c1)
    gemm_accumulate.numpy(a, b, c2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c1, c2, rtol=tol, atol=tol * max(K, 1))


def test_blas_is_found_here():
    """On a NumPy wheel with its bundled OpenBLAS the fast path is taken (elsewhere: the twin)."""
    import numpy

    if "scipy-openblas" not in str(numpy.show_config(mode="dicts")):
        pytest.skip("this NumPy has no bundled scipy-openblas")
    assert blas_available()
