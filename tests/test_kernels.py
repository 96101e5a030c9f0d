"""Every model kernel equals its plain-NumPy twin, on hypothesis-drawn shapes and values.

Shapes run from one row up to sizes that split over several threads (see kernels._jit), values
include fully padded attention rows and large logits. Tolerances: float64 to ~1e-12 relative
(different summation orders); float32 to a few ulps of the result's scale (the kernels
accumulate statistics in float64, the twins partly in float32).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.kernels import REGISTRY
from tinymobilebert.kernels import _jit, activations, embedding, losses, norms, softmax

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-11}
MODEL_KERNEL_MODULES = (norms, activations, softmax, losses, embedding)

# kernel -> the test above that compares it with its twin (checked against the registry below)
COVERED = {
    "norm_forward": "test_norm_forward_backward", "norm_backward": "test_norm_forward_backward",
    "bias_act_forward": "test_bias_act_forward_backward", "act_backward": "test_bias_act_forward_backward",
    "attention_softmax": "test_attention_softmax", "attention_softmax_backward": "test_attention_softmax",
    "cross_entropy_forward": "test_cross_entropy", "cross_entropy_backward": "test_cross_entropy",
    "trigram_embed": "test_trigram_embed", "trigram_embed_backward": "test_trigram_embed",
    "embed": "test_embed", "embed_backward": "test_embed",
    "add_position_type": "test_position_type", "add_position_type_backward": "test_position_type",
}


def close(a, b, dtype, what, scale=None):
    """assert a ~= b relative to b's scale (or ``scale``, the size of terms that cancel)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    scale = max(np.abs(b).max(initial=0.0), scale or 0.0, 1e-30)
    err = np.abs(a - b).max(initial=0.0) / scale
    assert err <= RTOL[dtype], f"{what}: rel err {err:.3e}\nnumba={a.ravel()[:8]}\nnumpy={b.ravel()[:8]}"


