"""Global gradient-norm clipping over a ParameterStore's flat gradient buffer.

    norm  = sqrt(sum over every tensor of sum(g**2))          accumulated in float64
    scale = max_norm / (norm + 1e-6),  applied to every gradient when scale < 1

This is ``torch.nn.utils.clip_grad_norm_`` (same 1e-6, same non-finite behaviour: an inf norm
gives scale 0 and a NaN norm scale NaN, so the gradients stop being finite; pass
``error_if_nonfinite=True`` to raise instead). MobileBERT's TF code used
``tf.clip_by_global_norm``, whose ``max_norm / max(norm, max_norm)`` differs only by that 1e-6.
The padding between tensors in ``store.grad`` is zero, so summing the whole buffer is the norm
over the tensors.
"""

from __future__ import annotations

import math

from ..kernels.optim import squared_norm


def global_grad_norm(store) -> float:
    """L2 norm of all of ``store.grad`` (float64 accumulation), as a Python float."""
    return math.sqrt(squared_norm(store.grad))


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor torch's ``clip_grad_norm_`` multiplies gradients by: min(1, max_norm/(norm+1e-6))."""
    coef = max_norm / (norm + 1e-6)
    return coef if not coef >= 1.0 else 1.0  # NaN stays NaN, as torch's clamp


def clip_grad_norm(store, max_norm: float, error_if_nonfinite: bool = False) -> float:
    """Scale ``store.grad`` in place so its global L2 norm is at most ``max_norm``.

    Parameters
    ----------
    store : ParameterStore
    max_norm : float
        > 0.
    error_if_nonfinite : bool
        Raise ``RuntimeError`` when the norm is inf or NaN (gradients untouched).

    Returns
    -------
    float
        The global norm *before* clipping (what torch returns, and what trainers log).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    norm = global_grad_norm(store)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(f"the total gradient norm is {norm}; not clipping")
    scale = clip_scale(norm, max_norm)
    if not scale == 1.0:
        store.grad *= store.grad.dtype.type(scale)
    return norm
