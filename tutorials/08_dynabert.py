# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 · DynaBERT: one model, run at the width and depth that fits
#
# DynaBERT (Hou et al., NeurIPS 2020) trains *one* BERT so that its sub-networks (fewer heads
# and FFN neurons per layer, fewer layers) work on their own. You pick the size at run time:
# a phone runs width 0.25 and depth 0.5, a server the whole model. The recipe:
#
# 1. score every attention head and FFN neuron by how much the task loss leans on it;
# 2. **rewire**: sort them, most important first, so that "the first k heads" is a good choice;
# 3. **stage 1**: distil the fine-tuned model into every width; **stage 2**: into every width x depth.
#
# We walk through each step on a small BERT trained on a toy task, then extract the
# sub-networks as standalone models and tabulate what they cost.

# %%
import os
import tempfile

import numpy as np

from tinymobilebert import MobileBertForSequenceClassification
from tinymobilebert.config import bert_base
from tinymobilebert.data import example_batches
from tinymobilebert.dynabert import (SubnetworkDistillation, compute_importance, format_table, plot_head_importance,
                                     rewire, subnetwork_table, width_depth_subnetworks, width_subnetworks)
from tinymobilebert.model.plan import depth_layers, subnetwork_heads, subnetwork_neurons
from tinymobilebert.optim import AdamW, LinearWarmupDecay
from tinymobilebert.train import Trainer

QUICK = os.environ.get("TINYMOBILEBERT_TUTORIAL_TEST") == "1"  # the test suite runs shorter loops
work = tempfile.mkdtemp(prefix="tutorial08-")

# %% [markdown]
# ## The size rules
#
# Width w keeps the first `max(1, round(A w))` heads of every layer and the same fraction of
# every FFN's neurons; depth d keeps the layers `floor(i / d)` for `i < round(L d)`. Embeddings,
# norms and the hidden width are never cut. For BERT-base (A = 12, M = 3072, L = 12):

# %%
for w in (0.25, 0.5, 0.75, 1.0):
    print(f"w={w}: {subnetwork_heads(12, w)} heads, {subnetwork_neurons(12, 3072, w)} neurons")
for d in (0.5, 0.75, 1.0):
    print(f"d={d}: layers {depth_layers(12, d)}")

# %% [markdown]
# ## A small model to work with
#
# A task that needs attention and positions, so that heads and layers matter: each sequence
# holds a token A and a token B among random ones; does A come before B? A small BERT learns it
# from scratch in a few hundred steps; it will be our *teacher*.

# %%
V, T, A_ID, B_ID = 40, 16, 4, 5  # vocabulary, length, the two marked tokens; 2 = [CLS], 3 = [SEP]


def make_split(n, rng):
    ids = rng.integers(6, V, (n, T))
    ids[:, 0], ids[:, -1] = 2, 3
    where = np.array([rng.choice(np.arange(1, T - 1), 2, replace=False) for _ in range(n)])  # (n, 2)
    ids[np.arange(n), where[:, 0]] = A_ID
    ids[np.arange(n), where[:, 1]] = B_ID
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
            "labels": (where[:, 0] < where[:, 1]).astype(np.int64)}


rng = np.random.default_rng(0)
train, dev = make_split(4000, rng), make_split(500, rng)
cfg = bert_base(vocab_size=V, hidden_size=64, embedding_size=64, intra_bottleneck_size=64, num_hidden_layers=4,
                num_attention_heads=4, intermediate_size=128, max_position_embeddings=T, num_labels=2,
                classifier_pooling="mean")


def batches(epoch, start):
    return example_batches(train, 32, epoch, seed=0, start_batch=start, drop_last=True)


def dev_batches():
    return example_batches(dev, 250, 0, shuffle=False)


def accuracy(model, w=1.0, d=1.0):
    model.eval()
    hits = sum(int((model.forward(**b, width_mult=w, depth_mult=d, keep_cache=False).logits.argmax(1)
                    == b["labels"]).sum()) for b in dev_batches())
    return hits / len(dev["labels"])


