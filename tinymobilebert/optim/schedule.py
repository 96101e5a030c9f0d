"""Learning-rate schedules: callables ``step -> factor`` that multiply an optimizer's base lr.

Step numbering (the same as transformers' ``get_linear_schedule_with_warmup`` driven by
PyTorch's ``LambdaLR``, and as TF's ``global_step`` in BERT/MobileBERT): the first update is
step 0, the n-th update uses ``factor(n - 1)``. An optimizer calls ``schedule(opt.step_count)``
*before* it increments ``step_count``. So with ``warmup_steps > 0`` the very first update has
factor 0 and changes nothing but the Adam moments, exactly as in transformers (checked against
transformers 4.x: lrs over 12 steps of warmup 3, total 10 are 0, 1/3, 2/3, 1, 6/7, ..., 1/7, 0, 0).

A schedule is plain Python, so ``torch.optim.lr_scheduler.LambdaLR(opt, schedule)`` accepts it
too (the AdamW-vs-torch test relies on that).
"""

from __future__ import annotations


def _check_steps(warmup_steps: int, total_steps: int) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps < warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must be >= warmup_steps ({warmup_steps})")


class ConstantSchedule:
    """factor(step) = factor, for every step (default 1: the optimizer's lr as given)."""

    def __init__(self, factor: float = 1.0):
        if factor < 0:
            raise ValueError(f"factor must be >= 0, got {factor}")
        self.factor = float(factor)

    def __call__(self, step: int) -> float:
        return self.factor

    def __repr__(self) -> str:
        return f"ConstantSchedule({self.factor})"


class LinearWarmupDecay:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then linear decay to ``end_factor``.

    ::

        factor(s) = s / warmup_steps                                           s < warmup_steps
                  = end + (1 - end) * (total - s) / (total - warmup_steps)     warmup <= s < total
                  = end                                                        s >= total

    With ``end_factor=0`` this is transformers' ``get_linear_schedule_with_warmup`` exactly
    (including its ``max(1, ...)`` guards). DynaBERT fine-tuning and token dropping use it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, end_factor: float = 0.0):
        _check_steps(warmup_steps, total_steps)
        if not 0.0 <= end_factor <= 1.0:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.end_factor = float(end_factor)

    def __call__(self, step: int) -> float:
        w, T, end = self.warmup_steps, self.total_steps, self.end_factor
        if step < w:
            return float(step) / float(max(1, w))
        remaining = max(0.0, float(T - step) / float(max(1, T - w)))  # 1 -> 0 over [w, T]
        return end + (1.0 - end) * remaining

    def __repr__(self) -> str:
        return f"LinearWarmupDecay({self.warmup_steps}, {self.total_steps}, end_factor={self.end_factor})"


class PolynomialDecay:
    """TF's ``polynomial_decay`` with BERT's warm-up override: MobileBERT's own schedule.

    ::

        decayed(s) = (1 - end) * (1 - min(s, total) / total) ** power + end
        factor(s)  = s / warmup_steps    if s < warmup_steps   else decayed(s)

    Unlike ``LinearWarmupDecay`` the decay is measured from step 0, not from the end of the
    warm-up, so the factor at ``s = warmup_steps`` is ``decayed(warmup_steps) < 1`` (this is what
    google-research ``mobilebert/optimization.py::create_optimizer`` computes; MobileBERT's
    pre-training distillation used lr 1.5e-3, 10k warm-up, end_factor 1e-4, total 500k).
    """

    def __init__(self, total_steps: int, end_factor: float = 0.0, power: float = 1.0,
                 warmup_steps: int = 0):
        _check_steps(warmup_steps, total_steps)
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= end_factor <= 1.0:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        if power <= 0:
            raise ValueError(f"power must be > 0, got {power}")
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.end_factor, self.power = float(end_factor), float(power)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(self.warmup_steps)
        frac = min(step, self.total_steps) / self.total_steps
        return (1.0 - self.end_factor) * (1.0 - frac) ** self.power + self.end_factor

    def __repr__(self) -> str:
        return (f"PolynomialDecay({self.total_steps}, end_factor={self.end_factor}, "
                f"power={self.power}, warmup_steps={self.warmup_steps})")
