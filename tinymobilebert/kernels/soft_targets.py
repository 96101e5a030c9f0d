"""Cross-entropy against a soft target, over rows: the kernel behind attention transfer, MLM
distillation and the soft cross-entropy of task distillation (``tinymobilebert.distill``).

Dimensions: R rows, S entries per row (the keys of an attention row, or the vocabulary), G row
groups that share one key mask (a batch element's A*T attention rows; ``rows_per_group`` each).

Forward, for row r with student scores s (S,), teacher scores t (S,), inverse temperature k,
mixing weight alpha, label y_r, row weight w_r, over the kept entries j (key_mask[g(r), j] = 1,
or all of them without a mask):

    x = k s,  u = k t                                          (float64)
    m_x = max_j x_j (nan skipped),   l_x = log sum_j exp(x_j - m_x)     (log softmax(x)_j = x_j - m_x - l_x)
    p_j = exp(u_j - m_u) / sum_i exp(u_i - m_u)                (the teacher's distribution)
    q_j = alpha 1[j = y_r] + (1 - alpha) p_j                   (the target)
    loss_r = sum_j q_j (l_x - (x_j - m_x))                     (= -sum_j q_j log softmax(x)_j)
    with entropy (KL, alpha = 0):  loss_r += sum_j p_j ((u_j - m_u) - l_u)
    total = sum_r w_r loss_r,   rows with w_r = 0 skipped

The row statistics (m_x, l_x, m_u, l_u) are returned as one (R, 4) float64 array for the
backward pass. Keeping the maximum apart from the log-sum (rather than one log-sum-exp) keeps a
row whose scores are all near finfo.min (an all-padding row in transformers' masking) exactly
normalised: m + l would round back to m there.

A term with p_j = 0 counts as 0 (0 log 0 := 0): masked scores at finfo.min or -inf in both
models give 0, not nan. A student score of -inf where the teacher has mass gives loss +inf (the
student gives zero probability to something the teacher does not), and nan in stays nan. Rows
with w_r = 0 are not read at all (their statistics are stored as 0), so a fully padded row that
the caller leaves out cannot poison the sum.

Backward, given per-row upstream gradients g_r (the loss's gradient times w_r):

    ds_rj = g_r k (softmax(x)_j - q_j),   softmax(x)_j = exp(x_j - m_x) exp(-l_x)
    (0 at masked entries and in rows with g_r = 0; a label's entry counts even if masked)

Everything is computed in float64 (the backward pass's exponentials in the gradient's dtype, from
float64 exponents); the gradient is returned in the student scores' dtype.
"""

from __future__ import annotations

import numpy as np

from ._jit import exp, jit, kernel, model_work, partial_rows, run_rows

# single-threaded ns per entry (benchmarks/kernels_micro.py), how run_rows decides to split
_NS_FORWARD = 2.5
_NS_BACKWARD = 1.0


# ------------------------------------------------------------------------------ NumPy twins


def _masked_scaled(x, inv_temperature, key_mask):
    """k * x in float64, -inf at masked entries. x (R, S), key_mask (R, S) or None."""
    with np.errstate(over="ignore"):  # finfo.min / T overflows to -inf: a weight of 0, as intended
        y = x.astype(np.float64) * inv_temperature
    return y if key_mask is None else np.where(key_mask > 0, y, -np.inf)


def _shift(x):
    """(x - max, max, log sum exp(x - max)) over each row; the max skips nan (-inf if none is left),
    as the kernel's does, and a nan still reaches the sum."""
    m = np.fmax.reduce(x, axis=1)
    m[np.isnan(m)] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        d = x - m[:, None]
        return d, m, np.log(np.exp(d).sum(axis=1))