teacher = MobileBertForSequenceClassification(cfg, seed=0)
steps = 400
opt = AdamW(teacher.store, lr=2e-3, schedule=LinearWarmupDecay(steps // 10, steps), max_grad_norm=1.0)
# a model this small trains fastest on one thread (see tinymobilebert/threads.py)
Trainer(teacher, opt, batches, os.path.join(work, "teacher"), max_steps=steps, progress=False, threads=1).train()
print(f"teacher: {accuracy(teacher):.3f} dev accuracy (chance: 0.5)")

# %% [markdown]
# ## A sub-network is a run-time choice
#
# `forward(..., width_mult=w, depth_mult=d)` runs the sub-network through views of the
# weights, no copies. A width-w run computes what the full model computes once the cut heads'
# and neurons' output columns are zero: the softmax of the kept heads never sees the cut ones.

# %%
teacher.eval()
b = next(dev_batches())
half = teacher.forward(**b, width_mult=0.5, keep_cache=False).logits
zeroed = MobileBertForSequenceClassification(cfg)
zeroed.load_state_dict(teacher.state_dict())
for i in range(cfg.num_hidden_layers):
    p = f"bert.encoder.layer.{i}."
    zeroed.params[p + "attention.output.dense.weight"][:, 2 * cfg.head_size:] = 0  # heads 2, 3
    zeroed.params[p + "output.dense.weight"][:, 64:] = 0  # neurons 64..127
print("max |difference|:", np.abs(zeroed.eval().forward(**b, keep_cache=False).logits - half).max())
untrained = {(w, d): accuracy(teacher, w, d) for w in (0.25, 0.5, 1.0) for d in (0.5, 1.0)}
for (w, d), a in untrained.items():
    print(f"w={w}, d={d}: dev accuracy {a:.3f} (not trained for it yet)")

# %% [markdown]
# ## Importance, and the heat map
#
# Head importance is the accumulated |d loss / d head_mask| (the head mask multiplies each
# head's attention probabilities); neuron importance a first-order Taylor estimate,
# |sum W1 dW1 + b1 db1| + |sum W2 dW2|. DynaBERT computes them on the dev set; so do we here.

# %%
imp = compute_importance(teacher, example_batches(dev, 64, 0, shuffle=False))
png = plot_head_importance(imp.heads, os.path.join(work, "head_importance.png"))
print("heads by importance, per layer:", np.argsort(-imp.heads, axis=1).tolist())
print("heat map:", png)

# %% [markdown]
# ## Rewiring
#
# Permuting heads (their Q/K/V rows and output columns) and neurons (their W1 rows and W2
# columns) changes nothing at full width, but now width w keeps the most important ones. The
# scores are a first-order guess about the *full* network, so a narrow sub-network need not be
# better right after rewiring (watch w = 0.25 below); rewiring gives training a good start.

# %%
student = MobileBertForSequenceClassification(cfg, seed=1)
student.load_state_dict(teacher.state_dict())
before = {w: accuracy(student, w) for w in (0.25, 0.5)}
full_before = student.eval().forward(**b, keep_cache=False).logits
rewire(student, imp.heads, imp.neurons)
full_after = student.eval().forward(**b, keep_cache=False).logits
after = {w: accuracy(student, w) for w in (0.25, 0.5)}
print("full width, max |difference|:", np.abs(full_after - full_before).max())
for w in before:
    print(f"w={w}: {before[w]:.3f} -> {after[w]:.3f} dev accuracy after rewiring")

# %% [markdown]
# ## Training every sub-network at once
#
# One step sums the losses of every sub-network on the same batch into the same gradients
# (one backward each, gradients accumulating), then clips once and takes one optimizer step.
# Each loss is the soft cross-entropy to the teacher's logits plus lambda times the MSE to its
# hidden states (lambda 0.1 in stage 1; in stage 2, 1.0, and a depth-d student's layer j
# matches the teacher's hidden state `m[j + 1]`, `m = depth_layers(L, d) + [L]`, hidden state 0
# being the embeddings: `dynabert.step.teacher_hidden_indices`).

# %%
def distil(stage, subnetworks, teacher_model, hidden_weight, steps):
    step = SubnetworkDistillation(teacher_model, subnetworks, hidden_weight)
    opt = AdamW(student.store, lr=1e-3, weight_decay=0.0, max_grad_norm=1.0,
                schedule=LinearWarmupDecay(0, steps))
    Trainer(student, opt, batches, os.path.join(work, stage), max_steps=steps, step_fn=step, progress=False,
            threads=1).train()


stage1 = width_subnetworks([0.25, 0.5, 0.75, 1.0])
distil("stage1", stage1, teacher, 0.1, 30 if QUICK else 150)
stage1_model = MobileBertForSequenceClassification(cfg)
stage1_model.load_state_dict(student.state_dict())
stage2 = width_depth_subnetworks([0.25, 0.5, 0.75, 1.0], [0.5, 0.75, 1.0])
distil("stage2", stage2, stage1_model, 1.0, 30 if QUICK else 200)
trained = {(w, d): accuracy(student, w, d) for w, d in untrained}
for (w, d), a in trained.items():
    print(f"w={w}, d={d}: dev accuracy {untrained[w, d]:.3f} -> {a:.3f}")

# %% [markdown]
# ## Standalone sub-networks, and what they cost
#
# `extract_subnetwork(w, d)` copies the kept layers, heads and neurons into an ordinary model
# whose config says so (heads, head width, FFN width, layers). It computes the same outputs.
# `save_pretrained` writes a directory transformers loads (the cut heads padded back with
# zeros, the same function); `compact=True` writes the compact form, which only this package
# reads. The table: dev accuracy, parameters, FLOPs per token and latency of each.

# %%
small = student.extract_subnetwork(0.5, 0.5)
print(small.config.num_hidden_layers, "layers,", small.config.num_attention_heads, "heads of",
      small.config.head_size, ",", small.config.intermediate_size, "neurons;", small.num_parameters(), "parameters")
same = np.abs(small.eval().forward(**b, keep_cache=False).logits
              - student.eval().forward(**b, width_mult=0.5, depth_mult=0.5, keep_cache=False).logits).max()
print("extracted vs supernet, max |difference|:", same)
small.save_pretrained(os.path.join(work, "w0.5_d0.5"))
rows = subnetwork_table(student, stage2, lambda m, w, d: {"accuracy": accuracy(m, w, d)}, seq_len=T,
                        latency_repeats=1 if QUICK else 5, latency_batches=(1, 32))
print(format_table(rows))

# %%
assert np.abs(zeroed.forward(**b, keep_cache=False).logits - half).max() < 1e-5
assert np.abs(full_after - full_before).max() < 1e-4  # float32: rewiring only reorders sums
assert accuracy(teacher) > 0.9
assert np.mean(list(trained.values())) > np.mean(list(untrained.values()))  # the sub-networks learned
assert same < 1e-4
by = {(r["width"], r["depth"]): r for r in rows}
assert by[0.25, 0.5]["parameters"] < by[0.5, 0.5]["parameters"] < by[0.5, 1.0]["parameters"] < by[1.0, 1.0]["parameters"]
assert by[0.25, 0.5]["flops_per_token"] < by[1.0, 1.0]["flops_per_token"]
assert by[1.0, 1.0]["accuracy"] > 0.9
assert os.path.getsize(png) > 1000
