"""LAMB as MobileBERT trained with it: Adam moments without bias correction, decoupled weight
decay inside the update, and a per-tensor trust ratio ||p|| / ||r||.

    m <- b1 * m + (1 - b1) * g                  (no bias correction)
    v <- b2 * v + (1 - b2) * g^2
    r  = m / (sqrt(v) + eps) + wd_s * p         wd_s = 0 for no_decay tensors (or weight_decay 0)
    ratio_s = ||p_s|| / ||r_s||  if both > 0, else 1;   1 for exclude_from_layer_adaptation
    p <- p - lr_s * ratio_s * r

Facts read in google-research/google-research ``mobilebert/lamb_optimizer.py``
(``LAMBOptimizer.apply_gradients``) and ``mobilebert/optimization.py`` (``create_optimizer``):

* No bias correction: ``update = next_m / (tf.sqrt(next_v) + epsilon)``, eps outside the sqrt.
  (``bias_correction=True`` here gives the LAMB paper's m_hat / (sqrt(v_hat) + eps) instead.)
* Weight decay is added to the update *before* the trust ratio, ``update += wd * param``, and is
  skipped when ``weight_decay_rate`` is 0 or a pattern of ``exclude_from_weight_decay`` matches
  the name (``re.search``).
* ``ratio = w_norm / g_norm`` with ``w_norm = ||param||_2`` (before the update) and
  ``g_norm = ||update||_2`` (wd term included, lr not), falling back to 1.0 when either norm is
  0; a name matching ``exclude_from_layer_adaptation`` gets ratio 1.0. That list defaults to
  ``exclude_from_weight_decay`` when not given, and (unlike decay) does not depend on wd being
  non-zero. ``create_optimizer`` passes ``["teacher", "LayerNorm", "layer_norm", "bias",
  "FakeLayerNorm"]``, beta1 0.9, beta2 0.999, eps 1e-6, weight_decay 0.01.
* ``param <- param - layer_wise_lr * ratio * learning_rate * update``; m and v are float32.
* Progressive transfer (``use_layer_wise_warmup``): ``gate = 1 if layer_wise_lr > 0 else 0``
  multiplies next_m, next_v and the decay term, so a tensor with lr 0 has its moments *set to
  0*. Non-encoder variables get lr 0 and gate 0. ``distill_util.get_background_lr`` is 0 at
  every multiple of steps_per_phase, so at those steps every layer's moments are reset.
  Here: ``freeze_moments_when_lr_zero=True`` with ``lr_multipliers`` returning that lr.
* Gradients are clipped with ``tf.clip_by_global_norm(grads, 1.0)`` before the update
  (``max_grad_norm=1.0`` here); the lr schedule is ``PolynomialDecay`` in ``schedule.py``.
"""

from __future__ import annotations

import numpy as np

from ..kernels.optim import lamb_apply, lamb_moments
from .base import AdamFamily, default_no_decay, name_predicate


class LAMB(AdamFamily):
    """See the module docstring; keyword arguments as ``Optimizer`` (schedule, clipping, ...).

    Parameters
    ----------
    betas, eps, freeze_moments_when_lr_zero : as ``AdamW`` (defaults MobileBERT's).
    exclude_from_layer_adaptation : callable name -> bool, regex, list of regexes, or None
        Tensors whose trust ratio is 1. None: the same as ``no_decay``.
    bias_correction : bool
        False (MobileBERT) or True (the LAMB paper's bias-corrected moments).

    Attributes
    ----------
    trust_ratios : (S,) float64
        The ratios of the last step, in ``names`` order.
    """

    _hypers = AdamFamily._hypers + ("bias_correction",)

    def __init__(self, store, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 no_decay=default_no_decay, exclude_from_layer_adaptation=None,
                 bias_correction=False, **kwargs):
        self.bias_correction = bool(bias_correction)
        super().__init__(store, lr, betas, eps, weight_decay=weight_decay, no_decay=no_decay, **kwargs)
        excluded = name_predicate(no_decay if exclude_from_layer_adaptation is None
                                  else exclude_from_layer_adaptation, "exclude_from_layer_adaptation")
        self.adapts = np.array([not excluded(n) for n in self.names], dtype=bool)  # (S,)
        self.update = self._new_buffer()  # (N,) scratch for r, not part of the state
        self.trust_ratios = np.ones(len(self.names))  # (S,)

    def _update(self, seg_lr, multipliers, grad_scale, t) -> None:
        c1 = 1.0 / (1.0 - self.beta1 ** t) if self.bias_correction else 1.0
        c2 = 1.0 / (1.0 - self.beta2 ** t) if self.bias_correction else 1.0
        seg_weight_decay = self.weight_decay * self.decays  # (S,)
        sq = lamb_moments(self.store.data, self.store.grad, self.exp_avg, self.exp_avg_sq,
                          self.update, self.seg_start, self.seg_stop, seg_weight_decay,
                          self.moment_gate(multipliers), self.beta1, self.beta2, self.eps,
                          c1, c2, grad_scale)  # (S, 2) float64
        w_norm, r_norm = np.sqrt(sq[:, 0]), np.sqrt(sq[:, 1])  # (S,), (S,)
        both = (w_norm > 0) & (r_norm > 0)
        ratio = np.where(both, w_norm / np.where(both, r_norm, 1.0), 1.0)
        ratio[~self.adapts] = 1.0
        self.trust_ratios = ratio
        lamb_apply(self.store.data, self.update, self.seg_start, self.seg_stop, seg_lr * ratio)
