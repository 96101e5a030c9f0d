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
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, kernel, partial_rows, run_rows

ACT_CODES = {"relu": 0, "relu6": 1, "gelu": 2, "gelu_new": 3, "gelu_pytorch_tanh": 3, "tanh": 4}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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
    elif code == 3:
        zc = np.clip(z64, -10.0, 10.0)  # past |z| = 10 the derivative is 0 or 1 to < 1e-37
        t = np.tanh(_SQRT_2_OVER_PI * (zc + 0.044715 * zc**3))
        d = 0.5 * (1.0 + t) + 0.5 * zc * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * zc * zc)
        d = np.where(z64 > 10.0, 1.0, np.where(z64 < -10.0, 0.0, d))
    elif code == 4:
        a = np.exp(-2.0 * np.abs(z64))
        d = 4.0 * a / (1.0 + a) ** 2
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


@jit
def _act(z, code):
    t = type(z)
    if code == 0:
        return z if z > 0 else t(0)
    if code == 1:
        return t(0) if z <= 0 else (t(6) if z >= 6 else z)
    if code == 2:
        return t(0.5) * z * math.erfc(-z * t(_INV_SQRT2))
    if code == 3:
        return t(0.5) * z * (t(1) + math.tanh(t(_SQRT_2_OVER_PI) * (z + t(0.044715) * z * z * z)))
    return math.tanh(z)


@jit
def _act_grad(z, code):
    t = type(z)
    if code == 0:
        return t(1) if z > 0 else t(0)
    if code == 1:
        return t(1) if (z > 0 and z < 6) else t(0)
    if code == 2:
        return (t(0.5) * math.erfc(-z * t(_INV_SQRT2))
                + z * math.exp(t(-0.5) * z * z) * t(_INV_SQRT_2PI))
    if code == 3:
        if abs(z) > 10:  # the derivative is 0 or 1 to < 1e-37; avoids 0 * inf when z^3 overflows
            return t(1) if z > 0 else t(0)
        th = math.tanh(t(_SQRT_2_OVER_PI) * (z + t(0.044715) * z * z * z))
        return (t(0.5) * (t(1) + th)
                + t(0.5) * z * (t(1) - th * th) * t(_SQRT_2_OVER_PI) * (t(1) + t(3 * 0.044715) * z * z))
    a = math.exp(t(-2) * abs(z))
    return t(4) * a / ((t(1) + a) * (t(1) + a))


@jit
def _bias_act_rows(h, bias, has_bias, code, y, z, start, stop, chunk):
    C = h.shape[1]
    for n in range(start, stop):
        for c in range(C):
            v = h[n, c]
            if has_bias:
                v += bias[c]
            z[n, c] = v
            y[n, c] = _act(v, code)


@kernel(twin=bias_act_forward_numpy)
def bias_act_forward(h, bias, code):
    """z = h + bias; y = act(z). Returns (y, z). h: (N, C), bias: (C,) or None."""
    N, C = h.shape
    y = np.empty_like(h)
    z = np.empty_like(h)
    b = bias if bias is not None else np.empty(0, h.dtype)
    run_rows(_bias_act_rows, N, 8 * C, h, b, bias is not None, int(code), y, z)
    return y, z


@jit
def _act_backward_rows(dy, z, code, dz, pbias, start, stop, chunk):
    C = dy.shape[1]
    for n in range(start, stop):
        for c in range(C):
            d = dy[n, c] * _act_grad(z[n, c], code)
            dz[n, c] = d
            pbias[chunk, c] += d


@kernel(twin=act_backward_numpy)
def act_backward(dy, z, code):
    """Returns (dz, dbias = sum_rows(dz)). dy, z: (N, C)."""
    N, C = dy.shape
    pbias = np.zeros((partial_rows(N, 8 * C), C))  # float64 partials, one row per chunk
    dz = np.empty_like(dy)
    run_rows(_act_backward_rows, N, 8 * C, dy, z, int(code), dz, pbias)
    return dz, pbias.sum(axis=0).astype(dy.dtype)
