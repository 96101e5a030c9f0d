# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 · The distillation losses, by hand
#
# MobileBERT is not trained on its own: it learns from a teacher, IB-BERT, that has the same
# width between blocks (512) and the same number of heads (4). That is what lets every student
# layer imitate a teacher layer directly. The paper (Sun et al., ACL 2020) trains with:
#
# > **Feature Map Transfer (FMT)** `L_FMT^l = 1/(T N) sum_t sum_n (H^tr_{t,l,n} - H^st_{t,l,n})^2`:
# > the mean squared error between the teacher's and the student's feature maps (hidden states).
# >
# > **Attention Transfer (AT)** `L_AT^l = 1/(T A) sum_t sum_a D_KL(a^tr_{t,l,a} || a^st_{t,l,a})`:
# > the KL divergence between the teacher's and the student's attention distributions, per head.
# >
# > **Pre-training Distillation (PD)** `L_PD = alpha L_MLM + (1 - alpha) L_KD + L_NSP`.
#
# The released code adds two details the formulas leave out: FMT compares *layer-normalised*
# hidden states (a LayerNorm with no parameters), and AT is a cross-entropy computed from the
# attention *scores* (before the softmax). We write both losses in NumPy, derive their backward
# passes (the LayerNorm's, and the softmax's), check them by finite differences, compare them
# with `tinymobilebert.distill`, and finally send the gradients into a real student.
#
# Dimensions: B batch, T tokens, H inter-block width, A heads.

# %%
import numpy as np

from tinymobilebert import MobileBertModel, distill
from tinymobilebert.config import ib_bert_tiny, tiny
from tinymobilebert.gradcheck import perturb_parameters

rng = np.random.default_rng(0)


def cmp(name, ours, ref):
    close = np.allclose(ours, ref, rtol=1e-10, atol=1e-13)
    print(f"{name:22s} close: {str(close):5s} maxdiff: {np.abs(np.asarray(ours) - ref).max():.2e}")
    return close


def finite_differences(f, x, grad, entries=6, h=1e-5):
    """Worst relative error between ``grad`` and central differences of f() at a few entries of x,
    drawn where the analytic gradient is not zero (a zero entry, e.g. a padded key, would agree
    with any code)."""
    nonzero = np.flatnonzero(grad)
    assert nonzero.size, "the analytic gradient is all zero: nothing to check"
    worst = 0.0
    for flat in rng.choice(nonzero, size=min(entries, nonzero.size), replace=False):
        i = np.unravel_index(flat, x.shape)
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        numeric = (up - down) / (2 * h)
        worst = max(worst, abs(numeric - grad[i]) / max(abs(numeric), abs(grad[i]), 1e-8))
    return worst


# %% [markdown]
# ## A student, a teacher and a padded batch
#
# A test-sized MobileBERT (`tiny`: 32 between blocks, 16 inside, 4 heads) and a test-sized IB-BERT
# (`ib_bert_tiny`: 32 between blocks, 48 inside, 4 heads). `distillation_plan` checks that they
# can be paired for FMT and AT and says which layers meet: with equal depths, layer l learns
# from layer l. The second sequence ends in two padding tokens.

# %%
student = MobileBertModel(tiny(), seed=0, dtype=np.float64).eval()
teacher = MobileBertModel(ib_bert_tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), seed=1,
                          dtype=np.float64).eval()
for model, seed in ((student, 2), (teacher, 3)):
    perturb_parameters(model, np.random.default_rng(seed))  # trained-looking, non-uniform attention
plan = distill.distillation_plan(student.config, teacher.config, losses=("fmt", "at"))
print("hidden states compared:", plan.hidden_pairs, " attention scores compared:", plan.attention_pairs)

ids = rng.integers(1, 99, (2, 6))
mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
kw = dict(attention_mask=mask, output_hidden_states=True, output_attention_scores=True)
out_t = teacher.forward(ids, keep_cache=False, **kw)  # the teacher is a constant: no cache, no gradient
out_s = student.forward(ids, **kw)
h_s, h_t = out_s.hidden_states[2].copy(), out_t.hidden_states[2]   # layer 1's outputs   (B, T, H)
s_s, s_t = out_s.attention_scores[1].copy(), out_t.attention_scores[1]  # layer 1's scores (B, A, T, T)

# %% [markdown]
# ## Feature-map transfer, forward
#
# `LN(h) = (h - mean(h)) / sqrt(var(h) + 1e-12)` over the H features of each token, with no gamma
# and no beta, on both sides; then the mean squared difference over B*T*H entries, padding
# included (that is what `tf.losses.mean_squared_error` does in the original code).

