"""The schedules of MobileBERT's knowledge transfer: at every optimizer step, which stage runs,
which layers' loss terms count, and how fast each tensor learns.

Dimensions: L student layers, S steps per stage, P = L S steps of layer-wise transfer, D steps
of pre-training distillation (PD). Steps are 0-based and count optimizer updates, as TF's
``global_step`` and ``optim``'s ``step_count`` do: update number s uses step s.

**Progressive knowledge transfer (PKT)**, as the released code runs it (google-research
``mobilebert/distill_util.py``: ``layer_wise_learning_rate``, ``get_background_lr``;
``lamb_optimizer.py``; ``run_pretraining.py``: ``get_layerwise_gate``, ``S = steps // L``):

    gate_l(s) = 0    if s <= l S                         (before layer l's stage)
              = 1    if l S < s <= (l + 1) S             (during it)
              = 0.1  if s > (l + 1) S                    (after it: lower layers keep learning slowly)
    bg(s)     = min(0.9 + 0.1 sqrt(1 - tau), 10 tau),   tau = (s mod S) / S
    lr multiplier of every tensor of encoder layer l:   3 bg(s) gate_l(s)
    lr multiplier of every other tensor (embeddings, heads, copied from the teacher): 0
    loss at step s: layer l's terms count iff l S < s <= (l + 1) S          (no bg in this gate)

``bg`` is a warm-up repeated in every stage: 0 at the stage's first step, 10 tau up to ~0.995 at
tau ~ 0.1, then 0.9 + 0.1 sqrt(1 - tau) down to 0.90. As it is exactly 0 at s = 0 and at every
multiple of S, at those steps every multiplier is 0: with ``LAMB(freeze_moments_when_lr_zero=
True)`` every tensor's Adam moments are set to 0 and nothing moves, so each stage starts with
fresh moments. (The last step of a stage is therefore that reset: each layer gets S - 1 updates
while its terms count, and step 0 does nothing.)

**This project's reading of the other strategies** (no released code implements AKT or JKT; the
paper's Fig. 2 draws them):

* JKT (joint): one layer-wise stage of P = L S steps in which every layer's terms count and every
  encoder layer has multiplier 3 bg(s) with tau = s / P (the same warm-up, over the one stage);
  embeddings and heads copied from the teacher and frozen, as in PKT. Then PD.
* AKT (auxiliary): no layer-wise stage; D steps of PD with every layer's terms added to the PD
  loss, every tensor learning from the start (nothing copied: the paper copies the embeddings
  and heads only for JKT and PKT).
* PD alone (``"pd"``): D steps of PD from a freshly initialised student.

**PD** (``run_pretraining.py`` stage 2): every tensor at multiplier 1; the base lr follows a
linear warm-up then a linear decay to ``pd_end_factor`` of its peak (``PolynomialDecay``), counted
from the stage's first step; the optimizer's moments are reset to 0 at that step (a fresh
optimizer, as the original restarts). The layer-wise stage's base lr is constant.

Layer-wise loss weights (README flags of the released code, each divided by L):
``100 FMT + 1 AT + 5000 beta + 5 gamma`` (beta, gamma: the mean and variance terms).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..optim.schedule import PolynomialDecay

STRATEGIES = ("pkt", "jkt", "akt", "pd")
LAYERWISE, PD = "layerwise", "pd"
LR_FACTOR = 3.0  # distill_util.layer_wise_learning_rate: 3.0 * background_lr * gate
GATE_VALUES = (0.0, 1.0, 0.1)  # before / during / after a layer's stage
_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


# ------------------------------------------------------------------------------ the formulas
def background_lr(step: int, steps_per_stage: int) -> float:
    """bg(s) = min(0.9 + 0.1 sqrt(1 - tau), 10 tau), tau = (s mod S) / S; 1 when S == 1."""
    if steps_per_stage <= 1:
        return 1.0
    tau = (step % steps_per_stage) / steps_per_stage
    return min(0.9 + 0.1 * math.sqrt(1.0 - tau), 10.0 * tau)


def layer_gate(layer: int, step: int, steps_per_stage: int) -> float:
    """gate_l(s): 0 before layer ``layer``'s stage, 1 during it, 0.1 after it (module notes)."""
    start = layer * steps_per_stage
    if step <= start:
        return GATE_VALUES[0]
    return GATE_VALUES[1] if step <= start + steps_per_stage else GATE_VALUES[2]


