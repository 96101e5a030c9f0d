"""Distillation on output logits: MobileBERT's pre-training distillation (MLM against a mixed
target) and the soft cross-entropy of task distillation (DynaBERT, TinyBERT).

Dimensions: M labelled rows (masked positions), V vocabulary, B batch, C classes.

**MLM distillation** (MobileBERT, Sun et al. 2020, "Pre-training Distillation":
L_PD = alpha L_MLM + (1 - alpha) L_KD + L_NSP). The released code (google-research
``mobilebert/run_pretraining.py``, ``model_fn`` and ``get_masked_lm_output``) folds the first
two terms into one cross-entropy against a mixed target,

    q = alpha onehot(y) + (1 - alpha) softmax(teacher logits)     (distill_ground_truth_ratio = alpha = 0.5)
    loss = sum_m w_m (-sum_v q_mv log softmax(student logits)_mv) / (sum_m w_m + 1e-5)

with w_m = 1 on real predictions and 0 on padding slots (here: labels == -100). That
normalisation is the default (``reduction="original"``); ``reduction="mean"`` divides by the count
alone. They differ by a factor count / (count + 1e-5). NSP stays a plain cross-entropy (the
model's own loss). As CE is linear in its target, this is alpha CE(onehot) + (1 - alpha) CE(teacher).

**Two temperatures, two places.** The original's ``distill_temperature`` (1 in every released
recipe) does not divide logits: it *multiplies the teacher's final hidden states* before the
teacher's MLM head, ``logits_t = head(temperature * h_t)``, and the student's logits are used as
they are. That is a property of how the teacher logits are made: ``teacher_mlm_logits`` below
computes them so, and ``mlm_distillation_forward`` then takes them with ``temperature=1``. The
usual way (Hinton et al. 2015) divides both logits by T: ``temperature=T`` here computes the same
mixed-target loss on ``logits_s / T`` and ``logits_t / T``. The loss is **not** multiplied by T^2;
to follow Hinton's scaling, multiply the loss (and pass ``dloss = T**2`` to the backward).

**Soft cross-entropy** (DynaBERT ``run_glue.py``, ``soft_cross_entropy``):

    loss = mean over rows of  -sum_c softmax(t / T)_c log_softmax(s / T)_c      (T = 1 default)

(TinyBERT's ``task_distill.py`` takes ``.mean()`` over rows *and* classes, i.e. this divided by C;
DynaBERT sums over classes.) Not multiplied by T^2 either.

Backward (the teacher is a constant): d logits_s = w / T (softmax(s / T) - q).

Kernels: ``kernels.soft_targets.soft_target_ce_forward`` / ``_backward``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.soft_targets import soft_target_ce_backward, soft_target_ce_forward
from ..losses import check_labels
from ._checks import choice, float_array, positive_number, student_teacher, unit_interval, upstream

REDUCTIONS = ("original", "mean")
ORIGINAL_COUNT_EPS = 1e-5  # get_masked_lm_output's denominator: sum(label_weights) + 1e-5
_NO_LABELS = np.zeros(0, np.int64)


class SoftTargetCache(NamedTuple):
    s: np.ndarray  # (R, V) the student's logits (a view, not a copy)
    t: np.ndarray  # (R, V) the teacher's
    labels: np.ndarray  # (R,) int64, or empty without a one-hot part
    alpha: float
    inv_temperature: float
    row_stats: np.ndarray  # (R, 4) float64: max and log-sum of both rows
    row_weight: np.ndarray  # (R,) float64
    shape: tuple


def _rows(x, V):
    return np.ascontiguousarray(x.reshape(-1, V))


def mlm_distillation_forward(logits_s, logits_t, labels, alpha: float = 0.5, temperature: float = 1.0,
                             reduction: str = "original"):
    """MobileBERT's pre-training distillation MLM loss: cross-entropy against a mixed target.

    Parameters
    ----------
    logits_s : (M, V) float32 or float64
        The student's MLM logits (e.g. at the labelled positions: ``forward(...,
        mlm_positions="labelled").prediction_logits``). Any leading shape (..., V) works.
    logits_t : (M, V)
        The teacher's, same shape (a constant). For the original temperature, make them with
        ``teacher_mlm_logits``.
    labels : (M,) int
        Vocabulary ids; -100 marks rows that do not count.
    alpha : float in [0, 1]
        Weight of the one-hot part (the original's ``distill_ground_truth_ratio``, 0.5). 1 is
        plain MLM, 0 pure distillation.
    temperature : float > 0
        The usual softening: both logits divided by it (default 1: none). Not multiplied by T^2.
    reduction : "original" (sum / (count + 1e-5), default) or "mean" (sum / count)

    Returns
    -------
    loss : float
        Accumulated in float64; 0 (and no gradient) when no row is labelled.
    cache : SoftTargetCache
        For ``mlm_distillation_backward``.

    Notes
    -----
    ``loss = sum_m w_m sum_v q_mv (lse(x_m) - x_mv)`` with ``x = logits_s / T``,
    ``q = alpha onehot(labels) + (1 - alpha) softmax(logits_t / T)``, ``w_m = 1 / (count +
    1e-5)`` on labelled rows (``1 / count`` with ``reduction="mean"``), 0 elsewhere. Follows
    google-research ``mobilebert/run_pretraining.py`` (``model_fn``: ``one_hot_labels``;
    ``get_masked_lm_output``).
    """
    fn = "mlm_distillation_forward"
    s, t = student_teacher(logits_s, logits_t, ("logits_s", "logits_t"), fn)
    alpha = unit_interval(alpha, "alpha", fn)
    k = 1.0 / positive_number(temperature, "temperature", fn)
    choice(reduction, "reduction", REDUCTIONS, fn)
    V = s.shape[-1]
    y = check_labels(labels, V, "labels", s.shape[:-1]).reshape(-1)
    keep = y != -100
    count = int(keep.sum())
    denom = count + ORIGINAL_COUNT_EPS if reduction == "original" else count
    w = keep / denom if count else np.zeros(y.size)
    a, b = _rows(s, V), _rows(t, V)
    y_safe = np.where(keep, y, 0)  # rows left out are never read; keep every index in range anyway
    loss, stats = soft_target_ce_forward(a, b, y_safe, alpha, k, None, 1, w, False)
    return loss, SoftTargetCache(a, b, y_safe, alpha, k, stats, w, s.shape)


def mlm_distillation_backward(dloss, cache: SoftTargetCache) -> np.ndarray:
    """d loss / d logits_s, shape of logits_s, in its dtype, times the upstream ``dloss``."""
    return _soft_target_backward(upstream(dloss, "mlm_distillation_backward"), cache)


def soft_cross_entropy_forward(logits_s, logits_t, temperature: float = 1.0):
    """DynaBERT's soft cross-entropy between the student's and the teacher's logits.

    Parameters
    ----------
    logits_s : (B, C) float32 or float64
        The student's logits (any leading shape (..., C): the mean runs over all rows).
    logits_t : (B, C)
        The teacher's, same shape (a constant).
    temperature : float > 0
        Both logits divided by it (default 1, DynaBERT's). The loss is not multiplied by T^2.

    Returns
    -------
    loss : float
    cache : SoftTargetCache
        For ``soft_cross_entropy_backward``.

    Notes
    -----
    ``loss = 1/B sum_b -sum_c softmax(t_b / T)_c log_softmax(s_b / T)_c``. Follows
    huawei-noah ``DynaBERT/run_glue.py`` (``soft_cross_entropy``: ``-sum(targets_prob *
    log_softmax(predicts), -1).mean()``).
    """
    fn = "soft_cross_entropy_forward"
    s, t = student_teacher(logits_s, logits_t, ("logits_s", "logits_t"), fn)
    if s.ndim < 1 or s.shape[-1] < 1:
        raise ValueError(f"{fn}: logits_s must be (B, C), got shape {s.shape}")
    k = 1.0 / positive_number(temperature, "temperature", fn)
    C = s.shape[-1]
    a, b = _rows(s, C), _rows(t, C)
    w = np.full(a.shape[0], 1.0 / a.shape[0])
    loss, stats = soft_target_ce_forward(a, b, _NO_LABELS, 0.0, k, None, 1, w, False)
    return loss, SoftTargetCache(a, b, _NO_LABELS, 0.0, k, stats, w, s.shape)


def soft_cross_entropy_backward(dloss, cache: SoftTargetCache) -> np.ndarray:
    """d loss / d logits_s, shape of logits_s, in its dtype, times the upstream ``dloss``."""
    return _soft_target_backward(upstream(dloss, "soft_cross_entropy_backward"), cache)


def _soft_target_backward(g: float, c: SoftTargetCache) -> np.ndarray:
    ds = soft_target_ce_backward(c.s, c.t, c.labels, c.alpha, c.inv_temperature, None, 1, c.row_stats,
                                 g * c.row_weight)
    return ds.reshape(c.shape)


def teacher_mlm_logits(teacher, sequence_output, temperature: float = 1.0, rows=None) -> np.ndarray:
    """The teacher's MLM logits with the original code's temperature: ``head(temperature * h)``.

    In google-research ``mobilebert/run_pretraining.py`` (``model_fn``) the teacher logits are
    ``get_logits(config, distill_temperature * teacher_model.get_sequence_output(), ...)``: the
    temperature scales the final hidden states *before* the MLM head (dense, activation,
    LayerNorm, output projection), so it is not a plain division of logits. At temperature 1
    these are the teacher's ordinary logits.

    Parameters
    ----------
    teacher : MobileBertForPreTraining or MobileBertForMaskedLM
        Any model with an MLM head; only its parameters are read (no cache, no gradient).
    sequence_output : (B, T, H) or (N, H)
        The teacher's final hidden states (``out.last_hidden_state``).
    temperature : float > 0
    rows : (M,) int, optional
        Flat indices into the B*T (or N) rows to score, e.g. ``np.flatnonzero(labels.reshape(-1)
        != -100)`` (the original scores only the masked positions). None: every row.

    Returns
    -------
    logits : (M, V) (or (N, V)) in the teacher's dtype
    """
    from ..blocks.heads import mlm_head_forward

    fn = "teacher_mlm_logits"
    if not hasattr(teacher, "decoder_name"):
        raise TypeError(f"{fn}: teacher must be a model with an MLM head (MobileBertForPreTraining or "
                        f"MobileBertForMaskedLM), got {type(teacher).__name__}")
    T = positive_number(temperature, "temperature", fn)
    h = float_array(sequence_output, "sequence_output", fn)
    H = teacher.config.hidden_size
    if h.shape[-1] != H or h.ndim not in (2, 3):
        raise ValueError(f"{fn}: sequence_output must be (B, T, {H}) or (N, {H}) (the teacher's hidden_size), "
                         f"got shape {h.shape}")
    h = h.reshape(-1, H)
    if rows is not None:
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu" or (rows.size and (rows.min() < 0 or rows.max() >= h.shape[0])):
            raise ValueError(f"{fn}: rows must be a 1-D array of integer indices in [0, {h.shape[0]})")
        h = h[rows]
    h = (h * T).astype(teacher.dtype, copy=False)  # (M, H) the original's temperature
    logits, _ = mlm_head_forward(h, teacher.params, teacher.decoder_name, teacher.config)
    return logits
