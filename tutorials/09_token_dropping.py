# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 09 · Token dropping: unimportant tokens skip the middle layers
#
# Hou, Pang et al. (ACL 2022) cut BERT's pretraining cost by about a quarter with no new
# parameters. A token whose masked-LM loss has stayed low is one the model already handles;
# such tokens skip the middle layers: they leave the sequence at the split layer (L/2 - 1) and
# rejoin, with the state they had before the split, before the last layer, which again sees
# every token. Fine-tuning and inference then use the plain model.
#
# Three parts: (1) *importance* on real text, learned from the per-token MLM losses the training
# step already computes; (2) the *split and the merge* written by hand, forward and backward,
# checked against the model and against finite differences; (3) a short pretraining run with
# and without dropping. On the way, a picture of which tokens each layer updated.
#
# Dimensions: B batch, T tokens, k kept tokens, N = B*T rows, H hidden width, L layers.

# %%
import os
import tempfile
import time

import numpy as np

from tinymobilebert import BertTokenizer, MobileBertForPreTraining
from tinymobilebert.blocks.embeddings import embeddings_forward
from tinymobilebert.blocks.layer import layer_backward, layer_forward
from tinymobilebert.config import tiny
from tinymobilebert.data import PretrainingData, builtin_corpus, train_dev_split
from tinymobilebert.gradcheck import check_arrays, gradcheck, perturb_parameters
from tinymobilebert.optim import AdamW, LinearWarmupDecay
from tinymobilebert.token_dropping import TokenDropping, TokenImportance, layer_view
from tinymobilebert.train import Trainer, read_log
from tinymobilebert.train.evaluate import evaluate_pretraining
from tinymobilebert.workflows import small_mobilebert

QUICK = os.environ.get("TINYMOBILEBERT_TUTORIAL_TEST") == "1"  # the test suite runs shorter loops
BATCH, LEARN_STEPS, STEPS = (8, 10, 12) if QUICK else (16, 150, 300)

docs = builtin_corpus()[:120]
train_docs, dev_docs = train_dev_split(docs, dev_fraction=0.1, seed=0)
tok = BertTokenizer.train((s for d in train_docs for s in d.sentences), vocab_size=1500)
data = PretrainingData(train_docs, tok, max_length=64, seed=0, nsp=False)  # MLM only, as the original
dev = PretrainingData(dev_docs, tok, max_length=64, seed=1, nsp=False)
dev_batches = list(dev.batches(32, 0, shuffle=False, drop_last=False))[:4]

# %% [markdown]
# ## 1. Importance: one running MLM loss per vocabulary id
#
# The score of id v is an exponential moving average, with beta = 0.995 and starting at 10.0, of
# the MLM cross-entropy at the positions whose *label* is v. A sequence keeps its k tokens of
# highest score, looked up by the token it *shows* (after masking). The special tokens are
# handled by rule, and read from the tokenizer, never written as numbers: [CLS], [SEP], [MASK]
# and [UNK] are always kept first; [PAD] only after every real token.
#
# The per-token losses cost nothing extra: the loss already computed each labelled position's
# log-sum-exp, and `out.mlm_token_losses` is `lse - logit of the label` there.

# %%
importance = TokenImportance.from_tokenizer(tok)
print(importance)
print("protected:", tok.convert_ids_to_tokens(importance.protected_ids.tolist()),
      "never kept:", tok.convert_ids_to_tokens(importance.never_keep_ids.tolist()))

cfg = small_mobilebert(len(tok), num_hidden_layers=4, max_position_embeddings=64)
model = MobileBertForPreTraining(cfg, seed=0)
batch = next(data.batches(BATCH, 0))
out = model.forward(**batch, mlm_positions="labelled")
logits = out.prediction_logits.astype(np.float64)  # (M, V) at the labelled positions
gold = batch["labels"].reshape(-1)[out.mlm_positions]
per_token = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(gold)), gold]
loss_diff = np.abs(out.mlm_token_losses - per_token).max()
print(f"{len(gold)} labelled positions; per-token losses vs by hand: max diff {loss_diff:.1e}; their mean "
      f"{out.mlm_token_losses.mean():.4f} = out.mlm_loss {out.mlm_loss:.4f}")

