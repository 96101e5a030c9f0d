"""Activation kernels, fused with the bias add of the dense layer before them.

Dimensions: N rows, C features.

    z = h + bias;  y = act(z)                 dz = dy * act'(z),  dbias = sum_rows(dz)

    relu       max(z, 0)                                    1[z > 0]
    relu6      min(max(z, 0), 6)                            1[0 < z < 6]
    gelu       z/2 * erfc(-z/sqrt2)        (exact, transformers' "gelu"; erfc rather than
                                            1 + erf, which cancels to 0 for z << 0 in float32)
                                                            Phi(z) + z * phi(z)
    gelu_new   z/2 * (1 + tanh(u)),  u = sqrt(2/pi) * (z + 0.044715 z^3)
               (the tanh form; the original TF code's "gelu")
                                                            (1 + t)/2 + z/2 (1 - t^2) u'(z)
    tanh       tanh(z)                                      sech^2 z = 4a / (1 + a)^2,  a = exp(-2|z|)
                                                            (1 - tanh^2 z cancels for large |z|)

The derivatives at the kinks follow PyTorch (relu'(0) = 0), so gradients match transformers.
NaN goes through as in NumPy and PyTorch: relu(NaN) = NaN (np.maximum), and dz = dy * act'(z),
so an infinite dy meets a zero slope as inf * 0 = NaN. Far out in the tails the derivatives are
exact constants (see ``_GELU_NEW_FLAT``), the same in the twin and the kernel.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import exp, jit, kernel, model_work, partial_rows, run_rows, tanh

ACT_CODES = {"relu": 0, "relu6": 1, "gelu": 2, "gelu_new": 3, "gelu_pytorch_tanh": 3, "tanh": 4}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# single-threaded ns per element by activation code (benchmarks/kernels_micro.py), how run_rows
# decides to split
_NS_FORWARD = (0.25, 0.25, 16.0, 1.3, 1.5)
_NS_BACKWARD = (0.25, 0.25, 16.0, 1.4, 1.0)
# Past these |z| the derivatives are taken as exactly 0 (or 1): gelu 10 (|error| < 1e-21),
# gelu_new 6 (< 1e-9), tanh 20 (< 2e-17). There the twin's float64 formula and the kernel's
# float32 one would round differently (1 + tanh(u) cancels to 0 in the twin; products underflow
# in the kernel), and with an infinite upstream gradient inf * (+tiny), inf * (-tiny) and
# inf * 0 are three different answers. One exact value on both sides keeps them equal.
_GELU_NEW_FLAT = 6.0
_BIAS_BLOCK = 16  # rows per block of the bias-gradient sum (see _act_backward_rows)


def act_code(name: str) -> int:
    """The integer code the kernels use for activation ``name``."""
    try:
        return ACT_CODES[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACT_CODES)}") from None


# ------------------------------------------------------------------------------ NumPy twins


def _erfc_numpy(x):
    # numpy has no erfc; math.erfc elementwise is exact enough for a reference
    return np.vectorize(math.erfc, otypes=[np.float64])(x)


def act_numpy(z, code):
    """y = act(z) for activation ``code`` (see ``ACT_CODES``)."""
    if code == 0:
        return np.maximum(z, 0)
    if code == 1:
        return np.minimum(np.maximum(z, 0), 6).astype(z.dtype)
    if code == 2:
        return (0.5 * z * _erfc_numpy(-z * _INV_SQRT2)).astype(z.dtype)
    if code == 3:
        return (0.5 * z * (1.0 + np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3)))).astype(z.dtype)
    if code == 4:
        return np.tanh(z)
    raise ValueError(f"unknown activation code {code}")


def act_grad_numpy(z, code):
    """act'(z), elementwise."""
    if code == 0:
        return (z > 0).astype(z.dtype)
    if code == 1:
        return ((z > 0) & (z < 6)).astype(z.dtype)
    z64 = z.astype(np.float64)
    if code == 2:
        d = 0.5 * _erfc_numpy(-z64 * _INV_SQRT2) + z64 * np.exp(-0.5 * z64 * z64) * _INV_SQRT_2PI
        d = np.where(z64 > 10.0, 1.0, np.where(z64 < -10.0, 0.0, d))  # |d - 0 or 1| < 1e-21 there
    elif code == 3:
        zc = np.clip(z64, -_GELU_NEW_FLAT, _GELU_NEW_FLAT)
        t = np.tanh(_SQRT_2_OVER_PI * (zc + 0.044715 * zc**3))
        d = 0.5 * (1.0 + t) + 0.5 * zc * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * zc * zc)
        d = np.where(z64 > _GELU_NEW_FLAT, 1.0, np.where(z64 < -_GELU_NEW_FLAT, 0.0, d))
    elif code == 4:
        a = np.exp(-2.0 * np.abs(z64))
        d = np.where(np.abs(z64) > 20.0, 0.0, 4.0 * a / (1.0 + a) ** 2)  # sech^2 z < 2e-17 there
    else:
        raise ValueError(f"unknown activation code {code}")
    return d.astype(z.dtype)