def layer_of(name: str) -> int | None:
    """The encoder layer a parameter belongs to (``...encoder.layer.3.attention...`` -> 3), or None."""
    m = _LAYER.search(name)
    return None if m is None else int(m.group(1))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the layer-wise terms before division by the layer count (the released code's
    ``hidden_distill_factor``, ``attention_distill_factor``, ``beta_distill_factor``,
    ``gamma_distill_factor``)."""

    fmt: float = 100.0
    at: float = 1.0
    beta: float = 5000.0
    gamma: float = 5.0

    def per_layer(self, num_layers: int) -> dict:
        """{"fmt", "at", "beta", "gamma"} each divided by ``num_layers``."""
        return {k: getattr(self, k) / num_layers for k in ("fmt", "at", "beta", "gamma")}


@dataclass(frozen=True)
class Stage:
    """A run of consecutive steps with one kind of loss: ``layerwise`` (FMT/AT/mean-variance only)
    or ``pd`` (MLM against the mixed target + NSP, with AKT's layer-wise terms added)."""

    name: str  # what the progress bar shows, e.g. "PKT stage 2/4 (layer 1)", "PD"
    kind: str  # LAYERWISE or PD
    start: int  # first step
    stop: int  # one past the last

    @property
    def steps(self) -> int:
        return self.stop - self.start


# ------------------------------------------------------------------------------ a whole run
class TransferSchedule:
    """Stages, loss gates and learning rates of one distillation run (see the module notes).

    Parameters
    ----------
    strategy : "pkt", "jkt", "akt" or "pd"
    num_layers : int
        L, the student's layer count.
    steps_per_layer : int
        S (PKT: one stage of S steps per layer; JKT: one stage of L S steps). Unused by AKT and PD.
    pd_steps : int
        D, the PD stage's length (0: no PD, allowed for PKT and JKT only).
    lr : float
        Base learning rate of the layer-wise stage (the original: 1.5e-3, constant).
    pd_lr : float, optional
        Peak base learning rate of PD (default ``lr``).
    pd_warmup : int
        PD's linear warm-up steps.
    pd_end_factor : float
        PD's lr at its end, as a share of ``pd_lr`` (the original: 1.5e-7 / 1.5e-3 = 1e-4).

    Attributes
    ----------
    stages : list of Stage
    total_steps : int
    """

    def __init__(self, strategy: str, num_layers: int, steps_per_layer: int = 0, pd_steps: int = 0, *,
                 lr: float = 1.5e-3, pd_lr: float | None = None, pd_warmup: int = 0, pd_end_factor: float = 1e-4):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        for name, v, least in (("num_layers", num_layers, 1), ("steps_per_layer", steps_per_layer, 0),
                               ("pd_steps", pd_steps, 0), ("pd_warmup", pd_warmup, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {v!r}")
        layerwise = strategy in ("pkt", "jkt")
        if layerwise and steps_per_layer < 2:
            raise ValueError(f"{strategy.upper()} needs steps_per_layer >= 2 (each stage's first step only resets "
                             f"the optimizer), got {steps_per_layer}")
        if not layerwise and pd_steps < 1:
            raise ValueError(f"{strategy.upper()} is pre-training distillation: it needs pd_steps >= 1")
        if pd_steps and pd_warmup > pd_steps:
            raise ValueError(f"pd_warmup ({pd_warmup}) must not exceed pd_steps ({pd_steps})")
        for name, v in (("lr", lr), ("pd_lr", lr if pd_lr is None else pd_lr)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        self.strategy, self.num_layers = strategy, num_layers
        self.steps_per_layer = steps_per_layer if layerwise else 0
        self.lr, self.pd_lr = float(lr), float(lr if pd_lr is None else pd_lr)
        L, S = num_layers, self.steps_per_layer
        self.transfer_steps = L * S  # P
        self.stages: list[Stage] = []
        if strategy == "pkt":
            self.stages += [Stage(f"PKT stage {l + 1}/{L} (layer {l})", LAYERWISE, l * S, (l + 1) * S) for l in range(L)]
        elif strategy == "jkt":
            self.stages.append(Stage("JKT", LAYERWISE, 0, L * S))
        if pd_steps:
            name = "AKT (PD + layer-wise terms)" if strategy == "akt" else "PD"
            self.stages.append(Stage(name, PD, self.transfer_steps, self.transfer_steps + pd_steps))
        self.total_steps = self.stages[-1].stop
        self.pd_schedule = PolynomialDecay(max(pd_steps, 1), end_factor=pd_end_factor, warmup_steps=pd_warmup)
        self._layer_cache: dict[str, int | None] = {}

    # -------------------------------------------------------------------------- where we are
    def stage_at(self, step: int) -> Stage:
        """The stage update number ``step`` belongs to (the last one past the end)."""
        for stage in self.stages:
            if step < stage.stop:
                return stage
        return self.stages[-1]

    def stage_name(self, step: int) -> str:
        return self.stage_at(step).name

    @property
    def copies_from_teacher(self) -> bool:
        """JKT and PKT start from the teacher's embeddings and heads (and freeze them)."""
        return self.strategy in ("pkt", "jkt")

    @property
    def layerwise_in_pd(self) -> bool:
        """AKT adds the layer-wise terms to PD's loss."""
        return self.strategy == "akt"

    def is_pd_start(self, step: int) -> bool:
        """True at PD's first step, where the optimizer's moments are reset."""
        return self.strategy in ("pkt", "jkt") and step == self.transfer_steps and self.total_steps > step

    # -------------------------------------------------------------------------- loss gates
    def loss_layers(self, step: int) -> tuple[int, ...]:
        """Student layers whose layer-wise terms count at ``step`` (PKT: at most one)."""
        stage = self.stage_at(step)
        if stage.kind == PD:
            return tuple(range(self.num_layers)) if self.layerwise_in_pd else ()
        if self.strategy == "jkt":
            return tuple(range(self.num_layers))
        S = self.steps_per_layer
        return tuple(l for l in range(self.num_layers) if l * S < step <= (l + 1) * S)

    # -------------------------------------------------------------------------- learning rates
    def base_lr(self, step: int) -> float:
        """The lr every multiplier scales: constant ``lr`` in the layer-wise stage, PD's warm-up
        and decay (counted from PD's first step) after it. Pass as an optimizer ``schedule`` with
        the optimizer's ``lr=1``."""
        if step < self.transfer_steps:
            return self.lr
        return self.pd_lr * self.pd_schedule(step - self.transfer_steps)

    __call__ = base_lr

    def layer_multiplier(self, layer: int | None, step: int) -> float:
        """The lr multiplier of encoder layer ``layer`` (None: embeddings and heads) at ``step``."""
        if step >= self.transfer_steps:
            return 1.0  # PD: every tensor learns
        if layer is None:
            return 0.0  # copied from the teacher, frozen
        if self.strategy == "jkt":
            return LR_FACTOR * background_lr(step, self.transfer_steps)
        S = self.steps_per_layer
        return LR_FACTOR * background_lr(step, S) * layer_gate(layer, step, S)

    def lr_multiplier(self, name: str, step: int) -> float:
        """``LAMB(lr_multipliers=...)``'s callable: (tensor name, step) -> multiplier."""
        if name not in self._layer_cache:
            self._layer_cache[name] = layer_of(name)
        return self.layer_multiplier(self._layer_cache[name], step)

    def group_lrs(self, step: int) -> dict:
        """{"lr_embeddings_heads", "lr_layer_0", ...}: the effective lr of each layer group."""
        base = self.base_lr(step)
        out = {"lr_embeddings_heads": base * self.layer_multiplier(None, step)}
        for l in range(self.num_layers):
            out[f"lr_layer_{l}"] = base * self.layer_multiplier(l, step)
        return out

    def describe(self) -> dict:
        """The schedule as plain data, for the run's recorded configuration."""
        return {"strategy": self.strategy, "num_layers": self.num_layers, "steps_per_layer": self.steps_per_layer,
                "transfer_steps": self.transfer_steps, "total_steps": self.total_steps, "lr": self.lr,
                "pd_lr": self.pd_lr, "pd_schedule": repr(self.pd_schedule),
                "stages": [{"name": s.name, "kind": s.kind, "start": s.start, "stop": s.stop} for s in self.stages]}
