# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 · Masking, one optimizer step by hand, and a short training run
#
# Pretraining BERT-style models needs three things beyond the model: data with some tokens
# hidden (masked-LM) and sentence pairs (next-sentence prediction), an optimizer, and a loop.
# We look at each on the built-in corpus, the Python standard library's docstrings, which is
# on every machine with Python.

# %%
import os
import tempfile

import numpy as np

from tinymobilebert import BertTokenizer, MobileBertForPreTraining
from tinymobilebert.data import PretrainingData, builtin_corpus, train_dev_split
from tinymobilebert.optim import AdamW, LinearWarmupDecay
from tinymobilebert.train import Trainer, read_log
from tinymobilebert.workflows import small_mobilebert

QUICK = os.environ.get("TINYMOBILEBERT_TUTORIAL_TEST") == "1"  # the test suite runs a shorter loop

docs = builtin_corpus()[:120]  # a slice is plenty here
train_docs, dev_docs = train_dev_split(docs, dev_fraction=0.1, seed=0)
tok = BertTokenizer.train((s for d in train_docs for s in d.sentences), vocab_size=1500)
print(len(docs), "documents;", len(tok), "word pieces; e.g.", tok.tokenize(train_docs[0].sentences[0])[:12])

# %% [markdown]
# ## Masking
#
# BERT picks 15% of the real tokens of each row (never [CLS], [SEP] or padding). Of those, 80%
# become [MASK], 10% a random token, 10% stay as they are; the label is the original token there
# and -100 (ignored) everywhere else. The model cannot tell which unmasked tokens are targets, so
# it must keep a good representation of every token. A fresh mask is drawn every epoch.

# %%
data = PretrainingData(train_docs, tok, max_length=64, seed=0)
batch = next(data.batches(batch_size=16, epoch=0))
row = 0
shown = [(tok.convert_ids_to_tokens([int(i)])[0], tok.convert_ids_to_tokens([int(y)])[0] if y != -100 else "")
         for i, y in zip(batch["input_ids"][row], batch["labels"][row]) if i != tok.pad_token_id]
print(" ".join(f"[{t}->{g}]" if g else t for t, g in shown))

big = next(data.batches(batch_size=512, epoch=0))
target = big["labels"] != -100
real = (big["attention_mask"] == 1) & ~np.isin(big["input_ids"], [tok.cls_token_id, tok.sep_token_id])
as_mask = (big["input_ids"] == tok.mask_token_id)[target].mean()
unchanged = (big["input_ids"] == big["labels"])[target].mean()
print(f"targets: {target.sum() / real.sum():.1%} of real tokens; [MASK] {as_mask:.1%}, unchanged {unchanged:.1%}, "
      f"random {1 - as_mask - unchanged:.1%}")
print("next-sentence labels (0 = B follows A):", np.bincount(big["next_sentence_label"]))

# %% [markdown]
# ## One AdamW step by hand
#
# AdamW keeps two running averages per parameter, of the gradient (m) and of its square (v),
# corrects their bias toward zero at the start, and steps by `m_hat / (sqrt(v_hat) + eps)`; the
# weight decay is *decoupled*: `p -= lr * wd * p`, skipped for biases and norms. Here is the first
# step written out, then the library's optimizer (a Numba kernel over the flat parameter buffer).

# %%
cfg = small_mobilebert(len(tok), num_hidden_layers=2)
model = MobileBertForPreTraining(cfg, seed=0)
out = model.forward(**batch)
grads = {k: v.copy() for k, v in model.backward().items()}
before = {k: v.copy() for k, v in model.params.items()}

lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
by_hand = {}
for name, p in before.items():
    g = grads[name].astype(np.float64)
    m = (1 - b1) * g                       # m_1 = b1 * m_0 + (1 - b1) g, with m_0 = 0
    v = (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1), v / (1 - b2)  # bias correction at t = 1
    decay = 0.0 if ("LayerNorm" in name or name.endswith("bias")) else wd
    by_hand[name] = p * (1 - lr * decay) - lr * m_hat / (np.sqrt(v_hat) + eps)

opt = AdamW(model.store, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
opt.step()
worst = max(np.abs(model.params[k] - by_hand[k]).max() / (np.abs(by_hand[k]).max() + 1e-12) for k in by_hand)
print(f"first step: library vs by hand, worst relative difference {worst:.1e} (float32)")

# %% [markdown]
# ## A short training run
#
# `Trainer` runs `zero_grad -> forward -> backward -> step`, logs every step to `log.jsonl`,
# evaluates, and writes resumable checkpoints. The MLM head runs only at the labelled positions
# (`mlm_positions="labelled"`), as the original TensorFlow code does.

# %%
steps = 30 if QUICK else 150
run = tempfile.mkdtemp()
model = MobileBertForPreTraining(cfg, seed=0)
opt = AdamW(model.store, lr=2e-3, schedule=LinearWarmupDecay(warmup_steps=10, total_steps=steps), max_grad_norm=1.0)
trainer = Trainer(model, opt, lambda e, s: ({**b, "mlm_positions": "labelled"} for b in data.batches(16, e, s)),
                  run, max_steps=steps, save_every=steps, progress=False)
result = trainer.train()
losses = [r["mlm_loss"] for r in read_log(run) if r["split"] == "train"]
print(f"{steps} steps in {result['seconds']:.0f}s; MLM loss {np.mean(losses[:5]):.2f} -> {np.mean(losses[-5:]):.2f} "
      f"(uniform guessing: {np.log(len(tok)):.2f})")

# %%
try:
    from tinymobilebert.train.plot import plot_runs

    png = plot_runs([run], os.path.join(run, "curve.png"), smooth_window=5, title="tutorial 05")
    print("loss curve:", png)
except ImportError:
    print("(matplotlib is not installed: no plot)")

# %%
assert abs(target.sum() / real.sum() - 0.15) < 0.02
assert abs(as_mask - 0.8) < 0.05 and abs(unchanged - 0.1) < 0.04
assert worst < 1e-5
assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
print("tutorial 05: all checks passed")
