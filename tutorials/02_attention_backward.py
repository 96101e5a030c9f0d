# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 · Attention's backward pass, step by step
#
# Masked multi-head self-attention is the one block of a transformer whose backward pass is
# not a chain of matrix products and elementwise maps: softmax couples every score in a row.
# We write it forward in steps, give every intermediate a gradient twin, derive each backward
# line from the forward line it inverts, and check the result three ways: against finite
# differences, against tinymobilebert's `attention_forward`/`attention_backward`, and between
# its Numba softmax kernel and that kernel's NumPy twin.
#
# Dimensions: B batch, T tokens, A heads, d head width, I = A*d, C input width.

# %%
import numpy as np

from tinymobilebert.blocks.attention import attention_backward, attention_forward
from tinymobilebert.kernels.softmax import attention_softmax

rng = np.random.default_rng(0)
B, T, A, d, C = 2, 5, 2, 3, 8
I = A * d


def cmp(name, ours, ref):
    close = np.allclose(ours, ref, rtol=1e-9, atol=1e-12)
    print(f"{name:8s} close: {str(close):5s} maxdiff: {np.abs(ours - ref).max():.2e}")
    return close


# %% [markdown]
# ## Inputs, parameters and a padding mask
#
# The second sequence has two padding tokens at the end: its key mask is 0 there. Padding is a
# property of *keys*: no query may attend to a padded key. transformers implements this by
# adding the most negative float to the masked scores before the softmax, so their weight is
# exactly 0.

# %%
x = rng.standard_normal((B * T, C))  # the rows the attention reads      (N, C)
Wq, Wk, Wv = (rng.standard_normal((I, C)) / np.sqrt(C) for _ in range(3))  # [out, in]
bq, bk, bv = (rng.standard_normal(I) * 0.1 for _ in range(3))
key_mask = np.ones((B, T))
key_mask[1, 3:] = 0

# %% [markdown]
# ## Forward

# %%
q = x @ Wq.T + bq                                 # (N, I)
k = x @ Wk.T + bk
v = x @ Wv.T + bv
qh = q.reshape(B, T, A, d).transpose(0, 2, 1, 3)  # (B, A, T, d)  split heads
kh = k.reshape(B, T, A, d).transpose(0, 2, 1, 3)
vh = v.reshape(B, T, A, d).transpose(0, 2, 1, 3)
r = qh @ kh.transpose(0, 1, 3, 2)                 # (B, A, T, T)  raw scores
s = r / np.sqrt(d) + (1 - key_mask[:, None, None, :]) * np.finfo(np.float64).min  # scaled, masked
e = np.exp(s - s.max(axis=-1, keepdims=True))
P = e / e.sum(axis=-1, keepdims=True)             # (B, A, T, T)  softmax over keys
ch = P @ vh                                       # (B, A, T, d)
context = ch.transpose(0, 2, 1, 3).reshape(B * T, I)  # (N, I)    heads concatenated

print("weight on padded keys:", P[1, :, :, 3:].max())

# %% [markdown]
# ## Backward
#
# The loss is a random projection of the output, so `dcontext = R`.
#
# The only non-obvious line is the softmax. For one row, `P_j = exp(s_j) / sum_k exp(s_k)`, and
# `dP_i/ds_j = P_i (1[i=j] - P_j)`. Contracting with the upstream `dP` gives
#
#     ds_j = sum_i dP_i P_i (1[i=j] - P_j) = P_j (dP_j - sum_i dP_i P_i)
#
# one dot product per row, then an elementwise map. The mask adds a constant, so it passes the
# gradient straight through (and masked P are 0, so their ds is 0 anyway).

# %%
R = rng.standard_normal(context.shape)
loss = np.sum(R * context)

dcontext = R                                                      # loss = sum(R * context)
dch = dcontext.reshape(B, T, A, d).transpose(0, 2, 1, 3)          # undo the head merge
dP = dch @ vh.transpose(0, 1, 3, 2)                               # ch = P @ vh
dvh = P.transpose(0, 1, 3, 2) @ dch
ds = P * (dP - (dP * P).sum(axis=-1, keepdims=True))              # softmax
dr = ds / np.sqrt(d)                                              # s = r / sqrt(d) + mask
dqh = dr @ kh                                                     # r = qh @ kh^T
dkh = dr.transpose(0, 1, 3, 2) @ qh
dq = dqh.transpose(0, 2, 1, 3).reshape(B * T, I)                  # undo the head splits
dk = dkh.transpose(0, 2, 1, 3).reshape(B * T, I)
dv = dvh.transpose(0, 2, 1, 3).reshape(B * T, I)
dWq, dWk, dWv = dq.T @ x, dk.T @ x, dv.T @ x                      # q = x @ Wq^T + bq, ...
dbq, dbk, dbv = dq.sum(0), dk.sum(0), dv.sum(0)
dx = dq @ Wq + dk @ Wk + dv @ Wv                                  # x feeds three products: add

