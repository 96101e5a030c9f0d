"""Task losses, each a forward/backward pair (distillation losses live in ``distill``).

Dimensions: N rows, V classes.

    cross_entropy:  mean over rows with label != -100 of  -log softmax(x_n)[y_n]
                    (transformers' ``CrossEntropyLoss``; a batch with no labelled row gives 0
                    and no gradient, where PyTorch would give nan); ``cross_entropy_per_row``
                    gives each counted row's term (M,) from the forward pass's cache
    mse:            mean((x - y)^2)         (regression heads, num_labels == 1)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels.losses import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward


def check_labels(labels, num_classes: int, name: str, shape=None) -> np.ndarray:
    """Validate integer labels in [0, num_classes) or -100; return them as a contiguous int64 array."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {labels.dtype}")
    if shape is not None and labels.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {labels.shape}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        v = labels[bad].reshape(-1)[0]
        raise ValueError(f"{name} must be in [0, {num_classes}) or {IGNORE_INDEX} (ignored), found {v}")
    return np.ascontiguousarray(labels, dtype=np.int64)


class CrossEntropyCache(NamedTuple):
    logits: np.ndarray
    labels: np.ndarray
    lse: np.ndarray
    count: int


def cross_entropy_forward_mean(logits, labels):
    """Mean cross-entropy. logits (N, V), labels (N,) int64 (checked) -> (loss: float, cache)."""
    total, count, lse = cross_entropy_forward(logits, labels)
    loss = total / count if count else 0.0
    return loss, CrossEntropyCache(logits, labels, lse, count)


def cross_entropy_per_row(cache: CrossEntropyCache) -> np.ndarray:
    """Each counted row's cross-entropy, lse_n - x_{n, y_n}, (M,) float64 in row order.

    Read from what the forward pass kept (the log-sum-exp), no second pass over the logits;
    token dropping's importance is updated from these (``token_dropping``).
    """
    rows = np.flatnonzero(cache.labels != IGNORE_INDEX)  # (M,)
    return cache.lse[rows] - cache.logits[rows, cache.labels[rows]].astype(np.float64)


def cross_entropy_backward_mean(dloss: float, cache: CrossEntropyCache):
    """d logits (N, V) of dloss * mean cross-entropy."""
    g = dloss / cache.count if cache.count else 0.0
    return cross_entropy_backward(cache.logits, cache.labels, cache.lse, g)


class MSECache(NamedTuple):
    diff: np.ndarray


def mse_forward(pred, target):
    """Mean squared error over all elements. pred, target same shape -> (loss: float, cache)."""
    diff = pred.astype(np.float64) - np.asarray(target, dtype=np.float64).reshape(pred.shape)
    return float(np.mean(diff * diff)), MSECache(diff)


def mse_backward(dloss: float, cache: MSECache, dtype):
    """d pred of dloss * mse."""
    return (dloss * 2.0 / cache.diff.size * cache.diff).astype(dtype)
