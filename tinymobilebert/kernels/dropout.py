"""Dropout kernels: apply a Bernoulli mask drawn from uniforms, and its backward pass.

    keep = u >= p          u ~ U[0, 1) from the caller's generator (so runs are reproducible)
    y    = x * scale where keep, else 0,      scale = 1 / (1 - p)
    dx   = dy * scale where keep, else 0

The mask is kept as one byte per element for the backward pass (a float mask would be four).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, run_rows


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
    for i in range(start, stop):
        k = u[i] >= p_t
        keep[i] = k
        y[i] = x[i] * s_t if k else zero


@kernel(twin=dropout_apply_numpy)
def dropout_apply(x, u, p, scale):
    """(y, keep) for x and u of the same shape; keep is uint8."""
    xf = np.ascontiguousarray(x).reshape(-1)
    uf = np.ascontiguousarray(u).reshape(-1)
    y = np.empty_like(xf)
    keep = np.empty(xf.size, np.uint8)
    run_rows(_apply_rows, xf.size, 1, xf, uf, float(p), float(scale), y, keep)
    return y.reshape(x.shape), keep.reshape(x.shape)


@jit
def _grad_rows(dy, keep, scale, dx, start, stop, chunk):
    s_t = dy.dtype.type(scale)
    zero = dy.dtype.type(0)
    for i in range(start, stop):
        dx[i] = dy[i] * s_t if keep[i] else zero


@kernel(twin=dropout_grad_numpy)
def dropout_grad(dy, keep, scale):
    """dx for dy and the forward pass's keep mask."""
    dyf = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(dyf)
    run_rows(_grad_rows, dyf.size, 1, dyf, np.ascontiguousarray(keep).reshape(-1), float(scale), dx)
    return dx.reshape(dy.shape)