# %%
eps = 1e-12
B, T, H = h_s.shape


def fmt_loss():
    mu_s = h_s.mean(-1, keepdims=True)
    xs = (h_s - mu_s) / np.sqrt(((h_s - mu_s) ** 2).mean(-1, keepdims=True) + eps)
    mu_t = h_t.mean(-1, keepdims=True)
    xt = (h_t - mu_t) / np.sqrt(((h_t - mu_t) ** 2).mean(-1, keepdims=True) + eps)
    return np.mean((xs - xt) ** 2)


mu = h_s.mean(-1, keepdims=True)                       # (B, T, 1)
var = ((h_s - mu) ** 2).mean(-1, keepdims=True)        # (B, T, 1)  population variance
rstd = 1.0 / np.sqrt(var + eps)
xs = (h_s - mu) * rstd                                 # (B, T, H)  the student's normalised state
xt = distill.parameter_free_layer_norm(h_t)            # (B, T, H)  the teacher's (a constant)
fmt = np.mean((xs - xt) ** 2)
lib_fmt, c_fmt = distill.feature_map_transfer_forward(h_s, h_t)
print(f"FMT by hand {fmt:.6f}, library {lib_fmt:.6f}")

# %% [markdown]
# ## Feature-map transfer, backward: through the parameter-free LayerNorm
#
# The MSE gives `dxs = 2 (xs - xt) / (B T H)`. The LayerNorm is the interesting part: every output
# of a row depends on every input of that row through the mean and the variance. With
# `x = (h - mu) r`, `r = (var + eps)^(-1/2)`:
#
#     dmu/dh_c = 1/H          dvar/dh_c = 2 (h_c - mu) / H          dr/dvar = -r^3 / 2
#
# and collecting the three paths (direct, through mu, through r) for each input:
#
#     dh = r (dxs - mean_H(dxs) - xs * mean_H(dxs * xs))
#
# the LayerNorm backward with gamma = 1. The two means remove what a shift of the row (mean) and
# a rescaling of the row (variance) would do: LN(h) does not change under either, so neither can
# the loss, and the gradient is orthogonal to both directions.

# %%
dxs = 2.0 * (xs - xt) / xs.size                        # loss = mean((xs - xt)^2)
dh_s = rstd * (dxs - dxs.mean(-1, keepdims=True) - xs * (dxs * xs).mean(-1, keepdims=True))
print("row sums of dh (shift):", np.abs(dh_s.sum(-1)).max(), " <dh, xs> per row (scale):",
      np.abs((dh_s * xs).sum(-1)).max())
fd_fmt = finite_differences(fmt_loss, h_s, dh_s)
print(f"FMT finite differences: worst relative error {fd_fmt:.1e}")
ok = [cmp("FMT loss", lib_fmt, fmt), cmp("FMT d h_s", distill.feature_map_transfer_backward(1.0, c_fmt), dh_s)]

# %% [markdown]
# ## Attention transfer, forward
#
# The models return the scores `s = QK^T / sqrt(d)` with padded keys masked (transformers adds
# the most negative float, so their probability is exactly 0). Per head and query row, the
# teacher's softmax is the target and the loss is the cross-entropy of the student's
# log-softmax; the mean runs over B * A * T rows, padded query rows included:
#
#     AT = mean_rows  -sum_j p_j log q_j,      p = softmax(s_t),  q = softmax(s_s)
#
# The paper writes a KL divergence; the two differ by the teacher's entropy `-sum p log p`, a
# constant for the student: the same gradient, another value. Terms with `p_j = 0` (the masked
# keys) are 0: `0 log 0 := 0`, which a direct `p * log(q)` would turn into `0 * -inf = nan`.

# %%
def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(s):
    m = s.max(-1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(-1, keepdims=True))


def at_terms(s_student):
    p, log_q = softmax(s_t), log_softmax(s_student)
    return np.where(p > 0, -p * log_q, 0.0)                 # (B, A, T, T)  0 log 0 := 0


def at_loss():
    return at_terms(s_s).sum(-1).mean()


p, q = softmax(s_t), softmax(s_s)
at = at_loss()
entropy = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1).mean()
lib_at, c_at = distill.attention_transfer_forward(s_s, s_t)
lib_kl, _ = distill.attention_transfer_forward(s_s, s_t, form="kl")
print(f"AT by hand {at:.6f}, library {lib_at:.6f};  KL = AT - teacher entropy = {at - entropy:.6f}, "
      f"library {lib_kl:.6f}")
