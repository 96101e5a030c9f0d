"""Per-token statistics of hidden states for distillation: the layer-normalised squared error of
feature-map transfer, and the mean and variance of mean/variance transfer (``tinymobilebert.distill``).

Dimensions: N rows (tokens, B*T), H features (the inter-block width).

Feature-map transfer, for student rows a (N, H), teacher rows b (N, H), row weights w (N,):

    mu = mean_c a_c,  var = mean_c (a_c - mu)^2,  rstd = 1 / sqrt(var + eps),  xa = (a - mu) rstd
    (the same for b: xb)                 a parameter-free LayerNorm (gamma 1, beta 0)
    total = sum_n w_n sum_c (xa_nc - xb_nc)^2          rows with w_n = 0 skipped (stats stored as 0)

    backward, from per-row coefficients g_n (= 2 dloss w_n):
    d_c = g_n (xa_c - xb_c)          (d loss / d xa)
    da_c = rstd_a (d_c - mean(d) - xa_c mean(d xa))          (LayerNorm's backward, gamma = 1)

Moments (mean/variance transfer): mu_n = mean_c x_nc, var_n = mean_c (x_nc - mu_n)^2 (the population
variance, as tf.nn.moments), and their backward from dmu (N,), dvar (N,):

    dx_c = dmu_n / H + dvar_n 2 (x_c - mu_n) / H

Statistics are float64 (two passes over a row: mean, then squared deviations); gradients are
returned in the input's dtype.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, model_work, partial_rows, row_mean_var, run_rows

# single-threaded ns per element (benchmarks/kernels_micro.py), how run_rows decides to split
_NS_FMT_FORWARD = 0.8
_NS_FMT_BACKWARD = 0.8
_NS_MOMENTS = 0.4


# ------------------------------------------------------------------------------ NumPy twins


def _standardize_numpy(x, eps):
    x = x.astype(np.float64)
    mu = x.mean(axis=1)
    var = ((x - mu[:, None]) ** 2).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    return (x - mu[:, None]) * rstd[:, None], mu, rstd


def feature_map_loss_forward_numpy(a, b, eps, row_weight):
    """Returns (total: float, mu_a, rstd_a, mu_b, rstd_b: (N,) float64). a, b (N, H), row_weight (N,)."""
    N = a.shape[0]
    stats = [np.zeros(N) for _ in range(4)]
    rows = np.flatnonzero(row_weight != 0)
    if rows.size == 0:
        return 0.0, *stats
    xa, mu_a, r_a = _standardize_numpy(a[rows], eps)
    xb, mu_b, r_b = _standardize_numpy(b[rows], eps)
    for out, v in zip(stats, (mu_a, r_a, mu_b, r_b)):
        out[rows] = v
    per_row = ((xa - xb) ** 2).sum(axis=1)
    return float(np.sum(row_weight[rows] * per_row)), *stats


def feature_map_loss_backward_numpy(a, b, mu_a, rstd_a, mu_b, rstd_b, row_coef):
    """d a (N, H) in a's dtype, from row_coef (N,) float64 = 2 dloss w_n."""
    xa = (a.astype(np.float64) - mu_a[:, None]) * rstd_a[:, None]
    xb = (b.astype(np.float64) - mu_b[:, None]) * rstd_b[:, None]
    d = row_coef[:, None] * (xa - xb)
    da = rstd_a[:, None] * (d - d.mean(axis=1, keepdims=True) - xa * (d * xa).mean(axis=1, keepdims=True))
    da[row_coef == 0] = 0.0
    return da.astype(a.dtype)


def row_moments_numpy(x):
    """Returns (mu, var): (N,) float64 each. x (N, H)."""
    x = x.astype(np.float64)
    mu = x.mean(axis=1)
    return mu, ((x - mu[:, None]) ** 2).mean(axis=1)


def row_moments_backward_numpy(x, mu, dmu, dvar):
    """d x (N, H) in x's dtype from dmu, dvar (N,) float64."""
    H = x.shape[1]
    dx = dmu[:, None] / H + (2.0 / H) * dvar[:, None] * (x.astype(np.float64) - mu[:, None])
    return dx.astype(x.dtype)


# ------------------------------------------------------------------------------ Numba kernels


@jit
def _row_stats(x, n, eps):
    """(mean, rstd) of row n in float64 (``row_mean_var``'s two passes)."""
    mu, var = row_mean_var(x, n)
    return mu, 1.0 / np.sqrt(var + eps)


