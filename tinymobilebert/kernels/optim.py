"""Optimizer update loops over the flat parameter buffer, and the squared-norm reduction.

Dimensions: N elements in the flat buffers (every tensor plus alignment padding), S tensors
("segments"), C chunks that ``run_rows`` splits N into.

An optimizer updates the whole model with one kernel call. ``param``, ``grad`` and the moment
buffers are the flat (N,) arrays of a ``ParameterStore``; per-tensor hyper-parameters arrive as
per-segment (S,) arrays next to ``seg_start``/``seg_stop`` (S,) int64, the sorted,
non-overlapping ``store.slices`` ranges. Elements outside every segment (the padding) are never
read or written. A chunk ``[start, stop)`` finds its first segment by binary search, then walks
the segments it overlaps in order, so a chunk boundary may fall inside a tensor.

    SGD     b <- mu*b + g                              (b = g when mu == 0)
            p <- p*decay_s - lr_s*b                    decay_s = 1 - lr_s*wd_s (decoupled)
    AdamW   m <- b1*m + (1-b1)*g
            v <- b2*v + (1-b2)*g^2
            p <- p*decay_s - step_s * m / (sqrt(v)/sqrt(bc2) + eps)    step_s = lr_s/bc1
    LAMB    pass 1: m, v as AdamW; r = (m*c1)/(sqrt(v*c2) + eps) + wd_s*p; ||p||^2_s, ||r||^2_s
            pass 2: p <- p - scale_s*r                 scale_s = lr_s * trust_ratio_s

with g = grad*grad_scale (global-norm clipping folded in). A segment whose gate is False gets
m = v = 0 (and r = 0) and its parameters are left alone: MobileBERT's progressive transfer gates
the Adam moments of a layer to zero before its phase (see ``tinymobilebert.optim``).

Two habits keep the inner loops vectorised by LLVM (about 4x faster here; checked in the
generated IR): each loop runs over 0-based views ``p = param[lo:hi]`` (a signed index from
``range(lo, hi)`` gets a negative-index wrap-around check), and divides with ``np.divide``
(Numba's ``/`` on floats checks for a zero divisor to raise ZeroDivisionError, a branch that
stops vectorisation; ``np.divide`` has plain IEEE semantics, and the divisors here are >= eps).

dtype: param, grad and moments share one dtype, float32 or float64. Every scalar and per-segment
hyper-parameter is cast to that dtype *before* the loop (Numba would promote float32 * float64
to float64), so float32 updates are float32 arithmetic throughout, like torch's. The one
exception is the squared norms: they accumulate in float64, because a float32 running sum over a
4M-element embedding would lose about three digits, while the square of a float32 is exact in
float64.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, partial_rows, run_rows


def _check_same_dtype(param, **arrays):
    """float32/float64 flat arrays, all of param's dtype and length (empty arrays skip length)."""
    if param.dtype not in (np.float32, np.float64):
        raise TypeError(f"param must be float32 or float64, got {param.dtype}")
    for name, a in arrays.items():
        if a.dtype != param.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but param has {param.dtype}")
        if a.ndim != 1 or (a.size and a.shape != param.shape):
            raise ValueError(f"{name} has shape {a.shape}, expected the flat shape {param.shape}")


def _check_flat(x):
    if x.dtype not in (np.float32, np.float64) or x.ndim != 1:
        raise TypeError(f"x must be a flat float32 or float64 array, got {x.dtype} {x.shape}")


def _segments(seg_start, seg_stop, n, **per_segment):
    """Per-segment arrays as (S,) arrays; starts/stops int64, in range, sorted."""
    seg_start = np.ascontiguousarray(seg_start, dtype=np.int64)
    seg_stop = np.ascontiguousarray(seg_stop, dtype=np.int64)
    S = seg_start.shape[0]
    if seg_stop.shape != (S,) or any(a.shape != (S,) for a in per_segment.values()):
        raise ValueError("seg_start, seg_stop and every per-segment array must have shape (S,)")
    if S and (seg_start[0] < 0 or seg_stop[-1] > n or np.any(seg_stop < seg_start)
              or np.any(seg_start[1:] < seg_stop[:-1])):
        raise ValueError("segments must be sorted, non-overlapping ranges inside the flat buffer")
    return seg_start, seg_stop


# ------------------------------------------------------------------------------ NumPy twins