# %% [markdown]
# Two rules the original left open, made deterministic here. An id seen n times in one batch
# moves once, toward the mean of its n losses (the original's scatter-update keeps one of them,
# unspecified which). And ties in score, which are everywhere at first (every unseen id holds
# exactly 10.0), go to the earlier position. Slots with no label are skipped; the original also
# learned from padded prediction slots, which let [PAD]'s score drift up until padding was kept.
#
# Let the table learn from some training steps of the real model (with dropping, as in
# pretraining), then look at its extremes: frequent, easy pieces (punctuation, "the") sink,
# rare ones stay near the top.

# %%
dropping = TokenDropping(importance, keep=0.5)
opt = AdamW(model.store, lr=2e-3, schedule=LinearWarmupDecay(10, 10, end_factor=1.0), max_grad_norm=1.0)
for k, batch in zip(range(LEARN_STEPS), data.batches(BATCH, 0)):
    batch = {**batch, "mlm_positions": "labelled", **dropping.plan_options(batch)}  # + keep_positions (B, k)
    model.zero_grad()
    out = model.forward(**batch)
    model.backward()
    dropping.learn(batch, out)  # importance.update(labels[labels != -100], out.mlm_token_losses)
    opt.step()
print(importance.format_extremes(tok, n=8, min_count=5))

# %% [markdown]
# Selection on one masked row: every [MASK] is kept (protected), and so are [CLS] and [SEP];
# the other prediction targets, the ~20% that BERT's masking leaves unchanged or replaces by a
# random token, are ranked like any token and may be dropped. They are still predicted, by the
# last layer, from their state before the split.

# %%
row = {key: value[:1] for key, value in batch.items() if key in ("input_ids", "attention_mask", "labels")}
kept = importance.select(row["input_ids"], row["attention_mask"], keep=0.5)[0]
ids, labels = row["input_ids"][0], row["labels"][0]
real = int(row["attention_mask"][0].sum())
shown = []
for t in range(real):
    token = tok.convert_ids_to_tokens([int(ids[t])])[0]
    target = "" if labels[t] == -100 else "->" + tok.convert_ids_to_tokens([int(labels[t])])[0]
    shown.append(f"{token}{target}" + ("" if t in kept else "(dropped)"))
print(" ".join(shown))
assert all(t in kept for t in np.flatnonzero(ids == tok.mask_token_id))

# %% [markdown]
# ## Seeing it: which tokens each layer updated
#
# `layer_view` reads the encoder plan: the layers before the split update every token; the
# split layer (marked `s`) updates the kept tokens, whose queries still attend to *every*
# token; the layers after it update the kept tokens only, attending only to each other; the
# last layer updates every token again.

# %%
view = layer_view(cfg, tok, importance, "Return the number of items in a container.", keep=0.5)
print(view.format())
png = view.plot("token_dropping_layers.png")
print("picture:", png)

# %% [markdown]
# ## 2. The split and the merge, by hand
#
# A small MobileBERT in float64 with non-trivial weights, four layers: the default split is
# layer L/2 - 1 = 1. Written out, for kept positions `keep` (B, k), ascending:
#
#     X1 = layer0(X0)                                 every row
#     X2 = layer1(X1, queries = X1[kept], keys = X1)  the split: kept rows out        (B*k, H)
#     X3 = layer2(X2, keys = X2, kept rows' mask)      the kept rows as a short sequence
#     M  = X1 with rows kept replaced by X3            the merge                       (N, H)
#     X4 = layer3(M)                                   every row again
#
# The merge is a copy plus a scatter, so its backward is a gather plus a copy with the kept rows
# zeroed: the dropped rows' gradient flows straight back to X1, skipping layers 1 and 2.