rows = st.integers(1, 700)
cols = st.integers(1, 130)
seeds = st.integers(0, 2**31 - 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_norm", [False, True])
@given(N=rows, C=cols, seed=seeds, with_bias=st.booleans(), with_res=st.booleans(),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_norm_forward_backward(dtype, layer_norm, N, C, seed, with_bias, with_res, scale):
    rng = np.random.default_rng(seed)
    r = lambda *s: (rng.standard_normal(s) * scale).astype(dtype)
    h, g, b = r(N, C), r(C), r(C)
    bias = r(C) if with_bias else None
    res = r(N, C) if with_res else None
    fast = norms.norm_forward.numba(h, bias, res, g, b, 1e-5, layer_norm)
    slow = norms.norm_forward.numpy(h, bias, res, g, b, 1e-5, layer_norm)
    for name, x, y in zip(("y", "z", "mean", "rstd"), fast, slow):
        assert x.dtype == dtype
        close(x, y, dtype, name)
    dy = r(N, C)
    fb = norms.norm_backward.numba(dy, slow[1], g, slow[2], slow[3], layer_norm)
    sb = norms.norm_backward.numpy(dy, slow[1], g, slow[2], slow[3], layer_norm)
    # dz = rstd * (dy*g - mean(dy*g) - xhat*mean(dy*g*xhat)) cancels: compare at the terms' size;
    # dgamma, dbeta, dbias are sums over N rows that may cancel: at the sum of the terms' sizes
    terms = np.abs(dy * g).max() * (np.abs(slow[3]).max() if layer_norm else 1.0)
    xhat = (slow[1] - slow[2][:, None]) * slow[3][:, None] if layer_norm else slow[1]
    sums = {"dgamma": np.abs(dy * xhat).sum(0).max(), "dbeta": np.abs(dy).sum(0).max(), "dbias": terms * N}
    for name, x, y in zip(("dz", "dgamma", "dbeta", "dbias"), fb, sb):
        assert x.dtype == dtype
        close(x, y, dtype, name, scale=max(terms, sums.get(name, 0.0)))


@pytest.mark.parametrize("offset", [1e3, 3e4, -2e4])
@pytest.mark.parametrize("split", [False, True])
def test_layernorm_statistics_are_float64(offset, split, monkeypatch):
    """float32 rows far from zero (a large common offset, unit spread): the kernel's mean and
    rstd are within 1 ulp of the float64 statistics of the same float32 values. Summed in float32
    the mean of 512 values near 3e4 is off by tens of ulps; the tolerance above (2e-5 relative)
    cannot see that, 1 ulp does."""
    if split:
        monkeypatch.setenv("TINYMOBILEBERT_NUM_THREADS", "3")
        monkeypatch.setattr(_jit, "MODEL_SPLIT_NS", 1.0)
    rng = np.random.default_rng(0)
    N, C = 64, 512
    h = (offset + rng.standard_normal((N, C))).astype(np.float32)
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    _, z, mean, rstd = norms.norm_forward.numba(h, None, None, gamma, beta, 1e-5, True)
    z64 = z.astype(np.float64)
    mean64 = z64.mean(axis=1)
    rstd64 = 1.0 / np.sqrt(((z64 - mean64[:, None]) ** 2).mean(axis=1) + 1e-5)
    for what, got, ref in (("mean", mean, mean64), ("rstd", rstd, rstd64)):
        ref32 = ref.astype(np.float32)
        ulps = np.abs(got.astype(np.float64) - ref32) / np.spacing(np.abs(ref32)).astype(np.float64)
        assert got.dtype == np.float32 and ulps.max() <= 1.0, f"{what}: {ulps.max():.1f} ulps off"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(set(activations.ACT_CODES.values())))
@given(N=rows, C=cols, seed=seeds, with_bias=st.booleans(), scale=st.sampled_from([0.1, 3.0, 30.0]))
def test_bias_act_forward_backward(dtype, act, N, C, seed, with_bias, scale):
    rng = np.random.default_rng(seed)
    h = (rng.standard_normal((N, C)) * scale).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype) if with_bias else None
    y1, z1 = activations.bias_act_forward.numba(h, bias, act)
    y2, z2 = activations.bias_act_forward.numpy(h, bias, act)
    assert y1.dtype == dtype and z1.dtype == dtype
    close(z1, z2, dtype, "z")
    close(y1, y2, dtype, "y", scale=np.abs(z2).max())  # |act(z)| <= |z|; tails cancel in float32
    dy = rng.standard_normal((N, C)).astype(dtype)
    d1, db1 = activations.act_backward.numba(dy, z2, act)
    d2, db2 = activations.act_backward.numpy(dy, z2, act)
    assert d1.dtype == dtype and db1.dtype == dtype
    # dz = dy * act'(z) with |act'| <= ~1.1: compare at |dy|'s scale (act' underflows far out)
    close(d1, d2, dtype, "dz", scale=np.abs(dy).max())
    close(db1, db2, dtype, "dbias", scale=np.abs(dy).max() * N)