def sgd_update_numpy(param, grad, momentum_buffer, seg_start, seg_stop, seg_lr, seg_decay,
                     momentum, grad_scale):
    """In place: b <- mu*b + g; p <- p*decay_s - lr_s*b (b = g when momentum == 0).

    Parameters
    ----------
    param, grad : (N,)        momentum_buffer : (N,), or (0,) when momentum == 0
    seg_start, seg_stop : (S,) int      seg_lr, seg_decay : (S,)
    momentum, grad_scale : float
    """
    _check_same_dtype(param, grad=grad, momentum_buffer=momentum_buffer)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size, seg_lr=seg_lr, seg_decay=seg_decay)
    t = param.dtype.type
    lr_s, decay_s = np.asarray(seg_lr, param.dtype), np.asarray(seg_decay, param.dtype)
    mu, gs = t(momentum), t(grad_scale)
    for s in range(seg_start.shape[0]):
        a, b = seg_start[s], seg_stop[s]
        g = grad[a:b] * gs
        if mu != 0:
            momentum_buffer[a:b] = mu * momentum_buffer[a:b] + g
            g = momentum_buffer[a:b]
        param[a:b] = param[a:b] * decay_s[s] - lr_s[s] * g


def adamw_update_numpy(param, grad, exp_avg, exp_avg_sq, seg_start, seg_stop, seg_step_size,
                       seg_decay, seg_gate, beta1, beta2, eps, bias_correction2_sqrt, grad_scale):
    """In place, torch.optim.AdamW's update, per segment (see the module notes).

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : (N,)
    seg_start, seg_stop : (S,) int      seg_step_size, seg_decay : (S,)     seg_gate : (S,) bool
    beta1, beta2, eps, bias_correction2_sqrt, grad_scale : float
    """
    _check_same_dtype(param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size, seg_step_size=seg_step_size,
                                    seg_decay=seg_decay, seg_gate=seg_gate)
    t = param.dtype.type
    step_s, decay_s = np.asarray(seg_step_size, param.dtype), np.asarray(seg_decay, param.dtype)
    b1, b2, omb1, omb2 = t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2)
    e, bc2s, gs = t(eps), t(bias_correction2_sqrt), t(grad_scale)
    for s in range(seg_start.shape[0]):
        a, b = seg_start[s], seg_stop[s]
        if not seg_gate[s]:
            exp_avg[a:b] = 0
            exp_avg_sq[a:b] = 0
            continue
        m, v = _adam_moments_numpy(grad[a:b] * gs, exp_avg[a:b], exp_avg_sq[a:b], b1, b2, omb1, omb2)
        param[a:b] = param[a:b] * decay_s[s] - step_s[s] * (m / (np.sqrt(v) / bc2s + e))


def _adam_moments_numpy(g, exp_avg, exp_avg_sq, b1, b2, omb1, omb2):
    """Adam's moments in place on one segment's views: m = b1 m + (1 - b1) g,
    v = b2 v + (1 - b2) g^2 (omb1 = 1 - b1, omb2 = 1 - b2, as the kernels get them). Returns (m, v)."""
    m = b1 * exp_avg + omb1 * g
    v = b2 * exp_avg_sq + omb2 * (g * g)
    exp_avg[...], exp_avg_sq[...] = m, v
    return m, v


def lamb_moments_numpy(param, grad, exp_avg, exp_avg_sq, update, seg_start, seg_stop,
                       seg_weight_decay, seg_gate, beta1, beta2, eps, inv_bias_correction1,
                       inv_bias_correction2, grad_scale):
    """LAMB pass 1, in place: moments and the raw update r. Returns (S, 2) float64 squared norms.

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : (N,)      update : (N,), written (r)
    seg_start, seg_stop : (S,) int      seg_weight_decay : (S,)     seg_gate : (S,) bool
    beta1, beta2, eps, inv_bias_correction1, inv_bias_correction2, grad_scale : float
        (MobileBERT: inverse bias corrections 1.0, i.e. none)

    Returns
    -------
    sq_norms : (S, 2) float64
        ``[:, 0]`` = ||p_s||^2 (before the update), ``[:, 1]`` = ||r_s||^2.
    """
    _check_same_dtype(param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, update=update)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size,
                                    seg_weight_decay=seg_weight_decay, seg_gate=seg_gate)
    t = param.dtype.type
    wd_s = np.asarray(seg_weight_decay, param.dtype)
    b1, b2, omb1, omb2 = t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2)
    e, c1, c2, gs = t(eps), t(inv_bias_correction1), t(inv_bias_correction2), t(grad_scale)
    sq = np.zeros((seg_start.shape[0], 2))  # (S, 2) float64
    for s in range(seg_start.shape[0]):
        a, b = seg_start[s], seg_stop[s]
        p64 = param[a:b].astype(np.float64)
        sq[s, 0] = p64 @ p64
        if not seg_gate[s]:
            exp_avg[a:b] = 0
            exp_avg_sq[a:b] = 0
            update[a:b] = 0
            continue
        m, v = _adam_moments_numpy(grad[a:b] * gs, exp_avg[a:b], exp_avg_sq[a:b], b1, b2, omb1, omb2)
        r = (m * c1) / (np.sqrt(v * c2) + e) + wd_s[s] * param[a:b]
        update[a:b] = r
        r64 = r.astype(np.float64)
        sq[s, 1] = r64 @ r64
    return sq