def bias_act_forward_numpy(h, bias, code):
    """z = h + bias; y = act(z). Returns (y, z). h: (N, C), bias: (C,) or None."""
    z = h + bias if bias is not None else h.copy()
    return act_numpy(z, code), z


def act_backward_numpy(dy, z, code):
    """Returns (dz, dbias = sum_rows(dz)). dy, z: (N, C)."""
    dz = dy * act_grad_numpy(z, code)
    return dz, dz.sum(axis=0)


# ------------------------------------------------------------------------------ Numba kernels
# One inner loop per activation (the code is tested once per row, never per element), each in
# the dtype of the arrays. A missing bias is passed as zeros (h + 0 is h). relu, relu6, gelu_new
# and tanh vectorise (exp and tanh come from kernels._jit); gelu calls math.erfc, a scalar libm call.
# gelu_new uses 1 + tanh(u) = 2 s, s = sigmoid(2u) = 1 / (1 + e^(-2u)), so y = z s and
# act'(z) = s + 2 z u'(z) s (1 - s), with s (1 - s) = s e^(-2u) s.


@jit
def _bias_act_rows(h, bias, code, y, z, start, stop, chunk):
    C = h.shape[1]
    t = h.dtype.type
    zero, one, six = t(0), t(1), t(6)
    c0, c1, c2 = t(_INV_SQRT2), t(-2 * _SQRT_2_OVER_PI), t(0.044715)
    for n in range(start, stop):
        for c in range(C):
            z[n, c] = h[n, c] + bias[c]
        if code == 0:  # relu: NaN stays NaN, as np.maximum (v > 0 would send it to 0)
            for c in range(C):
                v = z[n, c]
                y[n, c] = zero if v <= zero else v
        elif code == 1:  # relu6
            for c in range(C):
                v = z[n, c]
                y[n, c] = min(max(v, zero), six)
        elif code == 2:  # gelu (exact)
            for c in range(C):
                v = z[n, c]
                y[n, c] = t(0.5) * v * math.erfc(-v * c0)
        elif code == 3:  # gelu_new: z sigmoid(2u); z^3 = inf gives z / inf = 0 or z / 1 = z
            for c in range(C):
                v = z[n, c]
                y[n, c] = v / (one + exp(c1 * (v + c2 * v * v * v)))
        else:  # tanh
            for c in range(C):
                y[n, c] = tanh(z[n, c])


@kernel(twin=bias_act_forward_numpy)
def bias_act_forward(h, bias, code):
    """z = h + bias; y = act(z). Returns (y, z). h: (N, C), bias: (C,) or None."""
    N, C = h.shape
    y = np.empty_like(h)
    z = np.empty_like(h)
    b = bias if bias is not None else np.zeros(C, h.dtype)
    run_rows(_bias_act_rows, N, model_work(_NS_FORWARD[code] * C), h, b, int(code), y, z)
    return y, z


