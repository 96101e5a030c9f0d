"""The distillation losses' Numba kernels equal their NumPy twins, on hypothesis-drawn shapes and
values: masks, rows left out, extreme and non-finite inputs (the same nan / inf where the twin has
them), and every call split over threads.

Tolerances as in tests/test_kernels.py: float64 to ~1e-11 relative, float32 to a few ulps of the
result's scale (both sides accumulate in float64; the backward pass takes its exponentials in the
gradient's dtype).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.kernels import REGISTRY, _jit, hidden_stats, soft_targets

# the twins' arithmetic on the nan / inf inputs drawn below warns; the values are what is compared
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-11}
COVERED = {
    "soft_target_ce_forward": "test_soft_target_ce", "soft_target_ce_backward": "test_soft_target_ce",
    "feature_map_loss_forward": "test_feature_map_loss", "feature_map_loss_backward": "test_feature_map_loss",
    "row_moments": "test_row_moments", "row_moments_backward": "test_row_moments",
}
seeds = st.integers(0, 2**31 - 1)


def same(a, b, dtype, what, scale=None):
    """a ~= b relative to b's finite scale, with nan and +-inf in exactly the same places."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what}: nan pattern")
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=f"{what}: +inf pattern")
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=f"{what}: -inf pattern")
    fin = np.isfinite(b)
    scale = max(np.abs(b[fin]).max(initial=0.0), scale or 0.0, 1e-30)
    err = np.abs(a[fin] - b[fin]).max(initial=0.0) / scale
    assert err <= RTOL[dtype], f"{what}: rel err {err:.3e}\nnumba={a.ravel()[:8]}\nnumpy={b.ravel()[:8]}"


def poke(rng, x, how):
    """Put special values into a few entries of x (in place)."""
    if how == "none":
        return
    idx = tuple(rng.integers(0, n, 3) for n in x.shape)
    x[idx] = {"finfo_min": np.finfo(x.dtype).min, "neg_inf": -np.inf, "pos_inf": np.inf, "nan": np.nan}[how]


@pytest.mark.parametrize("dtype", DTYPES)
@given(G=st.integers(1, 4), rows_per_group=st.integers(1, 40), S=st.integers(1, 300), seed=seeds,
       masked=st.booleans(), alpha=st.sampled_from([0.0, 0.3, 1.0]), temperature=st.sampled_from([0.5, 1.0, 3.0]),
       entropy=st.booleans(), scale=st.sampled_from([0.1, 3.0, 1e4]),
       special=st.sampled_from(["none", "finfo_min", "neg_inf", "pos_inf", "nan"]), skip=st.booleans())
def test_soft_target_ce(dtype, G, rows_per_group, S, seed, masked, alpha, temperature, entropy, scale, special, skip):
    rng = np.random.default_rng(seed)
    R = G * rows_per_group
    s = (rng.standard_normal((R, S)) * scale).astype(dtype)
    t = (rng.standard_normal((R, S)) * scale).astype(dtype)
    poke(rng, s, special)
    poke(rng, t, special)
    labels = rng.integers(0, S, R)
    key_mask = (rng.random((G, S)) < 0.7).astype(np.float64) if masked else None
    if masked:
        key_mask[:, 0] = 1  # every row keeps a key (a fully masked row is left out by its weight)
    w = rng.random(R)
    if skip:
        w[rng.random(R) < 0.3] = 0.0
    entropy = entropy and alpha == 0.0
    args = (s, t, labels, alpha, 1.0 / temperature, key_mask, rows_per_group)
    tot1, st1 = soft_targets.soft_target_ce_forward.numba(*args, w, entropy)
    tot2, st2 = soft_targets.soft_target_ce_forward.numpy(*args, w, entropy)
    # the total is a sum of R row losses: compare at the scale of its terms
    terms = float(np.sum(w * np.abs(np.nan_to_num(st2[:, :2], posinf=0, neginf=0)).sum(axis=1))) + 1.0
    same(tot1, tot2, np.float64, "total", scale=terms)
    same(st1, st2, np.float64, "row statistics")
    g = w * 0.37
    d1 = soft_targets.soft_target_ce_backward.numba(*args, st2, g)
    d2 = soft_targets.soft_target_ce_backward.numpy(*args, st2, g)
    assert d1.dtype == dtype
    same(d1, d2, dtype, "ds", scale=0.37 * (1.0 + alpha) / temperature)  # entries are g k (p - q)


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 400), H=st.integers(1, 130), seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e3]),
       skip=st.booleans(), special=st.sampled_from(["none", "pos_inf", "nan"]))
