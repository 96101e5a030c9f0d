# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 07 · Progressive knowledge transfer: the gates, the warm-up, and a short run
#
# MobileBERT's student does not learn from its teacher all at once. In progressive knowledge
# transfer (PKT) its 24 layers learn one at a time: stage l trains layer l to reproduce the
# teacher's layer l (feature maps, attention distributions, the mean and variance of each
# token's state), while the layers below keep learning slowly and the layers above wait. The
# embeddings and heads are copied from the teacher and frozen. Tutorial 06 took the losses
# apart; here we look at the *schedule*, as the released code runs it
# (`mobilebert/distill_util.py`), and watch it work.

# %%
import math
import os

import numpy as np

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert.config import ib_bert_tiny, tiny
from tinymobilebert.distill import (DistillationStep, TransferSchedule, background_lr, copy_from_teacher,
                                    distillation_plan, lamb_for, layer_gate, layer_of)
from tinymobilebert.gradcheck import perturb_parameters

# %% [markdown]
# ## The learning rate of each layer
#
# With S steps per stage, the multiplier of every tensor of encoder layer l at step s is
#
#     3 · bg(s) · gate_l(s),   gate_l(s) = 0 (s ≤ lS), 1 (lS < s ≤ (l+1)S), 0.1 (after)
#     bg(s) = min(0.9 + 0.1·sqrt(1 − τ), 10τ),   τ = (s mod S) / S
#
# `bg` is a warm-up that restarts in every stage: 0 at the stage's first step, a linear climb
# over its first tenth, then a slow decay to 0.9. Because bg is *exactly* 0 at every stage
# boundary, every multiplier is 0 there, and LAMB (built with `freeze_moments_when_lr_zero`)
# sets every Adam moment to 0: each stage starts with a fresh optimizer, lower layers included.

# %%
L, S = 3, 25
steps = np.arange(L * S)
bg = np.array([background_lr(s, S) for s in steps])
gates = np.array([[layer_gate(l, s, S) for s in steps] for l in range(L)])  # (L, steps)
schedule = TransferSchedule("pkt", L, S, 0, lr=1e-3)
multipliers = np.array([[schedule.layer_multiplier(l, s) for s in steps] for l in range(L)])
print("bg over the first stage:", np.round(bg[:8], 3), "...", np.round(bg[S - 2:S + 2], 3))
print("layer 1's multiplier at steps 25, 26, 50, 51:", [round(float(multipliers[1, s]), 3) for s in (25, 26, 50, 51)])

# %%
try:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.plot(steps, bg, "k-", label="bg (warm-up, every stage)")
    for l in range(L):
        a.plot(steps, gates[l], "--", label=f"gate of layer {l}")
    a.set_xlabel("step")
    a.legend(fontsize=8)
    for l in range(L):
        b.plot(steps, multipliers[l], label=f"layer {l}: 3 bg gate")
    b.set_xlabel("step")
    b.set_ylabel("lr multiplier")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig("07_gates.png", dpi=80)
    print("plot: 07_gates.png")
except ImportError:
    print("(matplotlib is not installed: no plot)")

# %% [markdown]
# ## A short PKT run
#
# A tiny IB-BERT teacher (inverted bottleneck: 48 inside, 32 between blocks) and a tiny
# MobileBERT student (16 inside), both 3 layers and 4 heads. The teacher here is random (with
# non-trivial weights): PKT teaches the student to compute whatever the teacher computes, so a
# random teacher is enough to watch the mechanics. First the copy: embeddings and heads.
#
# A step of stage l runs only what its loss reads: the student's layers 0..l and the teacher's
# up to the one paired with l (`forward(..., stop_after_layer=l)`). The layers above would get
# a zero gradient at lr 0 anyway, so the updates are exactly those of running every layer, for
# (L+1)/(2L) of the layer work over the run.

# %%
rng = np.random.default_rng(0)
teacher = MobileBertForPreTraining(ib_bert_tiny(num_hidden_layers=L, hidden_dropout_prob=0.0), seed=1).eval()
perturb_parameters(teacher, rng, scale=0.1)
student = MobileBertForPreTraining(tiny(num_hidden_layers=L), seed=0)
copied = copy_from_teacher(student, teacher)
print(len(copied), "tensors copied, e.g.", copied[:3])
frozen = {n: student.params[n].copy() for n in student.params if layer_of(n) is None}

ids = rng.integers(5, 99, (16, 12))
batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
         "labels": np.full_like(ids, -100)}
opt = lamb_for(student.store, schedule)  # LAMB as the original: no bias correction, clipping 1.0
step_fn = DistillationStep(teacher, schedule, distillation_plan(student.config, teacher.config), opt)
start = {n: p.copy() for n, p in student.params.items()}
log = []
for s in range(schedule.total_steps):
    student.zero_grad()
    log.append(step_fn(student, batch))  # the loss holds only the current stage's layer
    opt.step()
    if s == S:  # the first boundary: every moment was reset, layer 1 had not moved yet
        moments_at_boundary = float(np.abs(opt.exp_avg).max())
        layer1_untouched = all(np.array_equal(student.params[n], start[n]) for n in student.params
                               if layer_of(n) == 1)

# %%
fmt = {l: [(s, r[f"weighted_fmt_layer_{l}"] + r[f"weighted_at_layer_{l}"] + r[f"weighted_beta_layer_{l}"]
            + r[f"weighted_gamma_layer_{l}"]) for s, r in enumerate(log) if f"fmt_layer_{l}" in r] for l in range(L)}
for l in range(L):
    first, last = fmt[l][1][1], fmt[l][-1][1]
    print(f"stage {l + 1} (layer {l}): steps {fmt[l][0][0]}-{fmt[l][-1][0]}, weighted loss {first:.2f} -> {last:.2f}")

try:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for l in range(L):
        ax.plot([s for s, _ in fmt[l]], [v for _, v in fmt[l]], label=f"layer {l}'s terms")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted layer-wise loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig("07_pkt_losses.png", dpi=80)
    print("plot: 07_pkt_losses.png")
except NameError:
    pass

# %% [markdown]
# What to see: each layer's terms count only during its own stage (the loss gate is 1 for
# l·S < s ≤ (l+1)·S, with no warm-up in it), and fall there. A later stage starts lower than
# the first did: the layers below already imitate the teacher, so layer l's input is close to
# the teacher's. The embeddings and heads never moved.

# %%
spec = lambda l, s: 3 * min(0.9 + 0.1 * math.sqrt(1 - (s % S) / S), 10 * (s % S) / S) * (
    0.0 if s <= l * S else (1.0 if s <= (l + 1) * S else 0.1))
assert all(abs(multipliers[l, s] - spec(l, s)) < 1e-12 for l in range(L) for s in steps)
assert moments_at_boundary == 0.0 and layer1_untouched
assert all(np.array_equal(student.params[n], frozen[n]) for n in frozen)
for l in range(L):
    assert fmt[l][-1][1] < 0.8 * max(v for _, v in fmt[l][1:4]), f"stage {l}'s loss did not fall"
    assert [s for s, _ in fmt[l]] == list(range(l * S + 1, min((l + 1) * S, L * S - 1) + 1))
print("tutorial 07: all checks passed")