# %%
small = tiny(num_hidden_layers=4, pad_token_id=None)
m64 = MobileBertForPreTraining(small, seed=0, dtype=np.float64).eval()
perturb_parameters(m64, np.random.default_rng(0))
rng = np.random.default_rng(1)
B, T = 2, 7
x_ids = rng.integers(0, small.vocab_size, (B, T))
mask = np.ones((B, T), np.int64)
mask[1, 5:] = 0
keep = np.array([[0, 2, 3, 6], [0, 1, 3, 4]])
kept_rows = (np.arange(B)[:, None] * T + keep).reshape(-1)  # (B*k,) flat rows
kept_mask = np.take_along_axis(mask, keep, axis=1).astype(np.float64)
P, pre = m64.params, "mobilebert.encoder.layer."


def merge_forward(before, kept_x, rows):
    """The dropped rows keep ``before`` (N, H); the kept rows take ``kept_x`` (B*k, H)."""
    merged = before.copy()
    merged[rows] = kept_x
    return merged


def merge_backward(d_merged, rows):
    """(d before, d kept_x): the kept rows' gradient goes to kept_x, the rest to before."""
    d_before = d_merged.copy()
    d_before[rows] = 0.0
    return d_before, d_merged[rows]


def by_hand(X0):
    X1, *_, c0 = layer_forward(X0, mask, P, pre + "0", small, B, T)
    X2, *_, c1 = layer_forward(X1, mask, P, pre + "1", small, B, T, q_rows=kept_rows)  # (B*k, H)
    X3, *_, c2 = layer_forward(X2, kept_mask, P, pre + "2", small, B, keep.shape[1])
    M = merge_forward(X1, X3, kept_rows)
    X4, *_, c3 = layer_forward(M, mask, P, pre + "3", small, B, T)
    return X4, (c0, c1, c2, c3)


X0, _ = embeddings_forward(x_ids, np.zeros_like(x_ids), mask, P, "mobilebert.", small)
X4, caches = by_hand(X0)
ref = m64.forward(x_ids, attention_mask=mask, keep_positions=keep, keep_cache=False).last_hidden_state
print(f"by hand vs model.forward(keep_positions=...): max diff {np.abs(X4 - ref.reshape(B * T, -1)).max():.1e}")

# %% [markdown]
# Backward, the same path in reverse: the last layer, the merge's backward splitting the
# gradient, the kept rows through layers 2 and 1, and the dropped rows' share added to what
# layer 1 sends back to X1. Then finite differences of `<G, X4>` with respect to X0 check the
# whole chain, split and merge included.

# %%
G = rng.standard_normal(X4.shape)  # an arbitrary gradient on the output               (N, H)
scratch = {name: np.zeros_like(p) for name, p in P.items()}
c0, c1, c2, c3 = caches
dM = layer_backward(G, c3, P, scratch)
dX1_dropped, dX3 = merge_backward(dM, kept_rows)
dX2 = layer_backward(dX3, c2, P, scratch)
dX1 = layer_backward(dX2, c1, P, scratch) + dX1_dropped  # kept queries' path + the dropped rows' path
dX0 = layer_backward(dX1, c0, P, scratch)

x0 = X0.copy()
report = check_arrays(lambda: float(np.sum(G * by_hand(x0)[0])), {"X0": x0}, {"X0": dX0}, max_entries=40)
print(report)

# %% [markdown]
# The same check for the model's own backward, with padding and a keep set that leaves out a
# labelled position (its loss still reaches the weights through the last layer): the weights of
# the split layer and the middle layer, and the embeddings below them (`tests/test_plan.py`
# checks every parameter, in every layout). The attention key bias is left out: its true
# gradient is exactly zero (a softmax ignores a shift shared by a row's scores), below what
# finite differences resolve, so we check that the analytic one is zero instead.

# %%
labels = np.full((B, T), -100)
labels[0, 1], labels[0, 3], labels[1, 2] = x_ids[0, 1], x_ids[0, 3], x_ids[1, 2]  # (0, 1) and (1, 2) dropped
names = [n for n in m64.params if (".layer.1." in n or ".layer.2." in n or "word_embeddings" in n)
         and not n.endswith("key.bias")]
inputs = dict(input_ids=x_ids, attention_mask=mask, labels=labels, keep_positions=keep,
              next_sentence_label=np.array([0, 1]))
