"""Dropout: zero each element with probability p, scale survivors by 1/(1-p).

    forward:   y = x * keep / (1 - p),   keep = u >= p with u ~ U[0, 1) from the rng passed in
    backward:  dx = dy * keep / (1 - p)  (the same mask, kept in the cache as one byte per element)

In eval mode, or with p = 0, dropout is the identity and keeps nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.dropout import dropout_apply, dropout_grad


class DropoutMask(NamedTuple):
    keep: np.ndarray  # uint8, the shape of x
    scale: float  # 1 / (1 - p)


def dropout_forward(x, p, rng):
    """Returns (y, mask) or (x, None) when dropout is off.

    x : any shape; p : float in [0, 1); rng : np.random.Generator, or None (identity).
    """
    if rng is None or p <= 0.0:
        return x, None
    u = rng.random(x.shape, dtype=x.dtype)
    scale = 1.0 / (1.0 - p)
    y, keep = dropout_apply(x, u, p, scale)
    return y, DropoutMask(keep, scale)


def dropout_backward(dy, mask):
    """dx = dy * keep / (1 - p) (or dy when the forward pass was the identity)."""
    return dy if mask is None else dropout_grad(dy, mask.keep, mask.scale)
