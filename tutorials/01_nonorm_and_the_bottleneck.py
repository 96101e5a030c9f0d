# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 · NoNorm and the bottleneck, by hand
#
# MobileBERT (Sun et al., ACL 2020) keeps BERT-large's depth but squeezes every block through a
# *bottleneck*: the 512-wide hidden state between blocks is projected down to 128 inside the
# block and back up at its end. Inside, it replaces LayerNorm by **NoNorm**, an elementwise
# affine map with no statistics, which the paper's Table 7 shows is much faster on a phone
# (LayerNorm & ReLU: 167 ms, NoNorm & ReLU: 62 ms).
#
# In this tutorial we write the bottleneck's input side ourselves, in plain NumPy, one small
# step at a time; derive its backward pass line by line; check it against finite differences;
# and finally check that tinymobilebert's block computes exactly the same thing.
#
# Dimensions: N tokens (rows), H = inter-block width, I = intra-block width.

# %%
import numpy as np

from tinymobilebert.blocks.sublayers import dense_norm_backward, dense_norm_forward

rng = np.random.default_rng(0)
N, H, I = 6, 12, 4


def cmp(name, ours, ref):
    """One line per tensor: exact / close / max difference."""
    exact = np.array_equal(ours, ref)
    close = np.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    print(f"{name:10s} exact: {str(exact):5s} close: {str(close):5s} maxdiff: {np.abs(ours - ref).max():.2e}")
    return close


# %% [markdown]
# ## The forward pass, split into steps small enough to differentiate
#
# The bottleneck input is `L = NoNorm(X W^T + b)`, and NoNorm is `y = z * gamma + beta`. We use
# non-trivial parameters: with gamma = 1 and beta = 0 (the initial values) a backward pass that
# forgot them would still look right.

# %%
X = rng.standard_normal((N, H))                # block input                       (N, H)
W = rng.standard_normal((I, H)) / np.sqrt(H)   # bottleneck.input.dense.weight     (I, H)  [out, in]
b = rng.standard_normal(I) * 0.1               # bottleneck.input.dense.bias       (I,)
gamma = 1 + rng.standard_normal(I) * 0.1       # bottleneck.input.LayerNorm.weight (I,)  (NoNorm's scale)
beta = rng.standard_normal(I) * 0.1            # bottleneck.input.LayerNorm.bias   (I,)

h = X @ W.T          # (N, I)  the product
z = h + b            # (N, I)  plus bias
L = z * gamma + beta  # (N, I)  NoNorm: no mean, no variance, no epsilon

# %% [markdown]
# The loss: any scalar function of L will do to test a backward pass. We take a random
# projection `loss = sum(R * L)`, so that `dloss/dL = R` exactly.

# %%
R = rng.standard_normal((N, I))
loss = np.sum(R * L)

# %% [markdown]
# ## The backward pass, one line per forward line, in reverse
#
# Every intermediate `x` gets a twin `dx = dloss/dx`, the same shape as `x`.

# %%
dL = R                              # loss = sum(R * L)
dgamma = (dL * z).sum(axis=0)       # L = z * gamma + beta   -> sum over the rows gamma was broadcast to
dbeta = dL.sum(axis=0)
dz = dL * gamma
db = dz.sum(axis=0)                 # z = h + b
dh = dz
dW = dh.T @ X                       # h = X @ W.T            -> (I, N) @ (N, H) = (I, H)
dX = dh @ W                         #                        -> (N, I) @ (I, H) = (N, H)

# %% [markdown]
# ## A gradient check by hand
#
# Nudge one entry up and down by a small h and look at the loss: the central difference
# `(f(x+h) - f(x-h)) / 2h` should match our formula to many digits (we work in float64).


# %%
def loss_of(X, W, b, gamma, beta):
    return np.sum(R * ((X @ W.T + b) * gamma + beta))


step = 1e-6
checks = {}
for name, arr, grad in [("X", X, dX), ("W", W, dW), ("b", b, db), ("gamma", gamma, dgamma), ("beta", beta, dbeta)]:
    idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
    old = arr[idx]
    arr[idx] = old + step
    up = loss_of(X, W, b, gamma, beta)
    arr[idx] = old - step
    down = loss_of(X, W, b, gamma, beta)
    arr[idx] = old
    numeric = (up - down) / (2 * step)
    checks[name] = abs(numeric - grad[idx]) / max(abs(numeric), abs(grad[idx]))
    print(f"d{name}{list(idx)}: analytic {grad[idx]: .10f}  numeric {numeric: .10f}  rel err {checks[name]:.1e}")

# %% [markdown]
# ## The same thing in tinymobilebert
#
# `dense_norm_forward` is the library's version of this sublayer: a dense layer, an optional
# residual, and a norm, fused into one Numba kernel (see `tinymobilebert/kernels/norms.py` and
# its NumPy twin). Parameters live in a dict keyed by transformers' names.

# %%
params = {"bottleneck.input.dense.weight": W, "bottleneck.input.dense.bias": b,
          "bottleneck.input.LayerNorm.weight": gamma, "bottleneck.input.LayerNorm.bias": beta}
grads = {k: np.zeros_like(v) for k, v in params.items()}
L_lib, cache = dense_norm_forward(X, None, params, "bottleneck.input", layer_norm=False, eps=1e-12)
dX_lib, _ = dense_norm_backward(R, cache, params, grads)

ok = [cmp("L", L_lib, L), cmp("dX", dX_lib, dX), cmp("dW", grads["bottleneck.input.dense.weight"], dW),
      cmp("db", grads["bottleneck.input.dense.bias"], db),
      cmp("dgamma", grads["bottleneck.input.LayerNorm.weight"], dgamma),
      cmp("dbeta", grads["bottleneck.input.LayerNorm.bias"], dbeta)]

# %% [markdown]
# ## Why NoNorm is cheap, and what it gives up
#
# LayerNorm needs two reductions per row (mean, variance) before it can write anything, and its
# backward pass needs two more. NoNorm touches each element once. The price: nothing keeps the
# activations' scale in check, which is one reason MobileBERT is trained by distillation from a
# teacher rather than from scratch. With the same inputs, LayerNorm's rows have mean 0 and
# variance 1 (before gamma and beta); NoNorm's rows keep whatever scale the product gave them.

# %%
L_ln, _ = dense_norm_forward(X * 100, None, params, "bottleneck.input", layer_norm=True, eps=1e-12)
L_nn, _ = dense_norm_forward(X * 100, None, params, "bottleneck.input", layer_norm=False, eps=1e-12)
print("row std with LayerNorm:", np.round(((L_ln - beta) / gamma).std(axis=1), 3))
print("row std with NoNorm:   ", np.round(((L_nn - beta) / gamma).std(axis=1), 1))

# %% [markdown]
# ## The bottleneck in the model
#
# In a MobileBERT block, this sublayer is `bottleneck.input`; the released student also has a
# second one, `bottleneck.attention`, that feeds the shared query/key input, while the value
# reads the raw 512-wide X. The teacher IB-BERT turns the bottleneck inside out: its
# `bottleneck.input` *expands* 512 -> 1024. Tutorial 03 puts the whole block together.

# %%
assert all(ok), "the library disagrees with the hand-written version"
assert max(checks.values()) < 1e-7, checks
assert np.allclose(((L_ln - beta) / gamma).std(axis=1), 1.0, atol=1e-6)
print("tutorial 01: all checks passed")
