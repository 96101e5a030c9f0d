"""Masked, scaled softmax over attention scores, and its backward pass.

Dimensions: B batch, A heads, T query tokens, S key tokens (S = T in self-attention).

Forward, for raw scores r = Q K^T (B, A, T, S) and a key mask m (B, S) of 0/1:

    s = r * scale + (1 - m) * finfo.min       (mode "add", transformers)
    s = r * scale  where m = 1, else v        (mode "replace" with value v, the original TF code)
    P = softmax(s, over S)

In "add" mode a fully padded row has every score at finfo.min (the tiny scores are lost to
rounding, as in transformers), so its softmax is uniform; masked keys of a partly padded row get
exactly zero weight. Backward, from dP (B, A, T, S):

    ds = P * (dP - sum_S(dP * P))             dr = ds * scale   (zero at masked keys in "replace")

Softmax statistics are accumulated in float64 inside the kernel.

A sequence with no real token at all (attention_mask all 0) is a degenerate case: in "add" mode
its scores round to finfo.min, so the computed P is uniform and constant in r, while the
backward formula above (which is also what PyTorch's autograd gives transformers) still sends
P * (dP - sum(dP * P)) back. We keep transformers' gradient there; finite differences cannot
agree with it, and no real batch has such a row.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, run_rows


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
    if replace and key_mask is not None:
        ds = ds * (key_mask[:, None, None, :] > 0)
    return ds * p.dtype.type(scale)


# ------------------------------------------------------------------------------ Numba kernels


@jit
def _softmax_rows(raw, key_mask, has_mask, scale, replace, replace_value, minval, keep,
                  p, s_out, start, stop, chunk):
    A, T, S = raw.shape[1], raw.shape[2], raw.shape[3]
    scale_t = raw.dtype.type(scale)
    repl_t = raw.dtype.type(replace_value)
    min_t = raw.dtype.type(minval)
    for row in range(start, stop):  # row = flat (b, a, t)
        b = row // (A * T)
        a = (row // T) % A
        t = row % T
        mx = -np.inf
        for j in range(S):
            v = raw[b, a, t, j] * scale_t
            if has_mask and key_mask[b, j] <= 0:
                v = repl_t if replace else v + min_t
            p[b, a, t, j] = v
            if keep:
                s_out[b, a, t, j] = v
            if v > mx:
                mx = v
        tot = 0.0
        for j in range(S):
            e = np.exp(np.float64(p[b, a, t, j]) - mx)
            p[b, a, t, j] = e
            tot += e
        inv = 1.0 / tot
        for j in range(S):
            p[b, a, t, j] = p[b, a, t, j] * inv


@kernel(twin=attention_softmax_numpy)
def attention_softmax(raw, key_mask, scale, replace, replace_value, keep_scores):
    """P = softmax(mask(raw * scale)). Returns (P, s) with s the masked scaled scores or None."""
    B, A, T, S = raw.shape
    p = np.empty_like(raw)
    s_out = np.empty_like(raw) if keep_scores else np.empty((0, 0, 0, 0), raw.dtype)
    m = key_mask if key_mask is not None else np.empty((0, 0), raw.dtype)
    run_rows(_softmax_rows, B * A * T, 4 * S, raw, m, key_mask is not None, float(scale), bool(replace),
             float(replace_value), float(_mask_constant(raw.dtype)), bool(keep_scores), p, s_out)
    return p, (s_out if keep_scores else None)


@jit
def _softmax_backward_rows(dp, p, key_mask, has_mask, scale, replace, dr, start, stop, chunk):
    A, T, S = dp.shape[1], dp.shape[2], dp.shape[3]
    scale_t = dp.dtype.type(scale)
    zero = dp.dtype.type(0)
    for row in range(start, stop):
        b = row // (A * T)
        a = (row // T) % A
        t = row % T
        dot = 0.0
        for j in range(S):
            dot += dp[b, a, t, j] * p[b, a, t, j]
        dot_t = dp.dtype.type(dot)
        for j in range(S):
            if replace and has_mask and key_mask[b, j] <= 0:
                dr[b, a, t, j] = zero
            else:
                dr[b, a, t, j] = p[b, a, t, j] * (dp[b, a, t, j] - dot_t) * scale_t


@kernel(twin=attention_softmax_backward_numpy)
def attention_softmax_backward(dp, p, key_mask, scale, replace):
    """d raw from dP. All (B, A, T, S); key_mask (B, S) or None."""
    B, A, T, S = dp.shape
    dr = np.empty_like(dp)
    m = key_mask if key_mask is not None else np.empty((0, 0), dp.dtype)
    run_rows(_softmax_backward_rows, B * A * T, 3 * S, dp, p, m, key_mask is not None, float(scale),
             bool(replace), dr)
    return dr