def lamb_apply_numpy(param, update, seg_start, seg_stop, seg_scale):
    """LAMB pass 2, in place: p <- p - scale_s * r. param, update : (N,); seg_scale : (S,)."""
    _check_same_dtype(param, update=update)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size, seg_scale=seg_scale)
    scale_s = np.asarray(seg_scale, param.dtype)
    for s in range(seg_start.shape[0]):
        a, b = seg_start[s], seg_stop[s]
        param[a:b] -= scale_s[s] * update[a:b]


def squared_norm_numpy(x):
    """sum(x**2) over a flat (N,) array, accumulated in float64; returns a Python float."""
    _check_flat(x)
    x64 = x.astype(np.float64)
    return float(x64 @ x64)


# ------------------------------------------------------------------------------ Numba kernels


@jit
def _first_segment(seg_stop, start):
    """Index of the first segment that ends after ``start`` (the first one a chunk touches)."""
    return np.searchsorted(seg_stop, start, side="right")


@jit
def _sgd_rows(param, grad, momentum_buffer, seg_start, seg_stop, lr_s, decay_s, mu, gs,
              start, stop, chunk):
    s = _first_segment(seg_stop, start)
    while s < seg_start.shape[0] and seg_start[s] < stop:
        lo, hi = max(start, seg_start[s]), min(stop, seg_stop[s])
        p, grd = param[lo:hi], grad[lo:hi]  # views: 0-based loops vectorise (module notes)
        lr, decay = lr_s[s], decay_s[s]
        if mu != 0:
            buf = momentum_buffer[lo:hi]
            for j in range(hi - lo):
                b = mu * buf[j] + grd[j] * gs
                buf[j] = b
                p[j] = p[j] * decay - lr * b
        else:
            for j in range(hi - lo):
                p[j] = p[j] * decay - lr * (grd[j] * gs)
        s += 1


@kernel(twin=sgd_update_numpy)
def sgd_update(param, grad, momentum_buffer, seg_start, seg_stop, seg_lr, seg_decay,
               momentum, grad_scale):
    """In place: b <- mu*b + g; p <- p*decay_s - lr_s*b. Arguments as ``sgd_update_numpy``."""
    _check_same_dtype(param, grad=grad, momentum_buffer=momentum_buffer)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size, seg_lr=seg_lr, seg_decay=seg_decay)
    t = param.dtype.type
    if momentum != 0 and momentum_buffer.size != param.size:
        raise ValueError("momentum_buffer must have param's shape when momentum != 0")
    run_rows(_sgd_rows, param.size, 1, param, grad, momentum_buffer, seg_start, seg_stop,
             np.asarray(seg_lr, param.dtype), np.asarray(seg_decay, param.dtype),
             t(momentum), t(grad_scale))


@jit
def _adamw_rows(param, grad, exp_avg, exp_avg_sq, seg_start, seg_stop, step_s, decay_s, gate_s,
                b1, b2, omb1, omb2, eps, bc2s, gs, start, stop, chunk):
    s = _first_segment(seg_stop, start)
    while s < seg_start.shape[0] and seg_start[s] < stop:
        lo, hi = max(start, seg_start[s]), min(stop, seg_stop[s])
        p, grd, m_, v_ = param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi]
        if not gate_s[s]:
            m_[:] = 0
            v_[:] = 0
        else:
            step, decay = step_s[s], decay_s[s]
            for j in range(hi - lo):
                g = grd[j] * gs
                m = b1 * m_[j] + omb1 * g
                v = b2 * v_[j] + omb2 * (g * g)
                m_[j] = m
                v_[j] = v
                p[j] = p[j] * decay - step * np.divide(m, np.sqrt(v) / bc2s + eps)
        s += 1


@kernel(twin=adamw_update_numpy)
def adamw_update(param, grad, exp_avg, exp_avg_sq, seg_start, seg_stop, seg_step_size,
                 seg_decay, seg_gate, beta1, beta2, eps, bias_correction2_sqrt, grad_scale):
    """In place, torch.optim.AdamW's update per segment. Arguments as ``adamw_update_numpy``."""
    _check_same_dtype(param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size, seg_step_size=seg_step_size,
                                    seg_decay=seg_decay, seg_gate=seg_gate)
    t = param.dtype.type
    run_rows(_adamw_rows, param.size, 1, param, grad, exp_avg, exp_avg_sq, seg_start, seg_stop,
             np.asarray(seg_step_size, param.dtype), np.asarray(seg_decay, param.dtype),
             np.ascontiguousarray(seg_gate, dtype=np.bool_),
             t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2), t(eps),
             t(bias_correction2_sqrt), t(grad_scale))