# %% [markdown]
# Notice `dbk`: adding the same vector to every key adds `q . bk` to every score of a row,
# and softmax does not care about a constant per row. So the key bias gets no gradient at all.

# %%
print("max |d key bias|:", np.abs(dbk).max())

# %% [markdown]
# ## Finite differences


# %%
def loss_of():
    q_ = (x @ Wq.T + bq).reshape(B, T, A, d).transpose(0, 2, 1, 3)
    k_ = (x @ Wk.T + bk).reshape(B, T, A, d).transpose(0, 2, 1, 3)
    v_ = (x @ Wv.T + bv).reshape(B, T, A, d).transpose(0, 2, 1, 3)
    s_ = q_ @ k_.transpose(0, 1, 3, 2) / np.sqrt(d) + (1 - key_mask[:, None, None, :]) * np.finfo(np.float64).min
    e_ = np.exp(s_ - s_.max(-1, keepdims=True))
    c_ = (e_ / e_.sum(-1, keepdims=True)) @ v_
    return np.sum(R * c_.transpose(0, 2, 1, 3).reshape(B * T, I))


worst = 0.0
for name, arr, grad in [("x", x, dx), ("Wq", Wq, dWq), ("Wk", Wk, dWk), ("Wv", Wv, dWv), ("bq", bq, dbq)]:
    for _ in range(3):
        idx = tuple(int(rng.integers(0, n)) for n in arr.shape)
        old = arr[idx]
        arr[idx] = old + 1e-6
        up = loss_of()
        arr[idx] = old - 1e-6
        down = loss_of()
        arr[idx] = old
        numeric = (up - down) / 2e-6
        err = abs(numeric - grad[idx]) / max(abs(numeric), abs(grad[idx]), 1e-8)
        worst = max(worst, err)
print(f"worst relative error over 15 entries: {worst:.1e}")

# %% [markdown]
# ## The library's attention block
#
# tinymobilebert's block does the same with the parameters in a dict keyed by transformers'
# names. Here Q, K and V read the same tensor x, the teacher's layout; in the MobileBERT student
# Q and K read one bottleneck and V reads the raw block input.

# %%
p = "attention.self"
params = {f"{p}.query.weight": Wq, f"{p}.query.bias": bq, f"{p}.key.weight": Wk, f"{p}.key.bias": bk,
          f"{p}.value.weight": Wv, f"{p}.value.bias": bv}
grads = {n: np.zeros_like(a) for n, a in params.items()}
ctx_lib, probs_lib, _, cache = attention_forward(x, x, x, key_mask, params, p, B, T, A)
dq_in, dk_in, dv_in = attention_backward(R, cache, params, grads)
ok = [cmp("context", ctx_lib, context), cmp("probs", probs_lib, P), cmp("dx", dq_in + dk_in + dv_in, dx),
      cmp("dWq", grads[f"{p}.query.weight"], dWq), cmp("dWk", grads[f"{p}.key.weight"], dWk),
      cmp("dWv", grads[f"{p}.value.weight"], dWv), cmp("dbv", grads[f"{p}.value.bias"], dbv)]

# %% [markdown]
# ## The kernel and its twin
#
# The scale, mask, softmax (and its backward) run as one Numba kernel; every kernel in
# tinymobilebert has a plain-NumPy twin that documents what it computes, and the tests compare
# them on random shapes. Here is the comparison once, in float32.

# %%
r32 = r.astype(np.float32)
m32 = key_mask.astype(np.float32)
p_numba, _ = attention_softmax.numba(r32, m32, 1 / np.sqrt(d), False, 0.0, False)
p_numpy, _ = attention_softmax.numpy(r32, m32, 1 / np.sqrt(d), False, 0.0, False)
print(f"numba vs numpy twin, float32: maxdiff {np.abs(p_numba - p_numpy).max():.1e}")

# %%
assert all(ok)
assert worst < 1e-6
assert np.abs(dbk).max() < 1e-12
assert P[1, :, :, 3:].max() == 0.0
assert np.abs(p_numba - p_numpy).max() < 1e-6
print("tutorial 02: all checks passed")