def soft_target_ce_forward_numpy(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, row_weight,
                                 entropy):
    """Returns (total: float, row_stats (R, 4) float64). See the module notes.

    s, t : (R, S) float       labels : (R,) int64 (read where alpha > 0 and w_r != 0)
    alpha, inv_temperature : float     key_mask : (G, S) 0/1 or None     rows_per_group : int
    row_weight : (R,) float64          entropy : bool (add the teacher's negative entropy: KL)
    """
    stats = np.zeros((s.shape[0], 4))
    rows = np.flatnonzero(row_weight != 0)
    if rows.size == 0:
        return 0.0, stats
    group = None if key_mask is None else key_mask[rows // rows_per_group]  # (R', S)
    dx, mx, lx = _shift(_masked_scaled(s[rows], inv_temperature, group))
    du, mu, lu = _shift(_masked_scaled(t[rows], inv_temperature, group))
    stats[rows] = np.stack([mx, lx, mu, lu], axis=1)
    loss = np.zeros(rows.size)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(du)
        p = e * (1.0 / e.sum(axis=1, keepdims=True))
        if alpha < 1.0:
            nz = p != 0  # 0 log 0 := 0 (a nan p stays: a nan teacher must not vanish)
            loss += (1.0 - alpha) * np.where(nz, p * (lx[:, None] - dx), 0.0).sum(axis=1)
            if entropy:
                loss += (1.0 - alpha) * np.where(nz, p * (du - lu[:, None]), 0.0).sum(axis=1)
        if alpha > 0.0:
            loss += alpha * (lx - dx[np.arange(rows.size), labels[rows]])
    return float(np.sum(row_weight[rows] * loss)), stats


def soft_target_ce_backward_numpy(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, row_stats,
                                  row_grad):
    """d s (R, S) in s's dtype, from row_grad (R,) float64 = dloss * w_r. See the module notes."""
    ds = np.zeros(s.shape, np.float64)
    rows = np.flatnonzero(row_grad != 0)
    if rows.size:
        group = None if key_mask is None else key_mask[rows // rows_per_group]
        x = _masked_scaled(s[rows], inv_temperature, group)
        u = _masked_scaled(t[rows], inv_temperature, group)
        mx, lx, mu, lu = row_stats[rows].T
        with np.errstate(invalid="ignore", over="ignore"):
            d = (np.exp(x - mx[:, None]) * np.exp(-lx)[:, None]
                 - (1.0 - alpha) * np.exp(u - mu[:, None]) * np.exp(-lu)[:, None])
        if group is not None:
            d = np.where(group > 0, d, 0.0)  # masked entries: 0 even in a row whose statistics are nan
        if alpha > 0.0:  # the label's entry counts even if masked (the forward pass counts it too)
            d[np.arange(rows.size), labels[rows]] -= alpha
        d = (row_grad[rows] * inv_temperature)[:, None] * d
        if group is not None:  # masked entries are 0 whatever the row's gradient (a nan one included)
            keep = group > 0
            if alpha > 0.0:
                keep[np.arange(rows.size), labels[rows]] = True
            d = np.where(keep, d, 0.0)
        ds[rows] = d
    return ds.astype(s.dtype)


# ------------------------------------------------------------------------------ Numba kernels
# The forward pass loads each row once into float64 scratch rows (scaled, -inf at masked
# entries) and shifts them by their maximum in place, so the passes after it read contiguous
# float64 with no mask test. Every difference the results depend on (x_j - m, then l - that) is
# a single operation on values read from memory, so fastmath's reassociation cannot regroup it
# into (m + l) - x_j, which loses everything for scores near finfo.min. The scratch rows are per
# chunk (per thread): no two threads write the same memory.


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
            mx = max(mx, a)  # skips a nan (as the twin's fmax); a nan reaches the sums anyway
            mu = max(mu, b)
    else:
        for j in range(S):
            a = k * np.float64(s[r, j])
            b = k * np.float64(t[r, j])
            x[j] = a
            u[j] = b
            mx = max(mx, a)  # skips a nan (as the twin's fmax); a nan reaches the sums anyway
            mu = max(mu, b)
    return mx, mu


@jit
def _soft_ce_forward_rows(s, t, labels, alpha, k, key_mask, rows_per_group, row_weight, entropy, stats,
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
            for c in range(4):
                stats[r, c] = 0.0
            continue
        mx, mu = _load_rows(s, t, r, k, key_mask, r // rows_per_group, has_mask, x, u)
        sx = 0.0
        su = 0.0
        for j in range(S):
            a = x[j] - mx  # shifted in place: (x - m) is what every later pass reads
            x[j] = a
            sx += exp(a)
            b = u[j] - mu
            u[j] = b
            v = exp(b)
            e[j] = v
            su += v
        lx = np.log(sx)
        lu = np.log(su)
        stats[r, 0] = mx
        stats[r, 1] = lx
        stats[r, 2] = mu
        stats[r, 3] = lu
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
    """Returns (total: float, row_stats (R, 4) float64). See the module notes."""
    R, S = s.shape
    stats = np.empty((R, 4))
    work = model_work(_NS_FORWARD * S)
    partial = np.zeros(partial_rows(R, work))
    m = key_mask if key_mask is not None else np.empty((0, 0), np.float64)
    run_rows(_soft_ce_forward_rows, R, work, s, t, labels, float(alpha), float(inv_temperature), m,
             int(rows_per_group), row_weight, bool(entropy), stats, partial)
    return float(partial.sum()), stats


@jit
def _soft_ce_backward_rows(s, t, labels, alpha, k, key_mask, rows_per_group, stats, row_grad, ds,
                           start, stop, chunk):
    S = s.shape[1]
    has_mask = key_mask.shape[0] > 0
    f = ds.dtype.type
    zero = f(0)
    beta = 1.0 - alpha
    x = np.empty(S)
    u = np.empty(S)
    for r in range(start, stop):
        gr = row_grad[r]
        if gr == 0.0:
            for j in range(S):
                ds[r, j] = zero
            continue
        mx, mu = stats[r, 0], stats[r, 2]
        inv_x, inv_u = np.exp(-stats[r, 1]), np.exp(-stats[r, 3])  # 1 / sum exp(x - m)
        gk_t, ax, au = f(gr * k), f(inv_x), f(beta * inv_u)
        g = r // rows_per_group
        # The exponents in float64 (logits of 1e4 keep their digits), the exps in ds's dtype (8
        # float32 lanes where 4 float64). At temperature 1 in one pass from the inputs; else from
        # scratch rows as in the forward pass (k s - m fused into one rounding by fastmath's
        # "contract" would keep k s's rounding error, ~1e22 near finfo.min, in the exponent).
        if k != 1.0:
            _load_rows(s, t, r, k, key_mask, g, has_mask, x, u)
            for j in range(S):
                ds[r, j] = gk_t * (exp(f(x[j] - mx)) * ax - exp(f(u[j] - mu)) * au)
            if has_mask:  # masked entries: 0 even in a row whose statistics are nan
                for j in range(S):
                    d = ds[r, j]
                    ds[r, j] = d if key_mask[g, j] > 0 else zero
        elif has_mask:
            for j in range(S):
                d = gk_t * (exp(f(np.float64(s[r, j]) - mx)) * ax - exp(f(np.float64(t[r, j]) - mu)) * au)
                ds[r, j] = d if key_mask[g, j] > 0 else zero
        else:
            for j in range(S):
                ds[r, j] = gk_t * (exp(f(np.float64(s[r, j]) - mx)) * ax - exp(f(np.float64(t[r, j]) - mu)) * au)
        if alpha > 0.0:  # the label's entry in float64: p_y - alpha keeps its digits
            y = labels[r]
            if has_mask and not key_mask[g, y] > 0:
                ds[r, y] = f(-gr * k * alpha)  # a masked label: both probabilities are 0
            else:
                xy = x[y] if k != 1.0 else np.float64(s[r, y])
                uy = u[y] if k != 1.0 else np.float64(t[r, y])
                # exp is _jit's polynomial: LLVM would merge two libm exps, exp(a) exp(b) -> exp(a + b),
                # and regroup the exponent into xy - (m + l), which rounds to 0 near finfo.min
                ds[r, y] = gr * k * (exp(xy - mx) * inv_x - beta * exp(uy - mu) * inv_u - alpha)


@kernel(twin=soft_target_ce_backward_numpy)
def soft_target_ce_backward(s, t, labels, alpha, inv_temperature, key_mask, rows_per_group, row_stats, row_grad):
    """d s (R, S) in s's dtype, from row_grad (R,) float64 = dloss * w_r. See the module notes."""
    R, S = s.shape
    ds = np.empty_like(s)
    m = key_mask if key_mask is not None else np.empty((0, 0), np.float64)
    run_rows(_soft_ce_backward_rows, R, model_work(_NS_BACKWARD * S), s, t, labels, float(alpha),
             float(inv_temperature), m, int(rows_per_group), row_stats, row_grad, ds)
    return ds