def test_activation_extremes_are_finite():
    """GELU/tanh at +-inf-like inputs: no nan (the fastmath set keeps inf semantics)."""
    for dtype in DTYPES:
        big = np.finfo(dtype).max / 4
        h = np.array([[-big, -50.0, 0.0, 50.0, big]], dtype)
        for code in set(activations.ACT_CODES.values()):
            y, z = activations.bias_act_forward(h, None, code)
            d, _ = activations.act_backward(np.ones_like(h), z, code)
            assert np.all(np.isfinite(d)), (code, d)
            assert not np.any(np.isnan(y)), (code, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("replace", [False, True])
@given(B=st.integers(1, 5), A=st.integers(1, 4), T=st.integers(1, 40), seed=seeds,
       masked=st.booleans(), scale=st.sampled_from([0.1, 1.0, 100.0]), keep=st.booleans())
def test_attention_softmax(dtype, replace, B, A, T, seed, masked, scale, keep):
    rng = np.random.default_rng(seed)
    raw = (rng.standard_normal((B, A, T, T)) * scale).astype(dtype)
    mask = None
    if masked:
        mask = (rng.random((B, T)) < 0.7).astype(dtype)
        mask[0] = 0  # a fully padded row
    p1, s1 = softmax.attention_softmax.numba(raw, mask, 0.125, replace, -6.0, keep)
    p2, s2 = softmax.attention_softmax.numpy(raw, mask, 0.125, replace, -6.0, keep)
    assert p1.dtype == dtype
    close(p1, p2, dtype, "probs")
    assert np.allclose(p1.sum(-1), 1.0, atol=1e-5)
    if keep:
        close(s1, s2, dtype, "scores")
    else:
        assert s1 is None and s2 is None
    dp = rng.standard_normal(raw.shape).astype(dtype)
    # P * (dP - sum(dP * P)) cancels where one key takes all the weight: compare at the terms' size
    terms = 0.125 * np.abs(p2) * (np.abs(dp) + np.abs(dp * p2).sum(-1, keepdims=True))
    close(softmax.attention_softmax_backward.numba(dp, p2, mask, 0.125, replace),
          softmax.attention_softmax_backward.numpy(dp, p2, mask, 0.125, replace), dtype, "draw", scale=terms.max())


def test_fully_padded_row_is_uniform_and_masked_keys_get_zero():
    """transformers' convention: masked keys weigh exactly 0; an all-padding row is uniform."""
    raw = np.random.default_rng(0).standard_normal((2, 1, 3, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    p, _ = softmax.attention_softmax(raw, mask, 1.0, False, 0.0, False)
    assert np.all(p[0, :, :, 2:] == 0)
    np.testing.assert_allclose(p[1], 0.25, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 300), V=st.integers(2, 400), seed=seeds, scale=st.sampled_from([1.0, 50.0, 1e4]),
       frac_ignored=st.sampled_from([0.0, 0.5, 1.0]))
def test_cross_entropy(dtype, N, V, seed, scale, frac_ignored):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, V)) * scale).astype(dtype)  # large logits included
    y = rng.integers(0, V, N)
    y[rng.random(N) < frac_ignored] = losses.IGNORE_INDEX
    l1, c1, lse1 = losses.cross_entropy_forward.numba(x, y)
    l2, c2, lse2 = losses.cross_entropy_forward.numpy(x, y)
    assert c1 == c2 and np.isfinite(l1)
    assert abs(l1 - l2) <= 1e-9 * max(abs(l2), 1.0)
    close(lse1, lse2, np.float64, "lse")
    close(losses.cross_entropy_backward.numba(x, y, lse2, 0.37), losses.cross_entropy_backward.numpy(x, y, lse2, 0.37),
          dtype, "dlogits", scale=0.37)  # entries are 0.37 * (p - onehot)


@pytest.mark.parametrize("dtype", DTYPES)
@given(B=st.integers(1, 6), T=st.integers(1, 70), E=st.integers(1, 40), V=st.integers(1, 30), seed=seeds,
       aware=st.booleans(), skip=st.booleans())
