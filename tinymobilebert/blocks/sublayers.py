"""The two sublayers every MobileBERT block is made of.

Dimensions: N rows (tokens), K input width, M output width.

``dense_norm``: a dense layer, dropout, a residual add and a norm (NoNorm or LayerNorm):

    y = Norm(dropout(x W^T + b) + residual)          names: {prefix}.dense.*, {prefix}.LayerNorm.*

It is ``bottleneck.input`` / ``bottleneck.attention`` (no residual), ``attention.output``,
``ffn.j.output``, ``output`` and ``output.bottleneck`` in transformers' naming. Without dropout
the bias, residual and norm run as one fused kernel (``kernels.norms``).

``dense_act``: a dense layer and an activation, ``y = act(x W^T + b)``, fused the same way; it
is ``intermediate`` and ``ffn.j.intermediate`` (names ``{prefix}.dense.*``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.activations import act_backward, bias_act_forward
from ..kernels.norms import norm_backward, norm_forward
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


class DenseNormCache(NamedTuple):
    prefix: str
    x: np.ndarray          # (N, K) input of the dense layer
    z: np.ndarray          # (N, M) input of the norm
    mean: np.ndarray       # (N,) LayerNorm statistics (empty for NoNorm)
    rstd: np.ndarray
    drop_mask: np.ndarray | None
    layer_norm: bool
    has_residual: bool


def dense_norm_forward(x, residual, params, prefix, layer_norm, eps, p_drop=0.0, rng=None):
    """y = Norm(dropout(x W^T + b) + residual). x (N, K), residual (N, M) or None -> y (N, M).

    ``rng`` is None in eval mode (no dropout).
    """
    W, b = params[prefix + ".dense.weight"], params[prefix + ".dense.bias"]
    gamma, beta = params[prefix + ".LayerNorm.weight"], params[prefix + ".LayerNorm.bias"]
    h = linear_forward(x, W)  # (N, M), bias left to the fused kernel
    mask = None
    if rng is not None and p_drop > 0.0:
        h += b
        h, mask = dropout_forward(h, p_drop, rng)
        b = None
    y, z, mean, rstd = norm_forward(h, b, residual, gamma, beta, eps, layer_norm)
    return y, DenseNormCache(prefix, x, z, mean, rstd, mask, layer_norm, residual is not None)


def dense_norm_backward(dy, cache: DenseNormCache, params, grads):
    """Returns (dx (N, K), dresidual (N, M) or None); accumulates the sublayer's parameter grads."""
    p = cache.prefix
    dz, dgamma, dbeta, dbias = norm_backward(dy, cache.z, params[p + ".LayerNorm.weight"],
                                             cache.mean, cache.rstd, cache.layer_norm)
    grads[p + ".LayerNorm.weight"] += dgamma
    grads[p + ".LayerNorm.bias"] += dbeta
    if cache.drop_mask is None:
        dh = dz
        grads[p + ".dense.bias"] += dbias
    else:
        dh = dropout_backward(dz, cache.drop_mask)
        grads[p + ".dense.bias"] += dh.sum(axis=0)
    dx = linear_backward(dh, cache.x, params[p + ".dense.weight"], grads[p + ".dense.weight"])
    return dx, (dz if cache.has_residual else None)


class DenseActCache(NamedTuple):
    prefix: str
    x: np.ndarray  # (N, K)
    z: np.ndarray  # (N, M) pre-activation
    code: int


def dense_act_forward(x, params, prefix, code):
    """y = act(x W^T + b). x (N, K) -> y (N, M); ``code`` from ``kernels.activations.act_code``."""
    h = linear_forward(x, params[prefix + ".dense.weight"])  # (N, M)
    y, z = bias_act_forward(h, params[prefix + ".dense.bias"], code)
    return y, DenseActCache(prefix, x, z, code)


def dense_act_backward(dy, cache: DenseActCache, params, grads):
    """Returns dx (N, K); accumulates the dense layer's grads."""
    p = cache.prefix
    dz, dbias = act_backward(dy, cache.z, cache.code)
    grads[p + ".dense.bias"] += dbias
    return linear_backward(dz, cache.x, params[p + ".dense.weight"], grads[p + ".dense.weight"])
