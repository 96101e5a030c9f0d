"""AdamW with torch.optim.AdamW's semantics, on the whole flat buffer in one kernel call.

    p <- p * (1 - lr_s * wd_s)                              decoupled decay, applied first
    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    p <- p - lr_s / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      eps outside the sqrt

``t`` is the 1-based update number, ``lr_s = lr * schedule(t - 1) * multiplier_s``, and
``wd_s = weight_decay`` unless ``no_decay(name)``. This is torch's single-tensor path line for
line (torch writes ``m.lerp_(g, 1 - b1)``, equal up to rounding); ``tests/test_optim.py``
checks 20 steps against torch at float64 to 1e-12 when torch is installed. DynaBERT and token
dropping fine-tune/pre-train with it (see the spec for their lr, eps and schedules).

With ``freeze_moments_when_lr_zero`` the bias correction still uses the global ``t``: a tensor
whose moments were gated to 0 restarts them without a fresh bias correction (MobileBERT's LAMB,
which gates, has no bias correction at all).
"""

from __future__ import annotations

from ..kernels.optim import adamw_update
from .base import AdamFamily


class AdamW(AdamFamily):
    """See the module docstring; keyword arguments as ``Optimizer`` (schedule, clipping, ...).

    Parameters
    ----------
    betas : (float, float)
        Each in [0, 1).
    eps : float
        > 0, added to sqrt(v_hat).
    freeze_moments_when_lr_zero : bool
        Gate m and v to 0 for tensors whose lr multiplier is 0 (see ``AdamFamily``).
    """

    def __init__(self, store, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **kwargs):
        super().__init__(store, lr, betas, eps, weight_decay=weight_decay, **kwargs)

    def _update(self, seg_lr, multipliers, grad_scale, t) -> None:
        bias_correction1 = 1.0 - self.beta1 ** t
        bias_correction2 = 1.0 - self.beta2 ** t
        seg_step_size = seg_lr / bias_correction1  # (S,)
        seg_decay = 1.0 - seg_lr * self.weight_decay * self.decays  # (S,)
        adamw_update(self.store.data, self.store.grad, self.exp_avg, self.exp_avg_sq,
                     self.seg_start, self.seg_stop, seg_step_size, seg_decay,
                     self.moment_gate(multipliers), self.beta1, self.beta2, self.eps,
                     bias_correction2 ** 0.5, grad_scale)