model_report = gradcheck(m64, inputs, names=names, max_entries=3)
m64.zero_grad()
m64.forward(**inputs)
g = m64.backward()
key_bias_grad = max(np.abs(g[n]).max() for n in g if n.endswith("key.bias"))
print(f"model gradcheck with token dropping: {len(model_report.checks)} tensors, worst relative error "
      f"{model_report.worst.rel_error:.1e} ({model_report.worst.name}); largest key-bias gradient "
      f"{key_bias_grad:.0e}")

# %% [markdown]
# ## 3. A short pretraining run, with and without dropping
#
# The same model, data and seed; the only difference is the training step: `TokenDropping` is
# the loop above as a `Trainer` step function (select, forward, backward, learn), and its table
# is checkpointed with the run (`extra_state`) so that a resumed run stays exact. Held-out loss is measured without dropping (how
# the model will be used) and, for the dropping run, with it. At this size a step with dropping
# costs ~0.8-0.85 of a plain one (`benchmarks/token_dropping.py` measures where the time goes);
# whether the saving survives to equal *loss* is a question for the benchmark's longer runs.

# %%
steps = STEPS
runs = {}
for name in ("plain", "dropping"):
    m = MobileBertForPreTraining(cfg, seed=0)
    o = AdamW(m.store, lr=2e-3, schedule=LinearWarmupDecay(20, 20, end_factor=1.0), max_grad_norm=1.0, eps=1e-7)
    hook = TokenDropping(TokenImportance.from_tokenizer(tok), keep=0.5) if name == "dropping" else None
    folder = tempfile.mkdtemp()
    trainer = Trainer(m, o, lambda e, s: ({**b, "mlm_positions": "labelled"} for b in data.batches(BATCH, e, s)),
                      folder, max_steps=steps, save_every=steps, progress=False, step_fn=hook,
                      extra_state={"token_importance": hook} if hook else None)
    cpu = time.process_time()
    trainer.train()
    cpu = time.process_time() - cpu
    held = evaluate_pretraining(m, lambda: iter(dev_batches))["mlm_loss"]
    held_dropping = (evaluate_pretraining(m, lambda: hook.with_dropping(dev_batches))["mlm_loss"] if hook else None)
    losses = [r["mlm_loss"] for r in read_log(folder) if r["split"] == "train"]
    runs[name] = dict(first=np.mean(losses[:5]), last=np.mean(losses[-5:]), held=held, held_dropping=held_dropping,
                      cpu=cpu, hook=hook)
    print(f"{name:9s} {steps} steps, {cpu:5.1f} CPU s; training MLM loss {runs[name]['first']:.2f} -> "
          f"{runs[name]['last']:.2f}; held-out {held:.3f}" + (f" (with dropping {held_dropping:.3f})" if hook else ""))

# %% [markdown]
# The saved model is a plain model: nothing about dropping is in its weights or config, so it
# loads into any class and runs without dropping.

# %%
m.save_pretrained("dropped_model")
again = MobileBertForPreTraining.from_pretrained("dropped_model")
row_ids = dev_batches[0]["input_ids"][:2]
same = np.array_equal(m.eval().forward(row_ids, keep_cache=False).prediction_logits,
                      again.forward(row_ids, keep_cache=False).prediction_logits)
print("reloaded as a plain MobileBertForPreTraining, identical logits:", same)

# %%
assert loss_diff < 1e-9  # the same float32 logits, both sums in float64
assert np.abs(X4 - ref.reshape(B * T, -1)).max() < 1e-12
assert report.ok(1e-6), report
assert model_report.ok(1e-6), model_report
assert key_bias_grad < 1e-12
assert view.updated.sum(axis=1).tolist() == [len(view.tokens)] + [len(view.kept)] * 2 + [len(view.tokens)]
assert importance.steps == LEARN_STEPS and (importance.counts > 0).sum() > 100
for r in runs.values():
    assert r["last"] < r["first"]  # both runs learn
assert runs["dropping"]["hook"].importance.steps == steps
assert same and os.path.getsize(png) > 2000
