"""Cross-entropy against a soft target, over rows: the kernel behind attention transfer, MLM
distillation and the soft cross-entropy of task distillation (``tinymobilebert.distill``).

Dimensions: R rows, S entries per row (the keys of an attention row, or the vocabulary), G row
groups that share one key mask (a batch element's A*T attention rows; ``rows_per_group`` each).

Forward, for row r with student scores s (S,), teacher scores t (S,), inverse temperature k,
mixing weight alpha, label y_r, row weight w_r, over the kept entries j (key_mask[g(r), j] = 1,
or all of them without a mask):

    x = k s,  u = k t                                   (float64)
    lse_x = log sum_j exp(x_j),   p_j = exp(u_j - lse_u)       (the teacher's distribution)
    q_j = alpha 1[j = y_r] + (1 - alpha) p_j                   (the target)
    loss_r = sum_j q_j (lse_x - x_j)                           (= -sum_j q_j log softmax(x)_j)
    with entropy (KL, alpha = 0):  loss_r += sum_j p_j (u_j - lse_u)
    total = sum_r w_r loss_r,   rows with w_r = 0 skipped

A term with p_j = 0 counts as 0 (0 log 0 := 0): masked scores at finfo.min or -inf in both
models give 0, not nan. A student score of -inf where the teacher has mass gives loss +inf (the
student gives zero probability to something the teacher does not), and nan in stays nan. Rows
with w_r = 0 are not read at all (their lse is stored as 0), so a fully padded row that the
caller leaves out cannot poison the sum.

Backward, given per-row upstream gradients g_r (the loss's gradient times w_r):

    ds_rj = g_r k (softmax(x)_j - q_j)         (0 at masked entries and in rows with g_r = 0)

Everything is computed in float64 (the backward pass's exponentials in the gradient's dtype, from
float64 exponents); the gradient is returned in the student scores' dtype.
"""

from __future__ import annotations

import numpy as np

from ._jit import exp, jit, kernel, model_work, partial_rows, run_rows

# single-threaded ns per entry (benchmarks/kernels_micro.py), how run_rows decides to split
_NS_FORWARD = 2.5
_NS_BACKWARD = 2.0


# ------------------------------------------------------------------------------ NumPy twins


def _masked_scaled(x, inv_temperature, key_mask, rows_per_group):
    """k * x in float64, -inf at masked entries. x (R, S), key_mask (G, S) or None."""
    y = x.astype(np.float64) * inv_temperature
    if key_mask is not None:
        keep = np.repeat(key_mask > 0, rows_per_group, axis=0)  # (R, S)
        y = np.where(keep, y, -np.inf)
    return y


def _lse(x):
    mx = x.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        return (mx + np.log(np.exp(x - mx).sum(axis=1, keepdims=True)))[:, 0]


