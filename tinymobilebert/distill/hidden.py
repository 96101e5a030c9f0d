"""Hidden-state MSE: DynaBERT's loss on hidden states (no normalisation, padding included).

Dimensions: B batch, T tokens, H hidden width (any shape works: the mean runs over every entry).

    loss = mean over all entries of (h_s - h_t)^2         (``torch.nn.MSELoss()``)
    dh_s = 2 (h_s - h_t) / (number of entries)

Follows huawei-noah ``DynaBERT/run_glue.py`` (``loss_mse = MSELoss()`` on every pair of hidden
states, the embedding output included). Unlike feature-map transfer there is no LayerNorm, and
padded positions count. No Numba kernel: the loss is one subtraction pass, memory-bound already.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import student_teacher, upstream


class HiddenMSECache(NamedTuple):
    h_s: np.ndarray  # the student's states (a reference, not a copy)
    h_t: np.ndarray  # the teacher's


def hidden_mse_forward(h_s, h_t):
    """Mean squared error between a student and a teacher hidden state.

    Parameters
    ----------
    h_s : (B, T, H) float32 or float64 (any shape)
    h_t : same shape (a constant: no gradient flows to it)

    Returns
    -------
    loss : float
        Accumulated in float64.
    cache : HiddenMSECache

    Notes
    -----
    ``loss = 1/n sum_i (h_s_i - h_t_i)^2`` over all n entries. Follows huawei-noah
    ``DynaBERT/run_glue.py`` (``loss_mse(student_rep, teacher_rep.detach())``).
    """
    h_s, h_t = student_teacher(h_s, h_t, ("h_s", "h_t"), "hidden_mse_forward")
    d = h_s.astype(np.float64) - h_t
    return float(np.vdot(d, d)) / d.size, HiddenMSECache(h_s, h_t)


def hidden_mse_backward(dloss, cache: HiddenMSECache) -> np.ndarray:
    """d loss / d h_s, shape and dtype of h_s, times the upstream gradient ``dloss``."""
    g = upstream(dloss, "hidden_mse_backward")
    h_s, h_t = cache
    d = h_s.astype(np.float64) - h_t
    return (d * (2.0 * g / d.size)).astype(h_s.dtype)