def test_trigram_embed(dtype, B, T, E, V, seed, aware, skip):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((V, E)).astype(dtype)
    ids = rng.integers(0, V, (B, T))  # small V: ids repeat, the scatter-add collides
    keep = (rng.random((B, T)) < 0.8).astype(np.int64) if aware else None
    x1 = embedding.trigram_embed.numba(ids, table, keep)
    x2 = embedding.trigram_embed.numpy(ids, table, keep)
    assert x1.dtype == dtype
    np.testing.assert_array_equal(x1, x2)
    dx = rng.standard_normal((B, T, 3 * E)).astype(dtype)
    skip_id = int(ids[0, 0]) if skip else -1
    d1 = rng.standard_normal((V, E)).astype(dtype)  # accumulates into existing values
    d2 = d1.copy()
    magnitude = np.abs(d1).astype(np.float64)
    embedding.trigram_embed_backward.numba(dx, ids, keep, d1, skip_id)
    embedding.trigram_embed_backward.numpy(dx, ids, keep, d2, skip_id)
    # repeated ids sum up to 3*B*T terms that may cancel: compare at the sum of their magnitudes
    embedding.trigram_embed_backward.numpy(np.abs(dx).astype(np.float64), ids, keep, magnitude, skip_id)
    close(d1, d2, dtype, "dtable", scale=magnitude.max())


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 2000), E=st.integers(1, 70), V=st.integers(1, 50), seed=seeds, skip=st.booleans())
def test_embed(dtype, N, E, V, seed, skip):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((V, E)).astype(dtype)
    ids = rng.integers(0, V, N)
    np.testing.assert_array_equal(embedding.embed.numba(ids, table), embedding.embed.numpy(ids, table))
    dx = rng.standard_normal((N, E)).astype(dtype)
    d1 = np.zeros((V, E), dtype)
    d2 = d1.copy()
    skip_id = int(ids[0]) if skip else -1
    embedding.embed_backward.numba(dx, ids, d1, skip_id)
    embedding.embed_backward.numpy(dx, ids, d2, skip_id)
    magnitude = np.zeros((V, E))  # repeated ids' terms may cancel: their summed magnitude
    embedding.embed_backward.numpy(np.abs(dx).astype(np.float64), ids, magnitude, skip_id)
    close(d1, d2, dtype, "dtable", scale=magnitude.max())
    if skip:
        assert np.all(d1[skip_id] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@given(B=st.integers(1, 6), T=st.integers(1, 70), H=st.integers(1, 70), seed=seeds)
def test_position_type(dtype, B, T, H, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, H)).astype(dtype)
    pos = rng.standard_normal((T + 3, H)).astype(dtype)
    typ = rng.standard_normal((2, H)).astype(dtype)
    tt = rng.integers(0, 2, (B, T))
    close(embedding.add_position_type.numba(x.copy(), pos, typ, tt),
          embedding.add_position_type.numpy(x.copy(), pos, typ, tt), dtype, "x")
    d1, t1 = np.zeros_like(pos), np.zeros_like(typ)
    d2, t2 = np.zeros_like(pos), np.zeros_like(typ)
    embedding.add_position_type_backward.numba(x, tt, d1, t1)
    embedding.add_position_type_backward.numpy(x, tt, d2, t2)
    close(d1, d2, dtype, "dpos")
    close(t1, t2, dtype, "dtype")


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_split_over_threads(monkeypatch, dtype):
    """The comparisons above again, on awkward shapes, with every call split over 3 threads: odd
    chunk edges, one partial-sum row per chunk, column chunks of the scatter-adds (outside this
    test only calls of ~ms split; see kernels._jit.MODEL_SPLIT_NS)."""
    monkeypatch.setenv("TINYMOBILEBERT_NUM_THREADS", "3")
    monkeypatch.setattr(_jit, "MODEL_SPLIT_NS", 1.0)
    assert len(_jit.row_chunks(5, _jit.model_work(1.0))) == 3
    for N, C in ((7, 5), (333, 130), (2, 1)):
        for layer_norm in (False, True):
            test_norm_forward_backward.hypothesis.inner_test(dtype, layer_norm, N, C, 1, True, N > 2, 1.0)
        for act in sorted(set(activations.ACT_CODES.values())):
            test_bias_act_forward_backward.hypothesis.inner_test(dtype, act, N, C, 2, N > 2, 3.0)
    for B, A, T in ((3, 2, 7), (1, 1, 2)):
        for replace in (False, True):
            test_attention_softmax.hypothesis.inner_test(dtype, replace, B, A, T, 3, True, 1.0, True)
    for N, V in ((37, 50), (2, 3)):
        test_cross_entropy.hypothesis.inner_test(dtype, N, V, 4, 50.0, 0.5)
    test_trigram_embed.hypothesis.inner_test(dtype, 3, 9, 5, 4, 5, True, True)
    test_trigram_embed.hypothesis.inner_test(dtype, 2, 5, 7, 9, 6, False, False)
    test_embed.hypothesis.inner_test(dtype, 77, 9, 6, 7, True)
    test_position_type.hypothesis.inner_test(dtype, 3, 9, 7, 8)


def test_twin_switch_runs_the_twins():
    from tinymobilebert.kernels import use_numpy_twins

    calls = []
    k = norms.norm_forward
    orig = k.numpy
    k.numpy = lambda *a: calls.append(1) or orig(*a)
    try:
        h = np.ones((2, 3), np.float32)
        g = np.ones(3, np.float32)
        with use_numpy_twins():
            k(h, None, None, g, g, 1e-5, True)
        k(h, None, None, g, g, 1e-5, True)
    finally:
        k.numpy = orig
    assert calls == [1]


def test_every_model_kernel_has_a_twin_test():
    """Each kernel registered by the model's kernel modules is compared by a test in this file."""
    mods = {m.__name__ for m in MODEL_KERNEL_MODULES}
    model_kernels = {n for n, k in REGISTRY.items() if k.numba.__module__ in mods}
    assert model_kernels, "no kernels registered"
    assert model_kernels <= set(COVERED), f"kernels without a twin test: {sorted(model_kernels - set(COVERED))}"
    assert all(name in globals() for name in COVERED.values())
