"""Normalisation kernels: NoNorm and LayerNorm, fused with the bias and residual adds before them.

Dimensions: N rows (B*T tokens), C features.

Every norm in MobileBERT follows a dense layer and usually a residual:

    z = h + bias + residual          # h = x @ W.T (the dense layer without its bias)
    y = Norm(z)
    NoNorm:    y = z * gamma + beta                          (MobileBERT's OPT, no statistics)
    LayerNorm: y = (z - mean(z)) * rstd * gamma + beta,     rstd = 1 / sqrt(var(z) + eps)

One pass computes z and y; the backward pass returns dz (which is also d residual and, summed
over rows, d bias), dgamma and dbeta in one pass:

    NoNorm:    dz = dy * gamma                        dgamma = sum_rows(dy * z)
    LayerNorm: g = dy * gamma,  xhat = (z - mean) * rstd
               dz = rstd * (g - mean(g) - xhat * mean(g * xhat))
               dgamma = sum_rows(dy * xhat)           dbeta = sum_rows(dy)

Statistics are accumulated in float64 inside the kernels, whatever the array dtype.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, model_work, partial_rows, row_mean_var, run_rows

# single-threaded ns per element (benchmarks/kernels_micro.py), how run_rows decides to split
_NS_FORWARD = {False: 0.3, True: 0.45}  # by layer_norm
_SUM_BLOCK = 16  # rows per block of NoNorm's dgamma/dbeta sums (see _norm_backward_rows)
_NS_BACKWARD = {False: 0.4, True: 0.75}

# ------------------------------------------------------------------------------ NumPy twins


def norm_forward_numpy(h, bias, residual, gamma, beta, eps, layer_norm):
    """z = h + bias + residual; y = Norm(z). Returns (y, z, mean, rstd); stats empty for NoNorm.

    Parameters
    ----------
    h : (N, C)            bias : (C,) or None          residual : (N, C) or None
    gamma, beta : (C,)    eps : float                  layer_norm : bool (False = NoNorm)
    """
    z = h.copy()
    if bias is not None:
        z += bias
    if residual is not None:
        z += residual
    if not layer_norm:
        return z * gamma + beta, z, np.empty(0, h.dtype), np.empty(0, h.dtype)
    z64 = z.astype(np.float64)
    mean = z64.mean(axis=1)
    var = ((z64 - mean[:, None]) ** 2).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = ((z64 - mean[:, None]) * rstd[:, None]).astype(h.dtype) * gamma + beta
    return y, z, mean.astype(h.dtype), rstd.astype(h.dtype)


def norm_backward_numpy(dy, z, gamma, mean, rstd, layer_norm):
    """Returns (dz, dgamma, dbeta, dbias) with dbias = sum_rows(dz). Shapes as in forward."""
    if not layer_norm:
        dz = dy * gamma
        return dz, (dy * z).sum(axis=0), dy.sum(axis=0), dz.sum(axis=0)
    xhat = (z - mean[:, None]) * rstd[:, None]
    g = dy * gamma
    dz = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dz, (dy * xhat).sum(axis=0), dy.sum(axis=0), dz.sum(axis=0)


# ------------------------------------------------------------------------------ Numba kernels
# One inner loop per case: no flag is tested inside an inner loop, so LLVM vectorises them all.
# A missing bias is passed as zeros (h + 0 is h); a missing residual gets its own loop. Inner
# loops index 2-D arrays (a row view per row costs two atomic reference counts in Numba).


@jit
def _norm_forward_rows(h, bias, residual, gamma, beta, eps, layer_norm, y, z, mean, rstd, start, stop, chunk):
    C = h.shape[1]
    has_res = residual.shape[0] > 0
    for n in range(start, stop):
        if not layer_norm:
            if has_res:
                for c in range(C):
                    v = h[n, c] + bias[c] + residual[n, c]
                    z[n, c] = v
                    y[n, c] = v * gamma[c] + beta[c]
            else:
                for c in range(C):
                    v = h[n, c] + bias[c]
                    z[n, c] = v
                    y[n, c] = v * gamma[c] + beta[c]
            continue
        if has_res:
            for c in range(C):
                z[n, c] = h[n, c] + bias[c] + residual[n, c]
        else:
            for c in range(C):
                z[n, c] = h[n, c] + bias[c]
        mu, var = row_mean_var(z, n)  # float64 statistics
        r = 1.0 / np.sqrt(var + eps)
        mean[n] = mu
        rstd[n] = r
        m_t = z.dtype.type(mu)
        r_t = z.dtype.type(r)
        for c in range(C):
            y[n, c] = (z[n, c] - m_t) * r_t * gamma[c] + beta[c]


@kernel(twin=norm_forward_numpy)
def norm_forward(h, bias, residual, gamma, beta, eps, layer_norm):
    """z = h + bias + residual; y = Norm(z). Returns (y, z, mean, rstd). See the module notes."""
    N, C = h.shape
    dt = h.dtype
    y = np.empty_like(h)
    z = np.empty_like(h)
    mean = np.empty(N if layer_norm else 0, dt)
    rstd = np.empty(N if layer_norm else 0, dt)
    b = bias if bias is not None else np.zeros(C, dt)
    r = residual if residual is not None else np.empty((0, 0), dt)
    work = model_work(_NS_FORWARD[bool(layer_norm)] * C)
    run_rows(_norm_forward_rows, N, work, h, b, r, gamma, beta, float(eps), bool(layer_norm), y, z, mean, rstd)
    return y, z, mean, rstd


@jit
def _norm_backward_rows(dy, z, gamma, mean, rstd, layer_norm, dz, partial, start, stop, chunk):
    C = dy.shape[1]
    inv_c = z.dtype.type(1.0 / C)
    pgamma, pbeta, pbias = partial[chunk, 0], partial[chunk, 1], partial[chunk, 2]  # float64 (C,) each
    if not layer_norm:
        # dgamma and dbeta sum each block of _SUM_BLOCK rows in the arrays' dtype, in the loop
        # that writes dz (the block sums stay in L1); each block's sum goes into the float64 partials
        sg = np.empty(C, dy.dtype)
        sb = np.empty(C, dy.dtype)
        for b0 in range(start, stop, _SUM_BLOCK):
            sg[:] = 0
            sb[:] = 0
            for n in range(b0, min(b0 + _SUM_BLOCK, stop)):
                for c in range(C):
                    d = dy[n, c]
                    dz[n, c] = d * gamma[c]
                    sg[c] += d * z[n, c]
                    sb[c] += d
            for c in range(C):
                pgamma[c] += sg[c]
                pbeta[c] += sb[c]
        for c in range(C):  # sum_rows(dy * gamma) = gamma * sum_rows(dy) ...
            if np.isfinite(gamma[c]):
                pbias[c] = pbeta[c] * gamma[c]
            else:  # ... except for NaN semantics: inf * (dy of both signs) sums to NaN, as in the twin
                acc = 0.0
                for n in range(start, stop):
                    acc += dz[n, c]
                pbias[c] = acc
        return
    for n in range(start, stop):
        m = mean[n]
        r = rstd[n]
        sg = 0.0
        sgx = 0.0
        for c in range(C):
            xhat = (z[n, c] - m) * r
            g = dy[n, c] * gamma[c]
            sg += g
            sgx += g * xhat
            pgamma[c] += dy[n, c] * xhat
            pbeta[c] += dy[n, c]
        a = z.dtype.type(sg) * inv_c  # mean(g)
        b = z.dtype.type(sgx) * inv_c  # mean(g * xhat)
        for c in range(C):
            xhat = (z[n, c] - m) * r
            d = r * (dy[n, c] * gamma[c] - a - xhat * b)
            dz[n, c] = d
            pbias[c] += d


@kernel(twin=norm_backward_numpy)
def norm_backward(dy, z, gamma, mean, rstd, layer_norm):
    """Returns (dz, dgamma, dbeta, dbias = sum_rows(dz)). See the module notes."""
    N, C = dy.shape
    work = model_work(_NS_BACKWARD[bool(layer_norm)] * C)
    dz = np.empty_like(dy)
    # each chunk owns one (3, C) slab of float64 partial sums (no shared +=), summed afterwards
    partial = np.zeros((partial_rows(N, work), 3, C))
    run_rows(_norm_backward_rows, N, work, dy, z, gamma, mean, rstd, bool(layer_norm), dz, partial)
    dgamma, dbeta, dbias = partial.sum(axis=0).astype(dy.dtype)
    return dz, dgamma, dbeta, dbias