def test_feature_map_loss(dtype, N, H, seed, scale, skip, special):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((N, H)) * scale + 0.5 * scale).astype(dtype)
    b = (rng.standard_normal((N, H)) * 2 * scale - scale).astype(dtype)
    poke(rng, a, special)
    w = rng.random(N)
    if skip:
        w[rng.random(N) < 0.3] = 0.0
    f1 = hidden_stats.feature_map_loss_forward.numba(a, b, 1e-12, w)
    f2 = hidden_stats.feature_map_loss_forward.numpy(a, b, 1e-12, w)
    same(f1[0], f2[0], np.float64, "total", scale=4.0 * H * w.sum())  # each row's sum is at most 4 H
    for name, x, y in zip(("mu_a", "rstd_a", "mu_b", "rstd_b"), f1[1:], f2[1:]):
        same(x, y, np.float64, name)
    coef = 2.0 * 0.7 * w
    d1 = hidden_stats.feature_map_loss_backward.numba(a, b, *f2[1:], coef)
    d2 = hidden_stats.feature_map_loss_backward.numpy(a, b, *f2[1:], coef)
    assert d1.dtype == dtype
    # da = rstd (d - mean(d) - xa mean(d xa)) with |d| <= 2 coef sqrt(H): compare at that size
    rstd = np.nan_to_num(f2[2], posinf=0.0)
    same(d1, d2, dtype, "da", scale=float(np.max(coef * rstd, initial=0.0)) * 4 * np.sqrt(H))


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 400), H=st.integers(1, 130), seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e3]),
       special=st.sampled_from(["none", "neg_inf", "nan"]))
def test_row_moments(dtype, N, H, seed, scale, special):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, H)) * scale + scale).astype(dtype)
    poke(rng, x, special)
    m1, v1 = hidden_stats.row_moments.numba(x)
    m2, v2 = hidden_stats.row_moments.numpy(x)
    same(m1, m2, np.float64, "mu")
    same(v1, v2, np.float64, "var")
    dmu, dvar = rng.standard_normal(N), rng.standard_normal(N)
    d1 = hidden_stats.row_moments_backward.numba(x, m2, dmu, dvar)
    d2 = hidden_stats.row_moments_backward.numpy(x, m2, dmu, dvar)
    assert d1.dtype == dtype
    same(d1, d2, dtype, "dx")


def test_soft_target_rows_left_out_are_not_read():
    """A row of weight 0 may be all -inf (a padded query in the padding-aware form): no nan leaks."""
    s = np.array([[0.0, 1.0], [-np.inf, -np.inf]])
    w = np.array([1.0, 0.0])
    for k in (soft_targets.soft_target_ce_forward.numba, soft_targets.soft_target_ce_forward.numpy):
        total, stats = k(s, s, np.zeros(2, np.int64), 0.0, 1.0, None, 1, w, True)
        assert np.isfinite(total) and np.all(stats[1] == 0.0) and abs(total) < 1e-15  # KL of a row with itself


@pytest.mark.parametrize("dtype", DTYPES)
def test_distill_kernels_split_over_threads(monkeypatch, dtype):
    """The comparisons above again, with every call split over 3 threads (odd chunk edges, one
    partial sum per chunk, one scratch row per chunk)."""
    monkeypatch.setenv("TINYMOBILEBERT_NUM_THREADS", "3")
    monkeypatch.setattr(_jit, "MODEL_SPLIT_NS", 1.0)
    for G, rpg, S in ((3, 7, 33), (1, 2, 5)):
        for masked in (False, True):
            test_soft_target_ce.hypothesis.inner_test(dtype, G, rpg, S, 1, masked, 0.3, 2.0, False, 3.0, "none", True)
            test_soft_target_ce.hypothesis.inner_test(dtype, G, rpg, S, 2, masked, 0.0, 1.0, True, 3.0, "finfo_min",
                                                      False)
    for N, H in ((7, 5), (333, 130), (2, 1)):
        test_feature_map_loss.hypothesis.inner_test(dtype, N, H, 3, 1.0, True, "none")
        test_row_moments.hypothesis.inner_test(dtype, N, H, 4, 1.0, "none")


def test_every_distill_kernel_has_a_twin_test():
    mods = {hidden_stats.__name__, soft_targets.__name__}
    kernels = {n for n, k in REGISTRY.items() if k.numba.__module__ in mods}
    assert kernels == set(COVERED), f"kernels without a twin test: {sorted(kernels - set(COVERED))}"
    assert all(name in globals() for name in COVERED.values())
