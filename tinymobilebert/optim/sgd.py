"""SGD with heavy-ball momentum and decoupled weight decay.

    b <- momentum * b + g                 (b = g when momentum == 0; no buffer is kept then)
    p <- p * (1 - lr_s * wd_s) - lr_s * b

with ``lr_s = lr * schedule(step) * multiplier_s`` per tensor and ``wd_s = weight_decay`` unless
``no_decay(name)``. The momentum rule is torch.optim.SGD's (dampening 0, no Nesterov; its first
step ``b = g`` is the same as ``b = momentum*0 + g``); the decay is decoupled like AdamW's,
not torch SGD's L2 term added to the gradient.
"""

from __future__ import annotations

import numpy as np

from ..kernels.optim import sgd_update
from .base import Optimizer, check_hyper


class SGD(Optimizer):
    """See the module docstring; keyword arguments as ``Optimizer`` (schedule, clipping, ...)."""

    _hypers = ("lr", "momentum", "weight_decay")

    def __init__(self, store, lr=1e-2, momentum=0.0, weight_decay=0.0, **kwargs):
        self.momentum = momentum
        super().__init__(store, lr, weight_decay=weight_decay, **kwargs)
        has_buffer = self.momentum != 0
        self._buffers = ("momentum_buffer",) if has_buffer else ()
        self.momentum_buffer = self._new_buffer() if has_buffer else np.empty(0, store.dtype)  # (N,)

    def _check_hypers(self) -> None:
        super()._check_hypers()
        self.momentum = check_hyper("momentum", self.momentum, lambda m: 0 <= m < 1, "in [0, 1)")

    def load_state_dict(self, sd: dict) -> None:
        if "momentum" in sd and (float(sd["momentum"]) != 0) != (self.momentum != 0):
            raise ValueError(f"state_dict has momentum {sd.get('momentum')} but this SGD has "
                             f"{self.momentum}: build the optimizer with momentum on or off to match")
        super().load_state_dict(sd)

    def _update(self, seg_lr, multipliers, grad_scale, t) -> None:
        seg_decay = 1.0 - seg_lr * self.weight_decay * self.decays  # (S,)
        sgd_update(self.store.data, self.store.grad, self.momentum_buffer, self.seg_start,
                   self.seg_stop, seg_lr, seg_decay, self.momentum, grad_scale)