@jit
def _lamb_moments_rows(param, grad, exp_avg, exp_avg_sq, update, seg_start, seg_stop, wd_s,
                       gate_s, b1, b2, omb1, omb2, eps, c1, c2, gs, partial, start, stop, chunk):
    s = _first_segment(seg_stop, start)
    while s < seg_start.shape[0] and seg_start[s] < stop:
        lo, hi = max(start, seg_start[s]), min(stop, seg_stop[s])
        p, grd, m_, v_, r_ = param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], update[lo:hi]
        pp = 0.0  # float64 accumulators (see the module notes)
        rr = 0.0
        if not gate_s[s]:
            m_[:] = 0
            v_[:] = 0
            r_[:] = 0
            for j in range(hi - lo):
                pp += np.float64(p[j]) * np.float64(p[j])
        else:
            wd = wd_s[s]
            for j in range(hi - lo):
                g = grd[j] * gs
                m = b1 * m_[j] + omb1 * g
                v = b2 * v_[j] + omb2 * (g * g)
                m_[j] = m
                v_[j] = v
                r = np.divide(m * c1, np.sqrt(v * c2) + eps) + wd * p[j]
                r_[j] = r
                pp += np.float64(p[j]) * np.float64(p[j])
                rr += np.float64(r) * np.float64(r)
        partial[chunk, s, 0] += pp  # this chunk's own row: no other thread writes it
        partial[chunk, s, 1] += rr
        s += 1


@kernel(twin=lamb_moments_numpy)
def lamb_moments(param, grad, exp_avg, exp_avg_sq, update, seg_start, seg_stop,
                 seg_weight_decay, seg_gate, beta1, beta2, eps, inv_bias_correction1,
                 inv_bias_correction2, grad_scale):
    """LAMB pass 1 in place; returns (S, 2) float64 squared norms. As ``lamb_moments_numpy``."""
    _check_same_dtype(param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, update=update)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size,
                                    seg_weight_decay=seg_weight_decay, seg_gate=seg_gate)
    t = param.dtype.type
    partial = np.zeros((partial_rows(param.size, 1), seg_start.shape[0], 2))  # (C, S, 2) float64
    run_rows(_lamb_moments_rows, param.size, 1, param, grad, exp_avg, exp_avg_sq, update,
             seg_start, seg_stop, np.asarray(seg_weight_decay, param.dtype),
             np.ascontiguousarray(seg_gate, dtype=np.bool_),
             t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2), t(eps),
             t(inv_bias_correction1), t(inv_bias_correction2), t(grad_scale), partial)
    return partial.sum(axis=0)  # (S, 2)


@jit
def _lamb_apply_rows(param, update, seg_start, seg_stop, scale_s, start, stop, chunk):
    s = _first_segment(seg_stop, start)
    while s < seg_start.shape[0] and seg_start[s] < stop:
        lo, hi = max(start, seg_start[s]), min(stop, seg_stop[s])
        p, r = param[lo:hi], update[lo:hi]
        scale = scale_s[s]
        for j in range(hi - lo):
            p[j] -= scale * r[j]
        s += 1


@kernel(twin=lamb_apply_numpy)
def lamb_apply(param, update, seg_start, seg_stop, seg_scale):
    """LAMB pass 2, in place: p <- p - scale_s * r. As ``lamb_apply_numpy``."""
    _check_same_dtype(param, update=update)
    seg_start, seg_stop = _segments(seg_start, seg_stop, param.size, seg_scale=seg_scale)
    run_rows(_lamb_apply_rows, param.size, 1, param, update, seg_start, seg_stop,
             np.asarray(seg_scale, param.dtype))


@jit
def _squared_norm_rows(x, partial, start, stop, chunk):
    xs = x[start:stop]
    acc = 0.0  # float64 accumulator, whatever x's dtype
    for j in range(stop - start):
        xj = np.float64(xs[j])
        acc += xj * xj
    partial[chunk] = acc


@kernel(twin=squared_norm_numpy)
def squared_norm(x):
    """sum(x**2) over a flat (N,) array, accumulated in float64; returns a Python float."""
    _check_flat(x)
    partial = np.zeros(partial_rows(x.size, 1))  # (C,) float64, one slot per chunk
    run_rows(_squared_norm_rows, x.size, 1, x, partial)
    return float(partial.sum())
