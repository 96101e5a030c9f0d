"""Attention transfer (AT): each student head's attention distribution imitates the teacher's.

Dimensions: B batch, A heads, T query tokens, S key tokens (S = T), R = B*A*T attention rows.

The paper (MobileBERT, Sun et al. 2020, "Attention Transfer") writes, for layer l,

    L_AT^l = 1/(T A) sum_t sum_a D_KL(a^tr_{t,l,a} || a^st_{t,l,a})

The released code (google-research ``mobilebert/run_pretraining.py``, ``model_fn``, the
``attention_distill_%d`` scope) computes a cross-entropy instead, from the *scores* the models
return (masked, scaled, before the softmax; ``get_all_attention_maps``):

    loss = mean over B*A*T of  sum_S  -softmax(s_t) * log_softmax(s_s)

which is the KL divergence plus the teacher's entropy (a constant for the student: same
gradient, different value). Two independent choices here:

* ``form``: "original" (the default) is the cross-entropy above; "kl" adds ``sum p_t log p_t``
  (subtracts the teacher's entropy), the paper's KL: same gradient, and 0 when the student matches.
* ``attention_mask``: None (the default) is the original's treatment of padding: the mean counts
  padded query rows, and padded keys are not left out; they keep whatever weight the models'
  masking gives them. With transformers' masking (``finfo.min`` added) that weight is 0 in both
  models; with the original TensorFlow masking (``masked_attention_score=-6``: masked scores
  *replaced* by -6) it is small but not 0, and the loss pulls it too. Given a (B, T) mask, the
  padding-aware form: padded keys are left out of both softmaxes (renormalised over the real
  keys) and padded query rows out of the mean, which becomes a mean over A * (number of real
  tokens) rows. It differs from the original on padded batches; without padding they are equal.

Terms where the teacher gives probability 0 count as 0 (0 log 0 := 0): scores masked with
``finfo.min`` or -inf give finite losses, never nan.

Backward (the teacher is a constant), for the rows kept, with w the row's weight:

    ds_s = w (softmax(s_s) - softmax(s_t))      (0 at keys and rows left out)

which is how the gradient reaches the student through its softmax; send it into the model with
``model.backward(grad_outputs={"attention_scores": [...]})``.

Kernels: ``kernels.soft_targets.soft_target_ce_forward`` / ``_backward``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.soft_targets import soft_target_ce_backward, soft_target_ce_forward
from ._checks import choice, student_teacher, token_mask, upstream

FORMS = ("original", "kl")


class AttentionTransferCache(NamedTuple):
    s_s: np.ndarray  # (R, S) the student's scores (a view, not a copy)
    s_t: np.ndarray  # (R, S) the teacher's
    key_mask: np.ndarray | None  # (B, S) float64, padding-aware form only
    rows_per_batch: int  # A * T
    row_stats: np.ndarray  # (R, 4) float64: max and log-sum of both rows (0 on rows left out)
    row_weight: np.ndarray  # (R,) float64
    shape: tuple


_NO_LABELS = np.zeros(0, np.int64)


def attention_transfer_forward(s_s, s_t, attention_mask=None, form: str = "original"):
    """Attention-transfer loss between one student and one teacher layer's attention scores.

    Parameters
    ----------
    s_s : (B, A, T, T) float32 or float64
        The student's masked, scaled, pre-softmax scores (``out.attention_scores[l]``, from
        ``forward(..., output_attention_scores=True)``).
    s_t : (B, A, T, T)
        The teacher's, same shape (same head count: heads are paired one to one). A constant.
    attention_mask : (B, T) of 0/1, optional
        None (default): the original form (padded queries in the mean, padded keys not left
        out). Given: the padding-aware form (padded keys and queries left out).
    form : "original" (cross-entropy, the released code) or "kl" (minus the teacher's entropy)

    Returns
    -------
    loss : float
        Accumulated in float64.
    cache : AttentionTransferCache
        For ``attention_transfer_backward``. Keeps references to ``s_s`` and ``s_t``.

    Notes
    -----
    Per attention row (b, a, t), with p = softmax(s_t) and log q = log_softmax(s_s) over the keys
    (the real keys only, with a mask):

        original:  l = -sum_j p_j log q_j          kl:  l = sum_j p_j (log p_j - log q_j)

    loss = mean of l over the B*A*T rows (or over the A * sum(mask) real query rows). Follows
    google-research ``mobilebert/run_pretraining.py`` (``model_fn``, ``attention_distill``):
    ``reduce_mean(reduce_sum(-softmax(teacher) * log_softmax(student), -1))``.
    """
    fn = "attention_transfer_forward"
    s_s, s_t = student_teacher(s_s, s_t, ("s_s", "s_t"), fn, ndim=4)
    form = choice(form, "form", FORMS, fn)
    B, A, T, S = s_s.shape
    if T != S:
        raise ValueError(f"{fn}: s_s must be self-attention scores (B, A, T, T), got shape {s_s.shape}")
    mask = token_mask(attention_mask, (B, T), fn)
    R = B * A * T
    if mask is None:
        w = np.full(R, 1.0 / R)
    else:
        count = A * mask.sum()
        w = np.repeat(mask, A, axis=0).reshape(-1) / count if count else np.zeros(R)  # (B*A*T,)
    a = np.ascontiguousarray(s_s.reshape(R, S))
    b = np.ascontiguousarray(s_t.reshape(R, S))
    loss, stats = soft_target_ce_forward(a, b, _NO_LABELS, 0.0, 1.0, mask, A * T, w, form == "kl")
    return loss, AttentionTransferCache(a, b, mask, A * T, stats, w, s_s.shape)


def attention_transfer_backward(dloss, cache: AttentionTransferCache) -> np.ndarray:
    """d loss / d s_s, (B, A, T, T) in the student's dtype, times the upstream gradient ``dloss``."""
    g = upstream(dloss, "attention_transfer_backward")
    c = cache
    ds = soft_target_ce_backward(c.s_s, c.s_t, _NO_LABELS, 0.0, 1.0, c.key_mask, c.rows_per_batch, c.row_stats,
                                 g * c.row_weight)
    return ds.reshape(c.shape)
