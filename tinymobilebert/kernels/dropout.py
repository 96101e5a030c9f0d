"""Dropout kernels: apply a Bernoulli mask drawn from uniforms, and its backward pass.

    keep = u >= p          u ~ U[0, 1) from the caller's generator (so runs are reproducible)
    y    = x * scale where keep, else 0,      scale = 1 / (1 - p)
    dx   = dy * scale where keep, else 0

The mask is kept as one byte per element for the backward pass (a float mask would be four).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, model_work, run_rows

_NS_PER_ELEMENT = 0.5  # one pass, memory-bound: split over threads only past ~2M elements


def dropout_apply_numpy(x, u, p, scale):
    """(y, keep) for x and u of the same shape; keep is uint8."""
    keep = (u >= x.dtype.type(p)).astype(np.uint8)
    return x * keep * x.dtype.type(scale), keep


def dropout_grad_numpy(dy, keep, scale):
    """dx for dy and the forward pass's keep mask."""
    return dy * keep * dy.dtype.type(scale)


@jit
def _apply_rows(x, u, p, scale, y, keep, start, stop, chunk):
    p_t = x.dtype.type(p)
    s_t = x.dtype.type(scale)
    zero = x.dtype.type(0)
    xs, us, ys, ks = x[start:stop], u[start:stop], y[start:stop], keep[start:stop]
    # zero-based indices (no wraparound check) and selects in x's dtype (uint8 arithmetic would
    # promote to float64): both needed for the loop to vectorise
    for i in range(stop - start):
        k = us[i] >= p_t
        ks[i] = k
        ys[i] = xs[i] * (s_t if k else zero)


@kernel(twin=dropout_apply_numpy)
def dropout_apply(x, u, p, scale):
    """(y, keep) for x and u of the same shape; keep is uint8."""
    xf = np.ascontiguousarray(x).reshape(-1)
    uf = np.ascontiguousarray(u).reshape(-1)
    y = np.empty_like(xf)
    keep = np.empty(xf.size, np.uint8)
    run_rows(_apply_rows, xf.size, model_work(_NS_PER_ELEMENT), xf, uf, float(p), float(scale), y, keep)
    return y.reshape(x.shape), keep.reshape(x.shape)


@jit
def _grad_rows(dy, keep, scale, dx, start, stop, chunk):
    s_t = dy.dtype.type(scale)
    zero = dy.dtype.type(0)
    dys, ks, dxs = dy[start:stop], keep[start:stop], dx[start:stop]
    for i in range(stop - start):
        dxs[i] = dys[i] * (s_t if ks[i] != 0 else zero)


@kernel(twin=dropout_grad_numpy)
def dropout_grad(dy, keep, scale):
    """dx for dy and the forward pass's keep mask."""
    dyf = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(dyf)
    run_rows(_grad_rows, dyf.size, model_work(_NS_PER_ELEMENT), dyf, np.ascontiguousarray(keep).reshape(-1),
             float(scale), dx)
    return dx.reshape(dy.shape)
