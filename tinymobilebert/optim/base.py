"""What every optimizer shares: per-tensor hyper-parameters as per-segment arrays, the lr
schedule, clipping inside ``step()``, and an exact-resume state dict.

Dimensions: N elements in the store's flat buffers, S tensors (segments).

The kernels update the whole flat buffer in one call; what differs per tensor travels as (S,)
arrays aligned with ``seg_start``/``seg_stop`` (the ``store.slices`` ranges in buffer order):

    decays       (S,) bool     weight decay applies (``no_decay(name)`` is False)
    multipliers  (S,) float64  lr multiplier from ``lr_multipliers``; 0 freezes the tensor
    seg_lr       (S,) float64  lr * schedule(step) * multipliers   (recomputed every step)

The multipliers are recomputed every step only when ``lr_multipliers`` is a callable
``(name, step) -> float`` (MobileBERT's progressive transfer changes them per phase); a dict or
None is turned into an array once.

Step numbering: ``step_count`` is the number of updates done. The update ``step()`` performs
uses ``step = step_count`` (0 for the first update) for the schedule and the multipliers, and
``t = step_count + 1`` for Adam's bias correction, as torch does.
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np

from ..params import ParameterStore
from .clip import clip_scale, global_grad_norm
from .schedule import ConstantSchedule


def default_no_decay(name: str) -> bool:
    """True for tensors without weight decay: any ``LayerNorm`` (MobileBERT's NoNorm is also
    named ``LayerNorm`` in transformers) and every bias, including ``cls.predictions.bias``."""
    return "LayerNorm" in name or name.endswith("bias")


def name_predicate(spec, arg: str):
    """A callable ``name -> bool`` from a callable, a regex, or a list of regexes (any matches,
    ``re.search`` as in MobileBERT's ``exclude_from_weight_decay``), or None (never)."""
    if spec is None:
        return lambda name: False
    if callable(spec):
        return spec
    patterns = [spec] if isinstance(spec, str) else list(spec)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{arg} must be a callable name -> bool, a regex or a list of regexes")
    compiled = [re.compile(p) for p in patterns]
    return lambda name: any(c.search(name) for c in compiled)


def check_hyper(arg: str, value, ok, rule: str) -> float:
    """``float(value)`` if it is finite and ``ok(value)``, else a ValueError naming ``arg``."""
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{arg} must be {rule}, got {value}")
    return value


def layout_crc32(store: ParameterStore) -> int:
    """A fingerprint of the store's names and layout, to refuse another model's state dict."""
    text = ";".join(f"{n}:{a}:{b}" for n, (a, b) in store.slices.items())
    return zlib.crc32(text.encode())


class Optimizer:
    """Base class. Subclasses set ``_hypers`` and ``_buffers`` and implement ``_update``.

    Parameters
    ----------
    store : ParameterStore
    lr : float
        Base learning rate, >= 0.
    weight_decay : float
        Decoupled weight decay (``p -= lr * weight_decay * p``), >= 0.
    no_decay : callable name -> bool, regex or list of regexes
        Tensors excluded from weight decay (default ``default_no_decay``).
    schedule : callable step -> float, optional
        Multiplies ``lr`` (default ``ConstantSchedule()``).
    lr_multipliers : callable (name, step) -> float, dict name -> float, or None
        Per-tensor lr factor, >= 0; names missing from a dict get 1.
    max_grad_norm : float, optional
        Clip the global gradient norm inside ``step()`` (torch's rule, see ``clip``).
    """

    _hypers: tuple[str, ...] = ("lr", "weight_decay")  # scalars saved in the state dict
    _buffers: tuple[str, ...] = ()  # flat (N,) state arrays saved in the state dict

    def __init__(self, store, lr, *, weight_decay=0.0, no_decay=default_no_decay, schedule=None,
                 lr_multipliers=None, max_grad_norm=None):
        if not isinstance(store, ParameterStore):
            raise TypeError(f"store must be a ParameterStore, got {type(store).__name__}")
        self.store = store
        self.lr, self.weight_decay, self.max_grad_norm = lr, weight_decay, max_grad_norm
        self.schedule = schedule if schedule is not None else ConstantSchedule()
        if not callable(self.schedule):
            raise TypeError("schedule must be a callable step -> factor")
        order = sorted(store.slices.items(), key=lambda item: item[1][0])
        self.names = [name for name, _ in order]  # (S,) in buffer order
        self.seg_start = np.array([a for _, (a, _b) in order], dtype=np.int64)  # (S,)
        self.seg_stop = np.array([b for _, (_a, b) in order], dtype=np.int64)  # (S,)
        is_excluded = name_predicate(no_decay, "no_decay")
        self.decays = np.array([not is_excluded(n) for n in self.names], dtype=bool)  # (S,)
        self.lr_multipliers = lr_multipliers
        self._fixed_multipliers = self._multipliers_from_dict(lr_multipliers)
        self.step_count = 0
        self._check_hypers()

    # ------------------------------------------------------------------ hyper-parameters

    def _check_hypers(self) -> None:
        """Validate (and normalise to float) every hyper-parameter; subclasses extend."""
        self.lr = check_hyper("lr", self.lr, lambda x: x >= 0, ">= 0")
        self.weight_decay = check_hyper("weight_decay", self.weight_decay, lambda x: x >= 0, ">= 0")
        if self.max_grad_norm is not None:
            self.max_grad_norm = check_hyper("max_grad_norm", self.max_grad_norm, lambda x: x > 0, "> 0")

    def _multipliers_from_dict(self, spec) -> np.ndarray | None:
        """(S,) multipliers for None or a dict; None when ``spec`` is a callable (per step)."""
        if spec is None:
            return np.ones(len(self.names))
        if callable(spec):
            return None
        if not isinstance(spec, dict):
            raise TypeError("lr_multipliers must be None, a dict name -> float or a callable (name, step) -> float")
        unknown = sorted(set(spec) - set(self.names))
        if unknown:
            raise KeyError(f"lr_multipliers names tensors not in the store: {unknown[:5]}")
        return self._checked([float(spec.get(n, 1.0)) for n in self.names])

    def _checked(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
        if bad.size:
            i = bad[0]
            raise ValueError(f"lr_multipliers gave {values[i]} for {self.names[i]!r}; must be finite and >= 0")
        return values

    def multipliers(self, step: int) -> np.ndarray:
        """(S,) float64 lr multipliers for update number ``step``."""
        if self._fixed_multipliers is not None:
            return self._fixed_multipliers
        return self._checked([self.lr_multipliers(n, step) for n in self.names])

    # ------------------------------------------------------------------ the update

    def step(self) -> dict:
        """One update of ``store.data`` from ``store.grad``; returns stats.

        Returns
        -------
        dict
            ``lr`` (base lr times the schedule), ``step`` (the new ``step_count``) and, when
            ``max_grad_norm`` is set, ``grad_norm`` (the norm before clipping). ``store.grad``
            itself is not modified: the clip factor is folded into the update kernel.
        """
        step = self.step_count
        lr_now = self.lr * float(self.schedule(step))
        multipliers = self.multipliers(step)  # (S,)
        stats = {"lr": lr_now}
        grad_scale = 1.0
        if self.max_grad_norm is not None:
            norm = global_grad_norm(self.store)
            grad_scale = clip_scale(norm, self.max_grad_norm)
            stats["grad_norm"] = norm
        self._update(lr_now * multipliers, multipliers, grad_scale, step + 1)
        self.step_count = step + 1
        stats["step"] = self.step_count
        return stats

    def _update(self, seg_lr, multipliers, grad_scale, t) -> None:
        """Apply update number ``t`` (1-based) with per-segment lr (S,); see subclasses."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        self.store.zero_grad()

    def _new_buffer(self) -> np.ndarray:
        return np.zeros_like(self.store.data)  # (N,)

    # ------------------------------------------------------------------ exact resume

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: flat (N,) arrays and int/float scalars only,
        so the arrays can go into a safetensors file and the scalars into a json.

        The schedule and ``lr_multipliers`` are code, not state: build the resumed optimizer
        with the same ones (they are functions of ``step_count``, which is saved).
        """
        sd = {"step_count": int(self.step_count), "num_elements": int(self.store.data.size),
              "num_tensors": len(self.names), "layout_crc32": layout_crc32(self.store)}
        for h in self._hypers:
            value = getattr(self, h)
            sd[h] = int(value) if isinstance(value, (bool, np.bool_)) else float(value)
        if self.max_grad_norm is not None:
            sd["max_grad_norm"] = float(self.max_grad_norm)
        for b in self._buffers:
            sd[b] = getattr(self, b).copy()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        """Restore ``state_dict()`` output (copies it); errors say what does not match."""
        kind = type(self).__name__
        missing = [k for k in ("step_count", "num_elements", *self._hypers, *self._buffers) if k not in sd]
        if missing:
            raise KeyError(f"{kind} state_dict is missing {missing}: saved by another optimizer?")
        n = self.store.data.size
        if int(sd["num_elements"]) != n or int(sd.get("num_tensors", len(self.names))) != len(self.names):
            raise ValueError(f"state_dict was saved for a store of {int(sd['num_elements'])} elements in "
                             f"{sd.get('num_tensors', '?')} tensors; this store has {n} in {len(self.names)}")
        if "layout_crc32" in sd and int(sd["layout_crc32"]) != layout_crc32(self.store):
            raise ValueError("state_dict was saved for a store with other tensor names or layout")
        arrays = {}
        for b in self._buffers:
            a = np.asarray(sd[b])
            if a.shape != (n,):
                raise ValueError(f"state_dict[{b!r}] has shape {a.shape}; this store's flat buffers are ({n},)")
            if a.dtype != self.store.dtype:
                raise TypeError(f"state_dict[{b!r}] has dtype {a.dtype}; this store is {self.store.dtype}")
            arrays[b] = a
        old = {h: getattr(self, h) for h in (*self._hypers, "max_grad_norm")}
        for h in self._hypers:
            setattr(self, h, type(old[h])(sd[h]))
        self.max_grad_norm = sd.get("max_grad_norm")
        try:
            self._check_hypers()
        except ValueError:
            for h, v in old.items():
                setattr(self, h, v)
            raise
        for b, a in arrays.items():
            getattr(self, b)[...] = a
        self.step_count = int(sd["step_count"])


class AdamFamily(Optimizer):
    """Shared by AdamW and LAMB: betas, eps, the two moment buffers and moment gating.

    ``freeze_moments_when_lr_zero``: when True, a tensor whose lr *multiplier* is 0 at this step
    has its moments set to 0 instead of accumulated, and is not updated. This is MobileBERT's
    progressive knowledge transfer (``lamb_optimizer.py``: ``next_m = gate * (b1*m + (1-b1)*g)``
    with ``gate = 1 if layer_wise_lr > 0 else 0``): a layer enters its phase with fresh moments.
    The global schedule does not gate (a warm-up factor of 0 at step 0 keeps the moments). When
    False (torch's behaviour), a frozen tensor keeps accumulating m and v from its gradients.
    """

    _hypers = ("lr", "beta1", "beta2", "eps", "weight_decay", "freeze_moments_when_lr_zero")
    _buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, store, lr, betas, eps, *, freeze_moments_when_lr_zero=False, **kwargs):
        if len(tuple(betas)) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas}")
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.freeze_moments_when_lr_zero = bool(freeze_moments_when_lr_zero)
        super().__init__(store, lr, **kwargs)
        self.exp_avg = self._new_buffer()  # (N,) first moment m
        self.exp_avg_sq = self._new_buffer()  # (N,) second moment v

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _check_hypers(self) -> None:
        super()._check_hypers()
        self.beta1 = check_hyper("betas[0]", self.beta1, lambda b: 0 <= b < 1, "in [0, 1)")
        self.beta2 = check_hyper("betas[1]", self.beta2, lambda b: 0 <= b < 1, "in [0, 1)")
        self.eps = check_hyper("eps", self.eps, lambda e: e > 0, "> 0")

    def reset_moments(self) -> None:
        """Set m and v to 0, as a freshly built optimizer has them (``step_count`` is kept, so
        schedules keyed on it go on). MobileBERT's pre-training distillation starts so."""
        self.exp_avg.fill(0)
        self.exp_avg_sq.fill(0)

    def moment_gate(self, multipliers: np.ndarray) -> np.ndarray:
        """(S,) bool: False where the moments are gated to 0 this step (see the class notes)."""
        if self.freeze_moments_when_lr_zero:
            return multipliers != 0
        return np.ones(multipliers.shape, dtype=bool)
