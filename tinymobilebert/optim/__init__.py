"""Optimizers with hand-written updates over a ParameterStore's flat buffers.

    opt = AdamW(store, lr=1e-3, weight_decay=0.01, schedule=LinearWarmupDecay(100, 1000))
    stats = opt.step()      # reads store.grad, updates store.data in place
    opt.zero_grad()

``base`` holds what they share (per-tensor hyper-parameters as per-segment arrays, step
numbering, exact-resume state dicts), ``schedule`` the lr schedules, ``clip`` global-norm
clipping, and ``tinymobilebert.kernels.optim`` the Numba update loops and their NumPy twins.
"""

from .adamw import AdamW
from .base import AdamFamily, Optimizer, default_no_decay
from .clip import clip_grad_norm, global_grad_norm
from .lamb import LAMB
from .schedule import ConstantSchedule, LinearWarmupDecay, PolynomialDecay
from .sgd import SGD

__all__ = ["SGD", "AdamW", "LAMB", "Optimizer", "AdamFamily", "default_no_decay",
           "clip_grad_norm", "global_grad_norm", "ConstantSchedule", "LinearWarmupDecay",
           "PolynomialDecay"]
