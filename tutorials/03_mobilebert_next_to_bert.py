# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 · The MobileBERT block and model, next to BERT
#
# MobileBERT is as deep as BERT-large (24 blocks) but every block is thin: 512 wide between
# blocks, 128 inside. To keep enough capacity per block it stacks four small FFNs instead of
# one big one, and to keep attention cheap its queries and keys read a shared 128-wide
# projection. Where do its parameters and FLOPs go, compared with BERT-base? We count them
# from the shapes, compare with the paper, then run one block through the library by hand and
# check it against the model.

# %%
import numpy as np

from tinymobilebert import MobileBertModel
from tinymobilebert.blocks.embeddings import embeddings_forward
from tinymobilebert.blocks.layer import layer_forward
from tinymobilebert.config import bert_base, ib_bert_large, mobilebert, mobilebert_tiny, tiny
from tinymobilebert.costs import forward_flops, layer_macs_per_token, parameter_count
from tinymobilebert.model.shapes import encoder_shapes

MODELS = {"BERT-base": bert_base(), "IB-BERT (teacher)": ib_bert_large(), "MobileBERT": mobilebert(),
          "MobileBERT-TINY": mobilebert_tiny()}

# %% [markdown]
# ## One block's parameters
#
# transformers' names, so you can hold this next to `modeling_mobilebert.py`. Linear weights
# are `[out, in]`.

# %%
cfg = mobilebert()
layer = {k.split("layer.0.")[1]: v for k, v in encoder_shapes(cfg).items() if ".layer.0." in k}
for name, shape in layer.items():
    print(f"{name:48s} {str(shape):>12s}")
per_layer = sum(int(np.prod(s)) for s in layer.values())
print("parameters per MobileBERT block:", per_layer)

# %% [markdown]
# ## Whole models
#
# The paper's Table 1 reports 109M (BERT-base), 293M (IB-BERT), 25.3M (MobileBERT) and 15.1M
# (TINY). Counting transformers' tensors gives the numbers below (encoder and embeddings, no
# pooler or heads); the paper's counting convention is not stated, so small differences remain.

# %%
paper_params = {"BERT-base": 109e6, "IB-BERT (teacher)": 293e6, "MobileBERT": 25.3e6, "MobileBERT-TINY": 15.1e6}
counts = {}
for name, c in MODELS.items():
    counts[name] = parameter_count(c, pooler=False)
    print(f"{name:18s} {counts[name] / 1e6:7.1f}M   paper {paper_params[name] / 1e6:6.1f}M")

# %% [markdown]
# ## FLOPs per token, by part of a block
#
# Counting 2 FLOPs per multiply-accumulate of each matrix product, at 128 tokens. MobileBERT's
# four FFNs (128 -> 512 -> 128) cost about what one of BERT-base's attention projections does.

# %%
for name in ("BERT-base", "MobileBERT"):
    parts = layer_macs_per_token(MODELS[name], 128)
    print(name)
    for part, macs in parts.items():
        print(f"   {part:22s} {2 * macs / 1e6:7.3f} MFLOPs/token")

# %% [markdown]
# Whole forward passes over one 128-token sequence, against the paper's Table 4 (22.5B, 5.7B,
# 3.1B FLOPs). The counts here leave out norms, activations and softmax.

# %%
paper_flops = {"BERT-base": 22.5e9, "MobileBERT": 5.7e9, "MobileBERT-TINY": 3.1e9}
flops = {}
for name, c in MODELS.items():
    flops[name] = forward_flops(c, batch=1, seq_len=128)
    ref = f"   paper {paper_flops[name] / 1e9:.1f}B" if name in paper_flops else ""
    print(f"{name:18s} {flops[name] / 1e9:6.2f} GFLOPs{ref}")
print(f"MobileBERT / BERT-base: {counts['MobileBERT'] / counts['BERT-base']:.2f}x the parameters, "
      f"{flops['MobileBERT'] / flops['BERT-base']:.2f}x the FLOPs")

# %% [markdown]
# ## One block by hand, checked against the model
#
# A test-sized student (`tiny()`: 32 wide between blocks, 16 inside, 2 FFNs). We run the
# embeddings and the first block with the building blocks themselves, then ask the model for
# its hidden states: they must agree exactly.

# %%
small = tiny()
model = MobileBertModel(small, seed=0, dtype=np.float64).eval()
ids = np.array([[2, 17, 33, 5, 3, 0, 0]])
mask = np.array([[1, 1, 1, 1, 1, 0, 0]])
x, _ = embeddings_forward(ids, np.zeros_like(ids), mask, model.params, "", small)  # (N, H)
key_mask = mask.astype(np.float64)
y, probs, _, _ = layer_forward(x, key_mask, model.params, "encoder.layer.0", small, B=1, T=7)
out = model.forward(ids, attention_mask=mask, output_hidden_states=True)
print("embedding output", x.shape, " block output", y.shape, " attention", probs.shape)
print("max |by hand - model|:", np.abs(y.reshape(1, 7, -1) - out.hidden_states[1]).max())

# %% [markdown]
# Plain BERT is the same code with `use_bottleneck=False`, `trigram_input=False` and
# `embedding_size = hidden_size`: no bottleneck, Q, K, V read the block input, one FFN,
# LayerNorm and GELU; `bert_base()` is that layout at BERT-base size.

# %%
assert counts["MobileBERT"] == 24_581_888 and counts["BERT-base"] == 108_891_648
for name, ref in paper_flops.items():
    assert abs(flops[name] / ref - 1) < 0.06, (name, flops[name], ref)
assert np.array_equal(y.reshape(1, 7, -1), out.hidden_states[1])
print("tutorial 03: all checks passed")