def soft_target_ce_forward_numpy(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, row_weight,
                                 entropy):
    """Returns (total: float, lse_x (R,) float64, lse_u (R,) float64). See the module notes.

    s, t : (R, S) float       labels : (R,) int64 (read where alpha > 0 and w_r != 0)
    alpha, inv_temperature : float     key_mask : (G, S) 0/1 or None     rows_per_group : int
    row_weight : (R,) float64          entropy : bool (add the teacher's negative entropy: KL)
    """
    R = s.shape[0]
    lse_x, lse_u = np.zeros(R), np.zeros(R)
    rows = np.flatnonzero(row_weight != 0)
    if rows.size == 0:
        return 0.0, lse_x, lse_u
    group = None if key_mask is None else key_mask[rows // rows_per_group]  # (R', S)
    x = _masked_scaled(s[rows], inv_temperature, group, 1)
    u = _masked_scaled(t[rows], inv_temperature, group, 1)
    lx, lu = _lse(x), _lse(u)
    lse_x[rows], lse_u[rows] = lx, lu
    loss = np.zeros(rows.size)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(u - lu[:, None])
        if alpha < 1.0:
            nz = p != 0  # 0 log 0 := 0 (a nan p stays: a nan teacher must not vanish)
            cross = np.where(nz, p * (lx[:, None] - x), 0.0).sum(axis=1)
            loss += (1.0 - alpha) * cross
            if entropy:
                loss += (1.0 - alpha) * np.where(nz, p * (u - lu[:, None]), 0.0).sum(axis=1)
        if alpha > 0.0:
            loss += alpha * (lx - x[np.arange(rows.size), labels[rows]])
    return float(np.sum(row_weight[rows] * loss)), lse_x, lse_u


def soft_target_ce_backward_numpy(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, lse_x, lse_u,
                                  row_grad):
    """d s (R, S) in s's dtype, from row_grad (R,) float64 = dloss * w_r. See the module notes."""
    ds = np.zeros(s.shape, np.float64)
    rows = np.flatnonzero(row_grad != 0)
    if rows.size:
        group = None if key_mask is None else key_mask[rows // rows_per_group]
        x = _masked_scaled(s[rows], inv_temperature, group, 1)
        u = _masked_scaled(t[rows], inv_temperature, group, 1)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.exp(x - lse_x[rows, None]) - (1.0 - alpha) * np.exp(u - lse_u[rows, None])
        if alpha > 0.0:
            d[np.arange(rows.size), labels[rows]] -= alpha
        if group is not None:
            d = np.where(group > 0, d, 0.0)  # masked entries: 0 even in a row whose lse is nan
        ds[rows] = (row_grad[rows] * inv_temperature)[:, None] * d
    return ds.astype(s.dtype)


# ------------------------------------------------------------------------------ Numba kernels
# The forward pass loads each row once into float64 scratch rows (scaled, -inf at masked
# entries), so the passes after it read contiguous float64 with no mask test: the exps and their
# sums, then the cross term. The scratch rows are per chunk (per thread): no two threads write
# the same memory.


@jit
def _load_rows(s, t, r, k, key_mask, g, has_mask, x, u):
    """x = k s[r], u = k t[r] in float64, -inf where key_mask[g] == 0. Returns (max x, max u)."""
    S = s.shape[1]
    mx = -np.inf
    mu = -np.inf
    if has_mask:
        for j in range(S):
            keep = key_mask[g, j] > 0
            a = k * np.float64(s[r, j]) if keep else -np.inf
            b = k * np.float64(t[r, j]) if keep else -np.inf
            x[j] = a
            u[j] = b
            mx = max(mx, a)
            mu = max(mu, b)
    else:
        for j in range(S):
            a = k * np.float64(s[r, j])
            b = k * np.float64(t[r, j])
            x[j] = a
            u[j] = b
            mx = max(mx, a)
            mu = max(mu, b)
    return mx, mu


@jit
def _soft_ce_forward_rows(s, t, labels, alpha, k, key_mask, rows_per_group, row_weight, entropy, lse_x, lse_u,
                          partial, start, stop, chunk):
    S = s.shape[1]
    has_mask = key_mask.shape[0] > 0
    x = np.empty(S)
    u = np.empty(S)
    e = np.empty(S)
    total = 0.0
    for r in range(start, stop):
        w = row_weight[r]
        if w == 0.0:
            lse_x[r] = 0.0
            lse_u[r] = 0.0
            continue
        mx, mu = _load_rows(s, t, r, k, key_mask, r // rows_per_group, has_mask, x, u)
        sx = 0.0
        su = 0.0
        for j in range(S):
            sx += exp(x[j] - mx)
            v = exp(u[j] - mu)
            e[j] = v
            su += v
        lx = mx + np.log(sx)
        lu = mu + np.log(su)
        lse_x[r] = lx
        lse_u[r] = lu
        loss = 0.0
        if alpha < 1.0:
            inv = 1.0 / su
            cross = 0.0
            for j in range(S):
                p = e[j] * inv
                cross += p * (lx - x[j]) if p != 0.0 else 0.0  # 0 log 0 := 0; nan stays nan
            loss += (1.0 - alpha) * cross
            if entropy:
                neg_h = 0.0
                for j in range(S):
                    p = e[j] * inv
                    neg_h += p * (u[j] - lu) if p != 0.0 else 0.0
                loss += (1.0 - alpha) * neg_h
        if alpha > 0.0:
            loss += alpha * (lx - x[labels[r]])
        total += w * loss
    partial[chunk] = total


@kernel(twin=soft_target_ce_forward_numpy)
def soft_target_ce_forward(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, row_weight, entropy):
    """Returns (total: float, lse_x (R,) float64, lse_u (R,) float64). See the module notes."""
    R, S = s.shape
    lse_x, lse_u = np.empty(R), np.empty(R)
    work = model_work(_NS_FORWARD * S)
    partial = np.zeros(partial_rows(R, work))
    m = key_mask if key_mask is not None else np.empty((0, 0), np.float64)
    run_rows(_soft_ce_forward_rows, R, work, s, t, labels, float(alpha), float(inv_temperature), m,
             int(rows_per_group), row_weight, bool(entropy), lse_x, lse_u, partial)
    return float(partial.sum()), lse_x, lse_u


@jit
def _soft_ce_backward_rows(s, t, labels, alpha, k, key_mask, rows_per_group, lse_x, lse_u, row_grad, ds,
                           start, stop, chunk):
    S = s.shape[1]
    has_mask = key_mask.shape[0] > 0
    f = ds.dtype.type
    zero = f(0)
    beta = 1.0 - alpha
    for r in range(start, stop):
        gr = row_grad[r]
        if gr == 0.0:
            for j in range(S):
                ds[r, j] = zero
            continue
        lx = lse_x[r]
        lu = lse_u[r]
        gk_t, beta_t = f(gr * k), f(beta)
        # the exponents in float64 (logits of 1e4 keep their digits), the exps in ds's dtype (8
        # float32 lanes where 4 float64); one pass, no scratch row
        if has_mask:
            g = r // rows_per_group
            for j in range(S):
                d = gk_t * (exp(f(k * np.float64(s[r, j]) - lx)) - beta_t * exp(f(k * np.float64(t[r, j]) - lu)))
                ds[r, j] = d if key_mask[g, j] > 0 else zero
        else:
            for j in range(S):
                ds[r, j] = gk_t * (exp(f(k * np.float64(s[r, j]) - lx)) - beta_t * exp(f(k * np.float64(t[r, j]) - lu)))
        if alpha > 0.0:
            y = labels[r]
            xy = k * np.float64(s[r, y])
            uy = k * np.float64(t[r, y])
            ds[r, y] = gr * k * (np.exp(xy - lx) - beta * np.exp(uy - lu) - alpha)  # float64: p_y - alpha keeps its digits


@kernel(twin=soft_target_ce_backward_numpy)
def soft_target_ce_backward(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, lse_x, lse_u, row_grad):
    """d s (R, S) in s's dtype, from row_grad (R,) float64 = dloss * w_r. See the module notes."""
    R, S = s.shape
    ds = np.empty_like(s)
    m = key_mask if key_mask is not None else np.empty((0, 0), np.float64)
    run_rows(_soft_ce_backward_rows, R, model_work(_NS_BACKWARD * S), s, t, labels, float(alpha),
             float(inv_temperature), m, int(rows_per_group), lse_x, lse_u, row_grad, ds)
    return ds