@jit
def _act_backward_row(dy, z, code, dz, acc, n):
    """dz[n] = dy[n] * act'(z[n]), one loop per activation; acc (C,) += dz[n] in the same loop."""
    C = dy.shape[1]
    t = dy.dtype.type
    zero, one, six, ten, twenty, flat = t(0), t(1), t(6), t(10), t(20), t(_GELU_NEW_FLAT)
    c0, c1, c2, c3 = t(_INV_SQRT2), t(_INV_SQRT_2PI), t(_SQRT_2_OVER_PI), t(0.044715)
    if code == 0:  # relu: dy times the 0/1 slope, as the twin (an inf dy at z <= 0 gives NaN)
        for c in range(C):
            g = dy[n, c] * (one if z[n, c] > zero else zero)  # a select, so the loop vectorises
            dz[n, c] = g
            acc[c] += g
    elif code == 1:  # relu6
        for c in range(C):
            v = z[n, c]
            g = dy[n, c] * (one if (v > zero and v < six) else zero)
            dz[n, c] = g
            acc[c] += g
    elif code == 2:  # gelu (exact): Phi(z) + z phi(z); past |z| = 10 it is 0 or 1 to < 1e-21
        for c in range(C):
            v = z[n, c]
            d = t(0.5) * math.erfc(-v * c0) + v * exp(t(-0.5) * v * v) * c1
            d = one if v > ten else (zero if v < -ten else d)
            g = dy[n, c] * d
            dz[n, c] = g
            acc[c] += g
    elif code == 3:  # gelu_new; past |z| = _GELU_NEW_FLAT the derivative is 1 or 0 (module notes)
        for c in range(C):
            v = min(max(z[n, c], -flat), flat)
            # e <= e^80 keeps every product below finite whatever order fastmath picks
            e = exp(min(t(-2) * c2 * (v + c3 * v * v * v), t(80)))
            s = one / (one + e)
            d = s + t(2) * v * c2 * (one + t(3) * c3 * v * v) * (e * s) * s
            d = one if z[n, c] > flat else (zero if z[n, c] < -flat else d)
            g = dy[n, c] * d
            dz[n, c] = g
            acc[c] += g
    else:  # tanh: sech^2 z = 4a / (1 + a)^2, a = exp(-2|z|); 0 past |z| = 20, as the twin
        for c in range(C):
            v = abs(z[n, c])
            a = exp(t(-2) * v)
            d = t(4) * a / ((one + a) * (one + a))
            g = dy[n, c] * (zero if v > twenty else d)
            dz[n, c] = g
            acc[c] += g


@jit
def _act_backward_rows(dy, z, code, dz, partial, start, stop, chunk):
    C = dy.shape[1]
    pbias = partial[chunk]  # float64 (C,)
    # dbias = sum_rows(dz): each block of _BIAS_BLOCK rows sums in the arrays' dtype, in the
    # loop that writes dz (acc stays in L1), and each block's sum is added to the float64 partial
    acc = np.empty(C, dy.dtype)
    for b0 in range(start, stop, _BIAS_BLOCK):
        acc[:] = 0
        for n in range(b0, min(b0 + _BIAS_BLOCK, stop)):
            _act_backward_row(dy, z, code, dz, acc, n)
        for c in range(C):
            pbias[c] += acc[c]


@kernel(twin=act_backward_numpy)
def act_backward(dy, z, code):
    """Returns (dz, dbias = sum_rows(dz)). dy, z: (N, C)."""
    N, C = dy.shape
    work = model_work(_NS_BACKWARD[code] * C)
    partial = np.zeros((partial_rows(N, work), C))  # float64 partials, one row per chunk
    dz = np.empty_like(dy)
    run_rows(_act_backward_rows, N, work, dy, z, int(code), dz, partial)
    return dz, partial.sum(axis=0).astype(dy.dtype)
