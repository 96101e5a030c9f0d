"""Dropout: zero each element with probability p, scale survivors by 1/(1-p).

    forward:   y = x * keep / (1 - p),   keep ~ Bernoulli(1 - p), drawn from the rng passed in
    backward:  dx = dy * keep / (1 - p)  (the same mask, kept in the cache)

In eval mode, or with p = 0, dropout is the identity and keeps nothing.
"""

from __future__ import annotations

import numpy as np


def dropout_forward(x, p, rng):
    """Returns (y, scaled_mask) with scaled_mask = keep / (1 - p) in x's dtype, or (x, None).

    x : any shape; p : float in [0, 1); rng : np.random.Generator, or None (identity).
    """
    if rng is None or p <= 0.0:
        return x, None
    scaled = (rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)
    scaled *= x.dtype.type(1.0 / (1.0 - p))
    return x * scaled, scaled


def dropout_backward(dy, scaled_mask):
    """dx = dy * scaled_mask (or dy when the forward pass was the identity)."""
    return dy if scaled_mask is None else dy * scaled_mask
