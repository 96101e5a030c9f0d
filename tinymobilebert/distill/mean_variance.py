"""Mean and variance transfer: each token's hidden-state mean and variance imitate the teacher's.

Dimensions: B batch, T tokens, H inter-block width, N = B*T rows, J teacher states compared.

Not in the paper's formulas; in the released code (google-research
``mobilebert/run_pretraining.py``, ``model_fn``, the ``beta_distill_factor`` /
``gamma_distill_factor`` block), with statistics over the last dimension (population variance):

    mu = mean_H(h),   var = mean_H((h - mu)^2)                      per token
    mean term     beta_l  = mean over B*T of (mu_t - mu_s)^2
    variance term gamma_l = mean over B*T of |var_t - var_s|

(weighted 5000 and 5 in the progressive stage, against FMT's 100).

**The released code's bug, as an option.** There ``mu_t`` and ``var_t`` are computed from
``teacher_hiddens``, the list of *all* the teacher's hidden states (the embedding output and
every layer's, 25 for IB-BERT), not from the one paired with the student's layer; the
statistics then broadcast, so every student layer is pulled towards every teacher layer's:

    beta_l  = mean over J*B*T of (mu_t^j - mu_s^l)^2,   gamma_l = mean over J*B*T of |var_t^j - var_s^l|

``teacher_layers="all"`` reproduces it: pass ``h_t`` as the list (or a (J, B, T, H) stack) of all
the teacher's hidden states. ``teacher_layers="same"`` (the default, and the TF2
re-implementation's) compares with the one paired state.

The mean runs over every token, padding included (the original); with an ``attention_mask``
(B, T) over the real tokens only.

Backward (the teacher is a constant), with w_n the token's weight (1/N, or m_n / sum(m)):

    dmu_s  = dbeta  * w / J * sum_j 2 (mu_s - mu_t^j)
    dvar_s = dgamma * w / J * sum_j sign(var_s - var_t^j)      sign(0) = 0: |.| has a kink at 0,
                                                               and 0 is the subgradient used there
    dh_s   = dmu_s / H + dvar_s * 2 (h_s - mu_s) / H

Kernels: ``kernels.hidden_stats.row_moments`` / ``row_moments_backward`` (float64 statistics).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.hidden_stats import row_moments, row_moments_backward
from ._checks import choice, float_array, student_teacher, token_mask, upstream

TEACHER_LAYERS = ("same", "all")


class MeanVarianceCache(NamedTuple):
    h_s: np.ndarray  # (N, H) the student's states (a view, not a copy)
    mu_s: np.ndarray  # (N,) float64
    dmu_coef: np.ndarray  # (N,) float64: d beta / d mu_s
    dvar_coef: np.ndarray  # (N,) float64: d gamma / d var_s (the subgradient, sign(0) = 0)
    shape: tuple


def teacher_moments(h_t, shape, teacher_layers: str, fn: str = "teacher_moments"):
    """(mu_t, var_t), each (J, N) float64, from one (B, T, H) state or all of them (J, B, T, H)."""
    B, T, H = shape
    if teacher_layers == "same":
        states = [h_t]
    elif isinstance(h_t, np.ndarray) and h_t.ndim == 4:
        states = list(h_t)
    elif isinstance(h_t, (list, tuple)) and len(h_t) > 0:
        states = list(h_t)
    else:
        raise ValueError(f"{fn}: with teacher_layers='all', h_t must be the list of all the teacher's hidden "
                         f"states (or a (J, B, T, H) array), got {type(h_t).__name__}")
    mus, vars_ = [], []
    for j, h in enumerate(states):
        h = float_array(h, "h_t" if teacher_layers == "same" else f"h_t[{j}]", fn)
        if h.shape != (B, T, H):
            name = "h_t" if teacher_layers == "same" else f"h_t[{j}]"
            raise ValueError(f"{fn}: {name} must have the shape of h_s {(B, T, H)}, got {h.shape}")
        mu, var = row_moments(np.ascontiguousarray(h.reshape(B * T, H)))
        mus.append(mu)
        vars_.append(var)
    return np.stack(mus), np.stack(vars_)  # (J, N) each


def mean_variance_transfer_forward(h_s, h_t, attention_mask=None, teacher_layers: str = "same"):
    """Mean and variance transfer terms between a student hidden state and the teacher's.

    Parameters
    ----------
    h_s : (B, T, H) float32 or float64
        The student's hidden state (e.g. ``out.hidden_states[l + 1]``).
    h_t : (B, T, H), or with ``teacher_layers="all"`` a list of J (B, T, H) arrays / (J, B, T, H)
        The paired teacher state, or all the teacher's hidden states (the released code's
        behaviour, see the module notes). A constant.
    attention_mask : (B, T) of 0/1, optional
        None (default): means over all tokens, padding included (the original). Given: over the
        real tokens only.
    teacher_layers : "same" (default) or "all"

    Returns
    -------
    (mean_term, variance_term) : tuple of two floats
        beta and gamma of the module notes, accumulated in float64.
    cache : MeanVarianceCache
        For ``mean_variance_transfer_backward``. Keeps a reference to ``h_s``.

    Notes
    -----
    ``beta = sum_n w_n / J sum_j (mu_t^j_n - mu_s_n)^2`` and ``gamma = sum_n w_n / J sum_j
    |var_t^j_n - var_s_n|`` with per-token statistics over H and ``w_n = 1/(B T)`` (or
    ``m_n / sum(m)``). Follows google-research ``mobilebert/run_pretraining.py`` (``model_fn``,
    ``beta_distill_loss`` / ``gamma_distill_loss``).
    """
    fn = "mean_variance_transfer_forward"
    choice(teacher_layers, "teacher_layers", TEACHER_LAYERS, fn)
    if teacher_layers == "same":
        h_s, h_t = student_teacher(h_s, h_t, ("h_s", "h_t"), fn, ndim=3)
    else:
        h_s = float_array(h_s, "h_s", fn)
        if h_s.ndim != 3 or h_s.size == 0:
            raise ValueError(f"{fn}: h_s must be a non-empty (B, T, H) array, got shape {h_s.shape}")
    B, T, H = h_s.shape
    mask = token_mask(attention_mask, (B, T), fn)
    mu_t, var_t = teacher_moments(h_t, h_s.shape, teacher_layers, fn)  # (J, N) each
    J = mu_t.shape[0]
    if mask is None:
        w = np.full(B * T, 1.0 / (B * T))
    else:
        count = mask.sum()
        w = mask.reshape(-1) / count if count else np.zeros(B * T)
    a = np.ascontiguousarray(h_s.reshape(B * T, H))
    mu_s, var_s = row_moments(a)
    keep = w != 0  # tokens left out are not read: whatever a padded row holds cannot leak in
    dmu = np.where(keep, mu_s - mu_t, 0.0)  # (J, N)
    dvar = np.where(keep, var_s - var_t, 0.0)
    beta = float(np.sum(w * (dmu * dmu).sum(axis=0)) / J)
    gamma = float(np.sum(w * np.abs(dvar).sum(axis=0)) / J)
    cache = MeanVarianceCache(a, mu_s, 2.0 * w / J * dmu.sum(axis=0), w / J * np.sign(dvar).sum(axis=0), h_s.shape)
    return (beta, gamma), cache


def mean_variance_transfer_backward(dmean, dvar, cache: MeanVarianceCache) -> np.ndarray:
    """d (dmean * mean_term + dvar * variance_term) / d h_s, (B, T, H) in the student's dtype."""
    fn = "mean_variance_transfer_backward"
    gm, gv = upstream(dmean, fn, "dmean"), upstream(dvar, fn, "dvar")
    c = cache
    dh = row_moments_backward(c.h_s, c.mu_s, gm * c.dmu_coef, gv * c.dvar_coef)
    return dh.reshape(c.shape)
