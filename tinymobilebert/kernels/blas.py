"""An accumulating matrix product, ``c += a @ b``, through the BLAS NumPy already loaded.

NumPy's ``matmul`` can only write a fresh result, so ``dW += dy.T @ x`` allocates a temporary the
size of the weight and reads and writes it again to add it; the MLM head's second product (a
[tokens, vocabulary] temporary, 125 MB at the paper size) does the same. BLAS's gemm computes
``C = alpha A B + beta C`` in place; with beta = 1 the temporary and its extra pass disappear.

NumPy wheels bundle OpenBLAS as ``libscipy_openblas64_`` (64-bit integers, symbols
``scipy_cblas_{s,d}gemm64_``); where that library or symbol is not found (another BLAS, another
build) every call falls back to the twin, ``c += a @ b``, which computes the same thing.
Operands may be any 2-D views whose rows (or, for a transposed view, columns) are contiguous,
e.g. ``dy.T`` or ``t[:, :E]``: they are passed with BLAS's transpose flags and leading
dimensions, without copies.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

from ._jit import kernel

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _load_gemm():
    """{dtype: cblas gemm function} from NumPy's bundled OpenBLAS, or {} when not found."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    paths = sorted(glob.glob(os.path.join(root, "numpy.libs", "libscipy_openblas64_*")) +
                   glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "libscipy_openblas64_*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            found = {np.dtype(np.float32): lib.scipy_cblas_sgemm64_, np.dtype(np.float64): lib.scipy_cblas_dgemm64_}
        except (OSError, AttributeError):
            continue
        i64, i32 = ctypes.c_int64, ctypes.c_int
        for dtype, fn in found.items():
            real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
            fn.argtypes = [i32, i32, i32, i64, i64, i64, real, ctypes.c_void_p, i64, ctypes.c_void_p, i64,
                           real, ctypes.c_void_p, i64]
            fn.restype = None
        return found
    return {}


_GEMM = _load_gemm()


def _operand(x):
    """(transpose flag, leading dimension) for a 2-D view, or None if BLAS cannot read it as is."""
    item = x.itemsize
    rows, cols = x.shape
    if x.strides[1] == item and x.strides[0] >= max(cols, 1) * item and x.strides[0] % item == 0:
        return _NO_TRANS, x.strides[0] // item
    if x.strides[0] == item and x.strides[1] >= max(rows, 1) * item and x.strides[1] % item == 0:
        return _TRANS, x.strides[1] // item  # the transpose of a row-major matrix
    return None


def gemm_accumulate_numpy(a, b, c):
    """c += a @ b, in place. a (M, K), b (K, N), c (M, N)."""
    c += a @ b


@kernel(twin=gemm_accumulate_numpy)
def gemm_accumulate(a, b, c):
    """c += a @ b, in place. a (M, K), b (K, N), c (M, N) with contiguous rows."""
    fn = _GEMM.get(c.dtype)
    M, K = a.shape
    N = b.shape[1]
    if fn is None or a.dtype != c.dtype or b.dtype != c.dtype or M == 0 or N == 0 or K == 0:
        gemm_accumulate_numpy(a, b, c)
        return
    pa, pb, pc = _operand(a), _operand(b), _operand(c)
    if pa is None:
        a, pa = np.ascontiguousarray(a), (_NO_TRANS, K)
    if pb is None:
        b, pb = np.ascontiguousarray(b), (_NO_TRANS, N)
    if pc is None or pc[0] != _NO_TRANS:
        gemm_accumulate_numpy(a, b, c)
        return
    fn(_ROW_MAJOR, pa[0], pb[0], M, N, K, 1.0, a.ctypes.data, pa[1], b.ctypes.data, pb[1], 1.0, c.ctypes.data, pc[1])


def blas_available() -> bool:
    """Whether ``gemm_accumulate`` reaches BLAS (False: it runs its NumPy twin)."""
    return bool(_GEMM)
