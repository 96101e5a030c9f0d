"""Feature-map transfer (FMT): the student's hidden states imitate the teacher's, after a
parameter-free LayerNorm on both.

Dimensions: B batch, T tokens, H inter-block width, N = B*T rows.

The paper (MobileBERT, Sun et al. 2020, "Feature Map Transfer") writes, for layer l,

    L_FMT^l = 1/(T N) sum_t sum_n (H^tr_{t,l,n} - H^st_{t,l,n})^2

The released code (google-research ``mobilebert/run_pretraining.py``, ``model_fn``, the
``hidden_distill_%d`` scope) normalises both sides first, with ``contrib.layers.layer_norm(...,
trainable=False)``: gamma 1, beta 0, epsilon 1e-12, statistics over the last dimension:

    LN(h) = (h - mean_H(h)) / sqrt(var_H(h) + 1e-12)
    loss  = mean over B*T*H of (LN(h_t) - LN(h_s))^2        (``tf.losses.mean_squared_error``)

The mean runs over every position, padding included; that is the default here. With an
``attention_mask`` (B, T) the mean runs over the real tokens only: sum over rows with mask 1,
divided by (their count * H). A batch with no real token then gives 0 and no gradient.

The teacher side is a constant. The backward pass goes through the student's LayerNorm:

    d = 2 w (xs - xt)  with w the row's weight (1/(N H), or mask/(count H)),  xs = LN(h_s)
    dh_s = rstd_s (d - mean_H(d) - xs mean_H(d xs))          (LayerNorm backward, gamma = 1)

Kernels: ``kernels.hidden_stats.feature_map_loss_forward`` / ``_backward`` (float64 statistics).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.hidden_stats import feature_map_loss_backward, feature_map_loss_forward
from ._checks import float_array, positive_number, student_teacher, token_mask, upstream

LAYER_NORM_EPS = 1e-12  # contrib.layers.layer_norm's variance_epsilon in the original


class FeatureMapCache(NamedTuple):
    h_s: np.ndarray  # (N, H) the student's states (a view, not a copy: do not modify in place)
    h_t: np.ndarray  # (N, H) the teacher's
    mu_s: np.ndarray  # (N,) float64 row statistics; 0 on rows left out
    rstd_s: np.ndarray
    mu_t: np.ndarray
    rstd_t: np.ndarray
    row_weight: np.ndarray  # (N,) float64: the loss is sum_n w_n sum_H (xs - xt)^2
    shape: tuple  # the student's input shape


def feature_map_transfer_forward(h_s, h_t, attention_mask=None, eps: float = LAYER_NORM_EPS):
    """Feature-map transfer loss between one student and one teacher hidden state.

    Parameters
    ----------
    h_s : (B, T, H) float32 or float64
        The student's hidden state (e.g. ``out.hidden_states[l + 1]`` for layer l's output).
    h_t : (B, T, H)
        The teacher's, same shape (a constant: no gradient flows to it).
    attention_mask : (B, T) of 0/1, optional
        None (default): mean over all B*T*H entries, padding included (the original code).
        Given: mean over the real tokens' entries only (padding-aware).
    eps : float
        The parameter-free LayerNorm's epsilon (1e-12, the original's).

    Returns
    -------
    loss : float
        Accumulated in float64.
    cache : FeatureMapCache
        For ``feature_map_transfer_backward``. Keeps references to ``h_s`` and ``h_t``.

    Notes
    -----
    ``loss = sum_n w_n sum_c (LN(h_t)_nc - LN(h_s)_nc)^2`` with ``LN`` a LayerNorm without
    parameters (gamma 1, beta 0, ``eps``) over H and ``w_n = 1/(B T H)`` (or, with a mask,
    ``m_n / (sum(m) H)``). Follows google-research ``mobilebert/run_pretraining.py``
    (``model_fn``, ``hidden_distill``): ``tf.losses.mean_squared_error`` of the two
    ``contrib.layers.layer_norm(trainable=False)`` outputs.
    """
    fn = "feature_map_transfer_forward"
    h_s, h_t = student_teacher(h_s, h_t, ("h_s", "h_t"), fn, ndim=3)
    eps = positive_number(eps, "eps", fn)
    B, T, H = h_s.shape
    mask = token_mask(attention_mask, (B, T), fn)
    if mask is None:
        w = np.full(B * T, 1.0 / (B * T * H))
    else:
        count = mask.sum()
        w = mask.reshape(-1) / (count * H) if count else np.zeros(B * T)
    a = np.ascontiguousarray(h_s.reshape(B * T, H))  # (N, H), a view when contiguous
    b = np.ascontiguousarray(h_t.reshape(B * T, H))
    loss, mu_s, rstd_s, mu_t, rstd_t = feature_map_loss_forward(a, b, eps, w)
    return loss, FeatureMapCache(a, b, mu_s, rstd_s, mu_t, rstd_t, w, h_s.shape)


def feature_map_transfer_backward(dloss, cache: FeatureMapCache) -> np.ndarray:
    """d loss / d h_s, (B, T, H) in the student's dtype, times the upstream gradient ``dloss``."""
    g = upstream(dloss, "feature_map_transfer_backward")
    c = cache
    dh = feature_map_loss_backward(c.h_s, c.h_t, c.mu_s, c.rstd_s, c.mu_t, c.rstd_t, 2.0 * g * c.row_weight)
    return dh.reshape(c.shape)


def parameter_free_layer_norm(h, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """LN(h) over the last dimension with gamma 1, beta 0, in float64: what FMT compares.

    h (..., H) -> (..., H) float64. For reading and testing; the loss computes it inside its kernel.
    """
    h = float_array(h, "h", "parameter_free_layer_norm").astype(np.float64)
    mu = h.mean(axis=-1, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
    return (h - mu) / np.sqrt(var + eps)