print("probability on padded keys:", p[1, :, :, 4:].max(), q[1, :, :, 4:].max())

# %% [markdown]
# ## Attention transfer, backward: through the student's softmax
#
# For one row, `log q_j = s_j - log sum_k exp(s_k)`, so `d log q_j / d s_i = 1[i = j] - q_i`, and
#
#     d/ds_i ( -sum_j p_j log q_j ) = -p_i + q_i sum_j p_j = q_i - p_i        (sum_j p_j = 1)
#
# The gradient of the cross-entropy is the difference of the two distributions, divided by the
# number of rows for the mean. It is 0 at the masked keys (both probabilities are 0), which is
# why the masking constant never leaks into the gradient.

# %%
ds_s = (q - p) / (q.size // q.shape[-1])               # (B, A, T, T)
fd_at = finite_differences(at_loss, s_s, ds_s)
print(f"AT finite differences: worst relative error {fd_at:.1e}")
ok += [cmp("AT loss", lib_at, at), cmp("KL loss", lib_kl, at - entropy),
       cmp("AT d s_s", distill.attention_transfer_backward(1.0, c_at), ds_s)]

# %% [markdown]
# ## Padding: the original form and the padding-aware form
#
# The original code averages over every query row, the padded ones too. Passing the
# `attention_mask` gives the padding-aware form instead: padded keys are left out of both
# softmaxes and padded query rows out of the mean. With transformers' masking the keys already
# weigh 0, so here only the query rows differ; with the original TensorFlow masking
# (`masked_attention_score=-6`) padded keys keep a little weight and the two forms differ more.

# %%
real_rows = np.repeat(mask, 4, axis=0).reshape(2, 4, 6).astype(bool)   # (B, A, T) real query rows
aware, c_aware = distill.attention_transfer_forward(s_s, s_t, attention_mask=mask)
ok.append(cmp("padding-aware AT", aware, at_terms(s_s).sum(-1)[real_rows].mean()))
print("gradient on padded query rows:", np.abs(distill.attention_transfer_backward(1.0, c_aware)[1, :, 4:]).max())

# %% [markdown]
# ## The other terms, in one line each
#
# * Mean and variance transfer (in the code, not the paper): `mean_{B,T} (mu_t - mu_s)^2` and
#   `mean_{B,T} |var_t - var_s|` of each token's statistics; the released code compares with the
#   statistics of *all* the teacher's layers at once (`teacher_layers="all"` reproduces it).
# * PD's MLM term: the cross-entropy against `alpha onehot + (1 - alpha) softmax(teacher)`, summed
#   over the masked positions and divided by their count + 1e-5 (`mlm_distillation_forward`).

# %%
(beta, gamma), _ = distill.mean_variance_transfer_forward(h_s, h_t)
mu_t, var_t = h_t.mean(-1), h_t.var(-1)
ok += [cmp("mean transfer", beta, np.mean((mu_t - h_s.mean(-1)) ** 2)),
       cmp("variance transfer", gamma, np.mean(np.abs(var_t - h_s.var(-1))))]

# %% [markdown]
# ## Into the student
#
# The losses read the model's outputs, so their gradients are gradients *on outputs*:
# `backward(grad_outputs=...)` takes one entry per hidden state and per layer's scores (None
# where no loss reads it) and carries them to every parameter. One finite-difference check on a
# weight of the student's first layer, through both losses at once:

# %%
student.zero_grad()
grads = student.backward({"hidden_states": [None, None, dh_s], "attention_scores": [None, ds_s]})
name = "encoder.layer.0.attention.self.query.weight"
W = student.params[name]


def total_loss():
    o = student.forward(ids, keep_cache=False, **kw)
    return (distill.feature_map_transfer_forward(o.hidden_states[2], h_t)[0]
            + distill.attention_transfer_forward(o.attention_scores[1], s_t)[0])


fd_model = finite_differences(total_loss, W, grads[name], entries=4)
print(f"d (FMT + AT) / d {name}: worst relative error {fd_model:.1e}")

# %%
assert all(ok), "the library disagrees with the hand-written losses"
assert max(fd_fmt, fd_at, fd_model) < 1e-6, (fd_fmt, fd_at, fd_model)
assert p[1, :, :, 4:].max() == 0 and np.isfinite(at)  # masked keys weigh 0, and 0 log 0 gave no nan
assert abs(lib_at - lib_kl - entropy) < 1e-12 and aware != lib_at
print("tutorial 06: all checks passed")
