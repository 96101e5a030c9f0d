"""Masked, scaled softmax over attention scores, and its backward pass.

Dimensions: B batch, A heads, T query tokens, S key tokens (S = T in self-attention).

Forward, for raw scores r = Q K^T (B, A, T, S) and a key mask m (B, S) of 0/1:

    s = r * scale + (1 - m) * finfo.min       (mode "add", transformers)
    s = r * scale  where m = 1, else v        (mode "replace" with value v, the original TF code)
    P = softmax(s, over S)

In "add" mode a fully padded row has every score at finfo.min (the tiny scores are lost to
rounding, as in transformers), so its softmax is uniform; masked keys of a partly padded row get
exactly zero weight. Backward, from dP (B, A, T, S):

    ds = P * (dP - sum_S(dP * P))             dr = ds * scale   (exactly zero at masked keys in
                                                                 "replace", even where ds is NaN)

Softmax statistics are accumulated in float64 inside the kernel.

A sequence with no real token at all (attention_mask all 0) is a degenerate case: in "add" mode
its scores round to finfo.min, so the computed P is uniform and constant in r, while the
backward formula above (which is also what PyTorch's autograd gives transformers) still sends
P * (dP - sum(dP * P)) back. We keep transformers' gradient there; finite differences cannot
agree with it, and no real batch has such a row.
"""

from __future__ import annotations

import numpy as np

from ._jit import exp, jit, kernel, model_work, run_rows

# single-threaded ns per element (benchmarks/kernels_micro.py), how run_rows decides to split
_NS_FORWARD = 1.3
_NS_BACKWARD = 0.3


def _mask_constant(dtype):
    return np.finfo(dtype).min


# ------------------------------------------------------------------------------ NumPy twins


def attention_softmax_numpy(raw, key_mask, scale, replace, replace_value, keep_scores):
    """P = softmax(mask(raw * scale)). Returns (P, s) with s the masked scaled scores or None.

    raw : (B, A, T, S)   key_mask : (B, S) of 0/1 in raw's dtype, or None   scale : float
    replace : bool (False = add finfo.min)   replace_value : float   keep_scores : bool
    """
    dt = raw.dtype
    s = raw * dt.type(scale)
    if key_mask is not None:
        m = key_mask[:, None, None, :]
        if replace:
            s = np.where(m > 0, s, dt.type(replace_value))
        else:
            s = s + (1 - m) * _mask_constant(dt)
    s64 = s.astype(np.float64)
    e = np.exp(s64 - s64.max(axis=-1, keepdims=True))
    p = (e / e.sum(axis=-1, keepdims=True)).astype(dt)
    return p, (s if keep_scores else None)


def attention_softmax_backward_numpy(dp, p, key_mask, scale, replace):
    """d raw from dP. All (B, A, T, S); key_mask as in forward."""
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    if replace and key_mask is not None:  # a select, not * mask: no gradient, even from a NaN
        ds = np.where(key_mask[:, None, None, :] > 0, ds, p.dtype.type(0))
    return ds * p.dtype.type(scale)


# ------------------------------------------------------------------------------ Numba kernels
# Rows are the flat (b, a, t) of (B*A*T, S) views; the mask mode is tested once per row, never
# per element. A row stays in L1 through its passes: scores, their max, e = exp(s - max) in the
# array's dtype (kernels._jit.exp, vectorised), the sum of e in float64, then e / sum.

_NO_MASK, _ADD, _REPLACE = 0, 1, 2


@jit
def _softmax_rows(raw, key_mask, mode, scale, replace_value, minval, rows_per_batch, p, s_out,
                  start, stop, chunk):
    S = raw.shape[1]
    t = raw.dtype.type
    scale_t, repl_t, min_t = t(scale), t(replace_value), t(minval)
    keep = s_out.shape[0] > 0
    for row in range(start, stop):  # row = flat (b, a, t)
        b = row // rows_per_batch
        if mode == _NO_MASK:
            for j in range(S):
                p[row, j] = raw[row, j] * scale_t
        elif mode == _ADD:  # + (1 - m) * finfo.min, as in the twin
            for j in range(S):
                p[row, j] = raw[row, j] * scale_t + (t(1) - key_mask[b, j]) * min_t
        else:
            for j in range(S):
                v = raw[row, j] * scale_t
                p[row, j] = v if key_mask[b, j] > 0 else repl_t
        if keep:
            for j in range(S):
                s_out[row, j] = p[row, j]
        mx = t(-np.inf)
        for j in range(S):
            mx = max(mx, p[row, j])
        for j in range(S):
            p[row, j] = exp(p[row, j] - mx)
        tot = 0.0  # float64, in a loop of its own: the exp loop stays 8 float32 wide
        for j in range(S):
            tot += p[row, j]
        inv = t(1.0 / tot)
        for j in range(S):
            p[row, j] *= inv


@kernel(twin=attention_softmax_numpy)
def attention_softmax(raw, key_mask, scale, replace, replace_value, keep_scores):
    """P = softmax(mask(raw * scale)). Returns (P, s) with s the masked scaled scores or None."""
    B, A, T, S = raw.shape
    p = np.empty_like(raw)
    s_out = np.empty_like(raw) if keep_scores else np.empty((0, 0, 0, 0), raw.dtype)
    mode = _NO_MASK if key_mask is None else (_REPLACE if replace else _ADD)
    m = key_mask if key_mask is not None else np.empty((0, 0), raw.dtype)
    run_rows(_softmax_rows, B * A * T, model_work(_NS_FORWARD * S), _rows(raw), m, mode, float(scale),
             float(replace_value), float(_mask_constant(raw.dtype)), A * T, _rows(p), _rows(s_out))
    return p, (s_out if keep_scores else None)


def _rows(x):
    """(B, A, T, S) -> (B*A*T, S), a view (a copy if ``x`` is not contiguous)."""
    return x.reshape(-1, x.shape[-1]) if x.size else x.reshape(0, 0)


@jit
def _softmax_backward_rows(dp, p, key_mask, replace, scale, rows_per_batch, dr, start, stop, chunk):
    S = dp.shape[1]
    t = dp.dtype.type
    scale_t, zero = t(scale), t(0)
    for row in range(start, stop):
        dot = 0.0  # float64
        for j in range(S):
            dot += dp[row, j] * p[row, j]
        dot_t = t(dot)
        for j in range(S):
            dr[row, j] = p[row, j] * (dp[row, j] - dot_t) * scale_t
        if replace:  # masked keys got the constant replace_value: no gradient
            b = row // rows_per_batch
            for j in range(S):
                d = dr[row, j]
                dr[row, j] = d if key_mask[b, j] > 0 else zero


@kernel(twin=attention_softmax_backward_numpy)
def attention_softmax_backward(dp, p, key_mask, scale, replace):
    """d raw from dP. All (B, A, T, S); key_mask (B, S) or None."""
    B, A, T, S = dp.shape
    dr = np.empty_like(dp)
    m = key_mask if key_mask is not None else np.empty((0, 0), dp.dtype)
    run_rows(_softmax_backward_rows, B * A * T, model_work(_NS_BACKWARD * S), _rows(dp), _rows(p), m,
             bool(replace and key_mask is not None), float(scale), A * T, _rows(dr))
    return dr