@jit
def _fmt_forward_rows(a, b, eps, row_weight, mu_a, rstd_a, mu_b, rstd_b, partial, start, stop, chunk):
    H = a.shape[1]
    total = 0.0
    for n in range(start, stop):
        w = row_weight[n]
        if w == 0.0:
            mu_a[n] = rstd_a[n] = mu_b[n] = rstd_b[n] = 0.0
            continue
        ma, ra = _row_stats(a, n, eps)
        mb, rb = _row_stats(b, n, eps)
        mu_a[n], rstd_a[n], mu_b[n], rstd_b[n] = ma, ra, mb, rb
        acc = 0.0
        for c in range(H):
            d = (np.float64(a[n, c]) - ma) * ra - (np.float64(b[n, c]) - mb) * rb
            acc += d * d
        total += w * acc
    partial[chunk] = total


@kernel(twin=feature_map_loss_forward_numpy)
def feature_map_loss_forward(a, b, eps, row_weight):
    """Returns (total: float, mu_a, rstd_a, mu_b, rstd_b: (N,) float64). See the module notes."""
    N, H = a.shape
    stats = [np.empty(N) for _ in range(4)]
    work = model_work(_NS_FMT_FORWARD * H)
    partial = np.zeros(partial_rows(N, work))
    run_rows(_fmt_forward_rows, N, work, a, b, float(eps), row_weight, *stats, partial)
    return float(partial.sum()), *stats


@jit
def _fmt_backward_rows(a, b, mu_a, rstd_a, mu_b, rstd_b, row_coef, da, start, stop, chunk):
    H = a.shape[1]
    f = da.dtype.type
    for n in range(start, stop):
        g = row_coef[n]
        if g == 0.0:
            for c in range(H):
                da[n, c] = f(0)
            continue
        ma, ra, mb, rb = mu_a[n], rstd_a[n], mu_b[n], rstd_b[n]
        sd = 0.0
        sdx = 0.0
        for c in range(H):
            xa = (np.float64(a[n, c]) - ma) * ra
            d = g * (xa - (np.float64(b[n, c]) - mb) * rb)
            sd += d
            sdx += d * xa
        sd /= H
        sdx /= H
        for c in range(H):
            xa = (np.float64(a[n, c]) - ma) * ra
            d = g * (xa - (np.float64(b[n, c]) - mb) * rb)
            da[n, c] = ra * (d - sd - xa * sdx)


@kernel(twin=feature_map_loss_backward_numpy)
def feature_map_loss_backward(a, b, mu_a, rstd_a, mu_b, rstd_b, row_coef):
    """d a (N, H) in a's dtype, from row_coef (N,) float64 = 2 dloss w_n. See the module notes."""
    N, H = a.shape
    da = np.empty_like(a)
    run_rows(_fmt_backward_rows, N, model_work(_NS_FMT_BACKWARD * H), a, b, mu_a, rstd_a, mu_b, rstd_b, row_coef,
             da)
    return da


@jit
def _moments_rows(x, mu, var, start, stop, chunk):
    for n in range(start, stop):
        mu[n], var[n] = row_mean_var(x, n)


@kernel(twin=row_moments_numpy)
def row_moments(x):
    """Returns (mu, var): (N,) float64 each. See the module notes."""
    N, H = x.shape
    mu, var = np.empty(N), np.empty(N)
    run_rows(_moments_rows, N, model_work(_NS_MOMENTS * H), x, mu, var)
    return mu, var


@jit
def _moments_backward_rows(x, mu, dmu, dvar, dx, start, stop, chunk):
    H = x.shape[1]
    f = dx.dtype.type
    for n in range(start, stop):
        a = dmu[n] / H
        b = 2.0 * dvar[n] / H
        m = mu[n]
        for c in range(H):
            dx[n, c] = f(a + b * (np.float64(x[n, c]) - m))


@kernel(twin=row_moments_backward_numpy)
def row_moments_backward(x, mu, dmu, dvar):
    """d x (N, H) in x's dtype from dmu, dvar (N,) float64. See the module notes."""
    N, H = x.shape
    dx = np.empty_like(x)
    run_rows(_moments_backward_rows, N, model_work(_NS_MOMENTS * H), x, mu, dmu, dvar, dx)
    return dx
