"""Every kernel propagates NaN and infinities exactly as its NumPy twin does.

Hypothesis draws shapes, values and, for every floating-point array a kernel reads, where to
put non-finite values: none, one element, ~10% of the elements, a whole row, or all of them;
each NaN, +inf, -inf or a mix. The Numba kernel and its twin then run on copies of the same
inputs and the test compares, for every output (returned or written in place), where each
gives NaN, +inf and -inf: the three patterns must be identical. Finite outputs are compared
too, loosely (1e-3 of the largest finite twin value, or of 1): a kernel that turned a would-be NaN into
some other finite number still fails the pattern check, and this catches one that returned the
wrong finite number next to a non-finite one.

Integer and boolean inputs (token ids, labels, 0/1 masks, dropout's keep bytes and its
uniforms, the optimizers' segment tables) stay valid: they are indices and flags, not values
that a NaN can reach. Scalar hyper-parameters stay finite, except the optimizers'
``grad_scale``, which is the clipping factor and is NaN or 0 when the gradient norm is NaN or
inf (``optim.clip``).

A few twins had to say what they mean (the kernels already did): the padding-aware trigram
window and its backward pass zero a neighbour with ``np.where``, not by multiplying by a 0/1
mask, which would turn an inf or NaN [PAD] embedding into NaN at a real token.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.kernels import (REGISTRY, _jit, activations, blas, dropout, embedding, hidden_stats, losses, norms,
                                    soft_targets, softmax)
from tinymobilebert.kernels import optim as K
from tinymobilebert.optim.clip import clip_grad_norm

# NumPy warns on every inf - inf and 0 * inf: here they are the point
pytestmark = pytest.mark.filterwarnings("ignore:(invalid value|overflow|divide by zero) encountered:RuntimeWarning")
DTYPES = [np.float32, np.float64]
SPOTS = ("none", "one", "some", "row", "all")
KINDS = ("nan", "inf", "-inf", "mixed")

# kernel name -> the test below that feeds it non-finite inputs (checked against the registry)
COVERED = {
    "norm_forward": "test_norms", "norm_backward": "test_norms",
    "bias_act_forward": "test_activations", "act_backward": "test_activations",
    "attention_softmax": "test_attention_softmax", "attention_softmax_backward": "test_attention_softmax",
    "cross_entropy_forward": "test_cross_entropy", "cross_entropy_backward": "test_cross_entropy",
    "trigram_embed": "test_trigram_embed", "trigram_embed_backward": "test_trigram_embed",
    "embed": "test_embed", "embed_backward": "test_embed",
    "add_position_type": "test_position_type", "add_position_type_backward": "test_position_type",
    "dropout_apply": "test_dropout", "dropout_grad": "test_dropout",
    "gemm_accumulate": "test_gemm_accumulate",
    "sgd_update": "test_sgd", "adamw_update": "test_adamw", "lamb_moments": "test_lamb",
    "lamb_apply": "test_lamb", "squared_norm": "test_squared_norm_and_clipping",
    "soft_target_ce_forward": "test_soft_target_ce", "soft_target_ce_backward": "test_soft_target_ce",
    "feature_map_loss_forward": "test_feature_map_loss", "feature_map_loss_backward": "test_feature_map_loss",
    "row_moments": "test_row_moments", "row_moments_backward": "test_row_moments",
}

seeds = st.integers(0, 2**31 - 1)
plans = st.tuples(st.sampled_from(SPOTS), st.sampled_from(KINDS))


def poisons(n):
    """n independent (where, what) plans, one per floating-point input."""
    return st.lists(plans, min_size=n, max_size=n)


def poison(x, plan, rng):
    """A copy of ``x`` with non-finite values where ``plan`` = (where, what) says."""
    where, what = plan
    x = np.array(x, copy=True)
    if where == "none" or x.size == 0:
        return x
    flat = x.reshape(-1)
    if where == "one":
        idx = rng.integers(0, flat.size, 1)
    elif where == "some":
        idx = np.flatnonzero(rng.random(flat.size) < 0.1)
    elif where == "row":
        rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        r = int(rng.integers(0, rows.shape[0]))
        idx = np.arange(r * rows.shape[1], (r + 1) * rows.shape[1])
    else:
        idx = np.arange(flat.size)
    values = {"nan": [np.nan], "inf": [np.inf], "-inf": [-np.inf], "mixed": [np.nan, np.inf, -np.inf]}[what]
    flat[idx] = rng.choice(values, size=len(idx))
    return x


def same_nonfinite(fast, twin, what, rtol=1e-3):
    """NaN, +inf and -inf at the same places; finite values where both are finite, loosely equal."""
    fast, twin = np.asarray(fast), np.asarray(twin)
    assert fast.shape == twin.shape, f"{what}: shapes {fast.shape} vs {twin.shape}"
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        a, b = test(fast), test(twin)
        if not np.array_equal(a, b):
            i = np.unravel_index(int(np.flatnonzero(a != b)[0]), a.shape) if a.ndim else ()
            raise AssertionError(f"{what}: the {name} patterns differ ({int((a != b).sum())} places), first at "
                                 f"{i}: numba {fast[i]!r}, twin {twin[i]!r}")
    both = np.isfinite(fast) & np.isfinite(twin)
    if both.any():
        scale = max(float(np.abs(twin[both].astype(np.float64)).max()), 1.0)  # inputs are ~N(0, 1)
        err = float(np.abs(fast[both].astype(np.float64) - twin[both].astype(np.float64)).max())
        assert err <= rtol * scale, f"{what}: finite values differ by {err:.3e} (scale {scale:.3e})"


@contextlib.contextmanager
def split_over_threads(enabled):
    """Every kernel call split over 3 chunks (as test_kernels does), or left as it is."""
    if not enabled:
        yield
        return
    old_env, old_split = os.environ.get("TINYMOBILEBERT_NUM_THREADS"), _jit.MODEL_SPLIT_NS
    os.environ["TINYMOBILEBERT_NUM_THREADS"] = "3"
    _jit.MODEL_SPLIT_NS = 1.0
    try:
        yield
    finally:
        _jit.MODEL_SPLIT_NS = old_split
        if old_env is None:
            del os.environ["TINYMOBILEBERT_NUM_THREADS"]
        else:
            os.environ["TINYMOBILEBERT_NUM_THREADS"] = old_env


def both(name, *args):
    """(numba result, twin result) of kernel ``name`` on separate copies of the array arguments."""
    k = REGISTRY[name]
    copy = lambda a: a.copy() if isinstance(a, np.ndarray) else a  # noqa: E731
    a1, a2 = [copy(a) for a in args], [copy(a) for a in args]
    return (k.numba(*a1), a1), (k.numpy(*a2), a2)


# ------------------------------------------------------------------------------ model kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_norm", [False, True])
@given(N=st.integers(1, 40), C=st.integers(1, 70), seed=seeds, plan=poisons(5), with_bias=st.booleans(),
       with_res=st.booleans(), split=st.booleans())
def test_norms(dtype, layer_norm, N, C, seed, plan, with_bias, with_res, split):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    h = poison(r(N, C), plan[0], rng)
    bias = poison(r(C), plan[1], rng) if with_bias else None
    res = poison(r(N, C), plan[2], rng) if with_res else None
    gamma, beta = poison(r(C), plan[3], rng), poison(r(C), plan[4], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("norm_forward", h, bias, res, gamma, beta, 1e-5, layer_norm)
    for what, a, b in zip(("y", "z", "mean", "rstd"), fast, twin):
        same_nonfinite(a, b, f"norm_forward {what}")
    # the backward pass reads the twin's z, mean and rstd, poisoned again on their own
    dy = poison(r(N, C), plan[0], rng)
    z = poison(twin[1], plan[1], rng)
    mean, rstd = (poison(s, plan[2], rng) for s in twin[2:])
    with split_over_threads(split):
        (fast, _), (twin, _) = both("norm_backward", dy, z, gamma, mean, rstd, layer_norm)
    for what, a, b in zip(("dz", "dgamma", "dbeta", "dbias"), fast, twin):
        same_nonfinite(a, b, f"norm_backward {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(set(activations.ACT_CODES.values())))
@given(N=st.integers(1, 40), C=st.integers(1, 70), seed=seeds, plan=poisons(3), with_bias=st.booleans(),
       scale=st.sampled_from([1.0, 30.0]), split=st.booleans())
def test_activations(dtype, act, N, C, seed, plan, with_bias, scale, split):
    rng = np.random.default_rng(seed)
    h = poison((rng.standard_normal((N, C)) * scale).astype(dtype), plan[0], rng)
    bias = poison(rng.standard_normal(C).astype(dtype), plan[1], rng) if with_bias else None
    with split_over_threads(split):
        (fast, _), (twin, _) = both("bias_act_forward", h, bias, act)
    same_nonfinite(fast[0], twin[0], "y")
    same_nonfinite(fast[1], twin[1], "z")
    dy = poison(rng.standard_normal((N, C)).astype(dtype), plan[2], rng)
    z = poison(twin[1], plan[0], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("act_backward", dy, z, act)
    same_nonfinite(fast[0], twin[0], "dz")
    same_nonfinite(fast[1], twin[1], "dbias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["none", "add", "replace"])
@given(B=st.integers(1, 3), A=st.integers(1, 3), T=st.integers(1, 12), seed=seeds, plan=poisons(3),
       split=st.booleans())
def test_attention_softmax(dtype, mode, B, A, T, seed, plan, split):
    rng = np.random.default_rng(seed)
    raw = poison(rng.standard_normal((B, A, T, T)).astype(dtype), plan[0], rng)
    mask = None
    if mode != "none":
        mask = (rng.random((B, T)) < 0.7).astype(dtype)
        mask[0] = 0  # a fully padded row
    replace = mode == "replace"
    with split_over_threads(split):
        (fast, _), (twin, _) = both("attention_softmax", raw, mask, 0.125, replace, -6.0, True)
    same_nonfinite(fast[0], twin[0], "probs")
    same_nonfinite(fast[1], twin[1], "scores")
    dp = poison(rng.standard_normal(raw.shape).astype(dtype), plan[1], rng)
    p = poison(twin[0], plan[2], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("attention_softmax_backward", dp, p, mask, 0.125, replace)
    same_nonfinite(fast, twin, "d raw")


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 30), V=st.integers(2, 50), seed=seeds, plan=poisons(2),
       frac_ignored=st.sampled_from([0.0, 0.5]), split=st.booleans())
def test_cross_entropy(dtype, N, V, seed, plan, frac_ignored, split):
    rng = np.random.default_rng(seed)
    x = poison((rng.standard_normal((N, V)) * 3).astype(dtype), plan[0], rng)
    y = rng.integers(0, V, N)
    y[rng.random(N) < frac_ignored] = losses.IGNORE_INDEX
    with split_over_threads(split):
        (fast, _), (twin, _) = both("cross_entropy_forward", x, y)
    same_nonfinite(fast[0], twin[0], "loss sum")
    assert fast[1] == twin[1]
    same_nonfinite(fast[2], twin[2], "lse")
    lse = poison(twin[2], plan[1], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("cross_entropy_backward", x, y, lse, 0.37)
    same_nonfinite(fast, twin, "d logits")


@pytest.mark.parametrize("dtype", DTYPES)
@given(B=st.integers(1, 4), T=st.integers(1, 12), E=st.integers(1, 9), V=st.integers(1, 8), seed=seeds,
       plan=poisons(3), aware=st.booleans(), skip=st.booleans(), split=st.booleans())
def test_trigram_embed(dtype, B, T, E, V, seed, plan, aware, skip, split):
    rng = np.random.default_rng(seed)
    table = poison(rng.standard_normal((V, E)).astype(dtype), plan[0], rng)
    ids = rng.integers(0, V, (B, T))
    keep = (rng.random((B, T)) < 0.7).astype(np.int64) if aware else None
    with split_over_threads(split):
        (fast, _), (twin, _) = both("trigram_embed", ids, table, keep)
    same_nonfinite(fast, twin, "trigram x")
    dx = poison(rng.standard_normal((B, T, 3 * E)).astype(dtype), plan[1], rng)
    dtable = poison(rng.standard_normal((V, E)).astype(dtype), plan[2], rng)  # accumulated into
    skip_id = int(ids[0, 0]) if skip else -1
    with split_over_threads(split):
        (_, fast), (_, twin) = both("trigram_embed_backward", dx, ids, keep, dtable, skip_id)
    same_nonfinite(fast[3], twin[3], "d table")


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 60), E=st.integers(1, 9), V=st.integers(1, 8), seed=seeds, plan=poisons(3),
       skip=st.booleans(), split=st.booleans())
def test_embed(dtype, N, E, V, seed, plan, skip, split):
    rng = np.random.default_rng(seed)
    table = poison(rng.standard_normal((V, E)).astype(dtype), plan[0], rng)
    ids = rng.integers(0, V, N)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("embed", ids, table)
    same_nonfinite(fast, twin, "embedding")
    dx = poison(rng.standard_normal((N, E)).astype(dtype), plan[1], rng)
    dtable = poison(rng.standard_normal((V, E)).astype(dtype), plan[2], rng)
    with split_over_threads(split):
        (_, fast), (_, twin) = both("embed_backward", dx, ids, dtable, int(ids[0]) if skip else -1)
    same_nonfinite(fast[2], twin[2], "d table")


@pytest.mark.parametrize("dtype", DTYPES)
@given(B=st.integers(1, 4), T=st.integers(1, 12), H=st.integers(1, 12), seed=seeds, plan=poisons(6),
       split=st.booleans())
def test_position_type(dtype, B, T, H, seed, plan, split):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, pos, typ = poison(r(B, T, H), plan[0], rng), poison(r(T + 2, H), plan[1], rng), poison(r(2, H), plan[2], rng)
    tt = rng.integers(0, 2, (B, T))
    with split_over_threads(split):
        (fast, _), (twin, _) = both("add_position_type", x, pos, typ, tt)
    same_nonfinite(fast, twin, "x")
    dx, dpos, dtyp = poison(r(B, T, H), plan[3], rng), poison(r(T + 2, H), plan[4], rng), poison(r(2, H), plan[5], rng)
    with split_over_threads(split):
        (_, fast), (_, twin) = both("add_position_type_backward", dx, tt, dpos, dtyp)
    same_nonfinite(fast[2], twin[2], "d position")
    same_nonfinite(fast[3], twin[3], "d type")


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(1, 500), p=st.sampled_from([0.1, 0.5]), seed=seeds, plan=poisons(2))
def test_dropout(dtype, n, p, seed, plan):
    rng = np.random.default_rng(seed)
    x = poison(rng.standard_normal(n).astype(dtype), plan[0], rng)
    u = rng.random(n, dtype=dtype)
    (fast, _), (twin, _) = both("dropout_apply", x, u, p, 1 / (1 - p))
    same_nonfinite(fast[0], twin[0], "y")  # a dropped NaN or inf is NaN (x * 0), as in PyTorch
    np.testing.assert_array_equal(fast[1], twin[1])
    dy = poison(rng.standard_normal(n).astype(dtype), plan[1], rng)
    (fast, _), (twin, _) = both("dropout_grad", dy, twin[1], 1 / (1 - p))
    same_nonfinite(fast, twin, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@given(M=st.integers(1, 20), K_=st.integers(1, 20), N=st.integers(1, 20), seed=seeds, plan=poisons(3),
       transposed=st.booleans())
def test_gemm_accumulate(dtype, M, K_, N, seed, plan, transposed):
    rng = np.random.default_rng(seed)
    a = poison(rng.standard_normal((K_, M) if transposed else (M, K_)).astype(dtype), plan[0], rng)
    b = poison(rng.standard_normal((K_, N)).astype(dtype), plan[1], rng)
    c = poison(rng.standard_normal((M, N)).astype(dtype), plan[2], rng)
    a_op = a.T if transposed else a  # a transposed view goes to BLAS with its transpose flag
    c1, c2 = c.copy(), c.copy()
    blas.gemm_accumulate.numba(a_op, b, c1)
    blas.gemm_accumulate.numpy(a_op, b, c2)
    same_nonfinite(c1, c2, "c")


# ------------------------------------------------------------------------------ optimizer kernels
# One segment layout with a gap (padding the kernels must not touch), grad_scale from the clip
# factor's range including its non-finite cases.

grad_scales = st.sampled_from([1.0, 0.25, 0.0, float("nan")])


def _layout(n):
    cut = n // 2
    return np.array([0, cut + 1 if cut + 1 < n else cut], np.int64), np.array([cut, n], np.int64)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(2, 300), seed=seeds, plan=poisons(3), momentum=st.sampled_from([0.0, 0.9]),
       grad_scale=grad_scales)
def test_sgd(dtype, n, seed, plan, momentum, grad_scale):
    rng = np.random.default_rng(seed)
    s0, s1 = _layout(n)
    r = lambda: rng.standard_normal(n).astype(dtype)  # noqa: E731
    p, g = poison(r(), plan[0], rng), poison(r(), plan[1], rng)
    buf = poison(r(), plan[2], rng) if momentum else np.empty(0, dtype)
    (_, fast), (_, twin) = both("sgd_update", p, g, buf, s0, s1, np.array([0.1, 0.01]), np.array([0.99, 1.0]),
                                momentum, grad_scale)
    same_nonfinite(fast[0], twin[0], "param")
    same_nonfinite(fast[2], twin[2], "momentum buffer")


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(2, 300), seed=seeds, plan=poisons(4), gate=st.booleans(), grad_scale=grad_scales)
def test_adamw(dtype, n, seed, plan, gate, grad_scale):
    rng = np.random.default_rng(seed)
    s0, s1 = _layout(n)
    r = lambda: rng.standard_normal(n).astype(dtype)  # noqa: E731
    p, g, m = poison(r(), plan[0], rng), poison(r(), plan[1], rng), poison(r(), plan[2], rng)
    v = poison(np.abs(r()), plan[3], rng)
    (_, fast), (_, twin) = both("adamw_update", p, g, m, v, s0, s1, np.array([1e-3, 1e-2]), np.array([0.99, 1.0]),
                                np.array([True, gate]), 0.9, 0.999, 1e-8, 0.3, grad_scale)
    for i, what in ((0, "param"), (2, "exp_avg"), (3, "exp_avg_sq")):
        same_nonfinite(fast[i], twin[i], what)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(2, 300), seed=seeds, plan=poisons(5), gate=st.booleans(), grad_scale=grad_scales)
def test_lamb(dtype, n, seed, plan, gate, grad_scale):
    rng = np.random.default_rng(seed)
    s0, s1 = _layout(n)
    r = lambda: rng.standard_normal(n).astype(dtype)  # noqa: E731
    p, g, m = poison(r(), plan[0], rng), poison(r(), plan[1], rng), poison(r(), plan[2], rng)
    v, upd = poison(np.abs(r()), plan[3], rng), r()
    (sq_fast, fast), (sq_twin, twin) = both("lamb_moments", p, g, m, v, upd, s0, s1, np.array([0.01, 0.0]),
                                            np.array([True, gate]), 0.9, 0.999, 1e-6, 1.0, 1.0, grad_scale)
    for i, what in ((2, "exp_avg"), (3, "exp_avg_sq"), (4, "update r")):
        same_nonfinite(fast[i], twin[i], what)
    same_nonfinite(sq_fast, sq_twin, "squared norms")
    scale = poison(np.array([1e-3, 2e-3]), plan[4], rng)
    (_, fast), (_, twin) = both("lamb_apply", twin[0], twin[4], s0, s1, scale)
    same_nonfinite(fast[0], twin[0], "param")


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(1, 300), seed=seeds, plan=poisons(1))
def test_squared_norm_and_clipping(dtype, n, seed, plan):
    rng = np.random.default_rng(seed)
    x = poison(rng.standard_normal(n).astype(dtype), plan[0], rng)
    same_nonfinite(K.squared_norm.numba(x), K.squared_norm.numpy(x), "squared norm")

    class Store:  # clip_grad_norm reads only .grad
        grad = None

    a, b = Store(), Store()
    a.grad, b.grad = x.copy(), x.copy()
    from tinymobilebert.kernels import use_numpy_twins

    norm_a = clip_grad_norm(a, 1.0)
    with use_numpy_twins():
        norm_b = clip_grad_norm(b, 1.0)
    same_nonfinite(norm_a, norm_b, "norm")
    same_nonfinite(a.grad, b.grad, "clipped gradients")


# ------------------------------------------------------------------------------ distillation losses


@pytest.mark.parametrize("dtype", DTYPES)
@given(G=st.integers(1, 3), rows=st.integers(1, 8), S=st.integers(1, 30), seed=seeds, plan=poisons(5),
       masked=st.booleans(), alpha=st.sampled_from([0.0, 0.5]), entropy=st.booleans(), split=st.booleans())
def test_soft_target_ce(dtype, G, rows, S, seed, plan, masked, alpha, entropy, split):
    """Attention transfer, MLM distillation and soft cross-entropy share this kernel."""
    rng = np.random.default_rng(seed)
    R = G * rows
    s_ = poison((rng.standard_normal((R, S)) * 3).astype(dtype), plan[0], rng)
    t_ = poison((rng.standard_normal((R, S)) * 3).astype(dtype), plan[1], rng)
    labels = rng.integers(0, S, R) if alpha > 0 else np.zeros(0, np.int64)
    key_mask = None
    if masked:
        key_mask = (rng.random((G, S)) < 0.7).astype(np.float64)
        key_mask[:, 0] = 1
    w = poison(rng.random(R) * (rng.random(R) < 0.8), plan[2], rng)  # some rows left out (weight 0)
    entropy = entropy and alpha == 0.0
    args = (s_, t_, labels, alpha, 0.5, key_mask, rows)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("soft_target_ce_forward", *args, w, entropy)
    same_nonfinite(fast[0], twin[0], "soft-target total")
    same_nonfinite(fast[1], twin[1], "row statistics")
    stats = poison(twin[1], plan[3], rng)
    g = poison(rng.standard_normal(R), plan[4], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("soft_target_ce_backward", *args, stats, g)
    same_nonfinite(fast, twin, "d student logits")


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 40), H=st.integers(1, 40), seed=seeds, plan=poisons(7), split=st.booleans())
def test_feature_map_loss(dtype, N, H, seed, plan, split):
    rng = np.random.default_rng(seed)
    a = poison(rng.standard_normal((N, H)).astype(dtype), plan[0], rng)
    b = poison(rng.standard_normal((N, H)).astype(dtype), plan[1], rng)
    w = poison(rng.random(N) * (rng.random(N) < 0.8), plan[2], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("feature_map_loss_forward", a, b, 1e-12, w)
    for what, x, y in zip(("loss", "mu_s", "rstd_s", "mu_t", "rstd_t"), fast, twin):
        same_nonfinite(x, y, f"feature map {what}")
    mu_s, rstd_s = poison(twin[1], plan[3], rng), poison(twin[2], plan[4], rng)
    mu_t, rstd_t = poison(twin[3], plan[5], rng), twin[4]
    coef = poison(rng.random(N), plan[6], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("feature_map_loss_backward", a, b, mu_s, rstd_s, mu_t, rstd_t, coef)
    same_nonfinite(fast, twin, "d student states")


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 40), H=st.integers(1, 40), seed=seeds, plan=poisons(4), split=st.booleans())
def test_row_moments(dtype, N, H, seed, plan, split):
    rng = np.random.default_rng(seed)
    x = poison(rng.standard_normal((N, H)).astype(dtype), plan[0], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("row_moments", x)
    same_nonfinite(fast[0], twin[0], "row means")
    same_nonfinite(fast[1], twin[1], "row variances")
    mu = poison(twin[0], plan[1], rng)
    dmu, dvar = poison(rng.standard_normal(N), plan[2], rng), poison(rng.standard_normal(N), plan[3], rng)
    with split_over_threads(split):
        (fast, _), (twin, _) = both("row_moments_backward", x, mu, dmu, dvar)
    same_nonfinite(fast, twin, "d states")


def test_every_kernel_gets_non_finite_inputs():
    """Each registered kernel has a test above (a new kernel must be added to COVERED)."""
    import tinymobilebert.distill  # noqa: F401  (registers the distillation kernels)
    import tinymobilebert.optim  # noqa: F401  (registers the optimizer kernels)

    assert set(REGISTRY) == set(COVERED), f"not covered: {sorted(set(REGISTRY) - set(COVERED))}"
    assert all(name in globals() for name in COVERED.values())
    assert {m.__name__ for m in (norms, activations, softmax, losses, embedding, dropout, blas, K, hidden_stats,
                                 soft_targets)} >= {
        k.numba.__module__ for k in REGISTRY.values()}


def test_relu_keeps_nan():
    """The case that started this: relu(NaN) is NaN, as np.maximum and PyTorch give (it was 0)."""
    h = np.array([[np.nan, -1.0, 2.0, np.inf, -np.inf]], np.float32)
    y, _ = activations.bias_act_forward.numba(h, None, activations.act_code("relu"))
    assert np.isnan(y[0, 0]) and y[0, 3] == np.inf and y[0, 4] == 0
