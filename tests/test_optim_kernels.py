"""Every optimizer kernel in ``tinymobilebert.kernels.optim`` against its NumPy twin.

Hypothesis draws the flat size (1 element up to 200k), the tensor layout (segments with padding
gaps and chunk boundaries falling inside them), values, hyper-parameters and the dtype. Each
test runs with 1 thread and with 4, so both the single-chunk path and the multi-chunk thread
path (more than ``_MIN_WORK_PER_THREAD`` = 32k elements per chunk) are exercised.

Tolerances, in units of the operands' magnitude (|old| + |new|), because an update such as
p*decay - step*u may cancel and leave a small result whose *relative* error means nothing:

* float64: 1e-12. Both sides evaluate the same formula in the same order; they differ only by
  Numba's fastmath (fused multiply-adds, reciprocal-multiply for division), a few ulps of 1e-16.
* float32: 8 ulps (8 * 1.19e-7). The same few-ulp fastmath differences, plus ``afn`` may let
  LLVM use an approximate float32 sqrt refined by one Newton step (about 1 ulp).
* float64 norm accumulators: 1e-12 relative. The squares are exact in float64; only the
  summation order differs (sequential/vectorised vs NumPy's pairwise), whose random-signed
  rounding errors grow like sqrt(n) * 1.1e-16 ~ 5e-14 at n = 200k.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples

from tinymobilebert.kernels import REGISTRY, use_numpy_twins
from tinymobilebert.kernels import optim as K
from tinymobilebert.kernels._jit import row_chunks

EXAMPLES = settings(max_examples=examples(12), deadline=None)
ULPS = {np.float32: 8 * np.finfo(np.float32).eps, np.float64: 1e-12}


@contextlib.contextmanager
def num_threads(n: int):
    old = os.environ.get("TINYMOBILEBERT_NUM_THREADS")
    os.environ["TINYMOBILEBERT_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["TINYMOBILEBERT_NUM_THREADS"]
        else:
            os.environ["TINYMOBILEBERT_NUM_THREADS"] = old


def assert_close(actual, expected, magnitude, dtype, what):
    """|actual - expected| <= tol * magnitude elementwise (tol per dtype, see module notes)."""
    tol = ULPS[dtype] * magnitude + np.finfo(dtype).tiny
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = np.flatnonzero(err > tol)
    assert bad.size == 0, (f"{what}: {bad.size} elements off, first at {bad[0]}: numba "
                           f"{actual[bad[0]]!r} vs twin {expected[bad[0]]!r} (tol {tol[bad[0]]:.3g})")


sizes = st.one_of(st.integers(1, 3000), st.integers(70_000, 200_000))
dtypes = st.sampled_from([np.float32, np.float64])


def layout(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(S,) starts/stops: random tensors covering [0, n) with padding gaps, some empty."""
    S = int(rng.integers(1, 9))
    cuts = np.sort(rng.integers(0, n + 1, size=S - 1))
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [n]])
    pad = rng.integers(0, 16, size=S)
    stops = np.maximum(starts, stops - pad)  # leave a gap the kernels must not touch
    return starts.astype(np.int64), stops.astype(np.int64)


def flat(rng, n, dtype, scale=1.0, positive=False):
    x = rng.standard_normal(n) * scale
    return (x * x if positive else x).astype(dtype)


def run_both(name, arrays, *args):
    """Run the Numba kernel and the twin on copies of ``arrays``; return both outputs + copies."""
    ours = [a.copy() for a in arrays]
    theirs = [a.copy() for a in arrays]
    out_numba = REGISTRY[name].numba(*ours, *args)
    out_numpy = REGISTRY[name].numpy(*theirs, *args)
    return ours, theirs, out_numba, out_numpy


def per_element(seg_values, starts, stops, n):
    """(N,) float64 array holding each segment's value on its elements, 0 on the padding."""
    out = np.zeros(n)
    for value, a, b in zip(seg_values, starts, stops):
        out[a:b] = value
    return out


def moment_error_scale(m_old, g_scaled, m_new, v_new, eps, bias_correction2_sqrt=1.0):
    """|m|-sized rounding of m (b1*m + (1-b1)*g may cancel) as it reaches m / (sqrt(v) + eps)."""
    denominator = np.sqrt(v_new.astype(np.float64)) / bias_correction2_sqrt + eps
    return (np.abs(m_old) + np.abs(g_scaled) + np.abs(m_new)) / denominator


def assert_padding_untouched(before, after, starts, stops):
    inside = np.zeros(before.size, bool)
    for a, b in zip(starts, stops):
        inside[a:b] = True
    np.testing.assert_array_equal(after[~inside], before[~inside])


@pytest.mark.parametrize("threads", [1, 4])
@EXAMPLES
@given(n=sizes, dtype=dtypes, seed=st.integers(0, 2**32 - 1), momentum=st.sampled_from([0.0, 0.9]),
       grad_scale=st.floats(0.01, 1.0))
def test_sgd_update_matches_twin(threads, n, dtype, seed, momentum, grad_scale):
    rng = np.random.default_rng(seed)
    starts, stops = layout(n, rng)
    S = starts.size
    seg_lr = rng.uniform(0, 0.1, S)
    seg_decay = 1.0 - seg_lr * rng.choice([0.0, 0.01], S)
    p, g = flat(rng, n, dtype), flat(rng, n, dtype)
    buf = flat(rng, n, dtype) if momentum else np.empty(0, dtype)
    with num_threads(threads):
        ours, theirs, _, _ = run_both("sgd_update", [p, g, buf], starts, stops, seg_lr, seg_decay,
                                      momentum, grad_scale)
    if momentum:
        assert_close(ours[2], theirs[2], np.abs(buf) + np.abs(g) + np.abs(theirs[2]), dtype, "buffer")
    # p*decay - lr*b: b = mu*b + g may cancel, and its rounding reaches p times lr
    new_buf = theirs[2] if momentum else 0.0
    update_scale = per_element(seg_lr, starts, stops, n) * (np.abs(buf if momentum else 0.0)
                                                            + np.abs(g) + np.abs(new_buf))
    assert_close(ours[0], theirs[0], np.abs(p) + np.abs(theirs[0]) + update_scale, dtype, "param")
    assert_padding_untouched(p, ours[0], starts, stops)


@pytest.mark.parametrize("threads", [1, 4])
@EXAMPLES
@given(n=sizes, dtype=dtypes, seed=st.integers(0, 2**32 - 1), beta1=st.floats(0.0, 0.99),
       beta2=st.floats(0.0, 0.9999), eps=st.floats(1e-10, 1e-3), t=st.integers(1, 1000),
       grad_scale=st.floats(0.01, 1.0))
def test_adamw_update_matches_twin(threads, n, dtype, seed, beta1, beta2, eps, t, grad_scale):
    rng = np.random.default_rng(seed)
    starts, stops = layout(n, rng)
    S = starts.size
    scale = 10.0 ** rng.uniform(-4, 1)  # gradient magnitude
    seg_lr = rng.uniform(0, 1e-2, S)
    seg_step = seg_lr / (1 - beta1**t)
    seg_decay = 1.0 - seg_lr * rng.choice([0.0, 0.01], S)
    gate = rng.random(S) < 0.8
    p, g = flat(rng, n, dtype), flat(rng, n, dtype, scale)
    m, v = flat(rng, n, dtype, 0.3 * scale), flat(rng, n, dtype, scale, positive=True)
    with num_threads(threads):
        ours, theirs, _, _ = run_both("adamw_update", [p, g, m, v], starts, stops, seg_step,
                                      seg_decay, gate, beta1, beta2, eps, np.sqrt(1 - beta2**t), grad_scale)
    gs = np.abs(g) * grad_scale
    assert_close(ours[2], theirs[2], np.abs(m) + gs + np.abs(theirs[2]), dtype, "exp_avg")
    assert_close(ours[3], theirs[3], np.abs(v) + gs * gs + np.abs(theirs[3]), dtype, "exp_avg_sq")
    # p*decay - step*m/(...): m's cancellation error reaches p scaled by step/(sqrt(v)/bc2s + eps)
    step = per_element(seg_step, starts, stops, n)
    update_scale = step * moment_error_scale(m, gs, theirs[2], theirs[3], eps, np.sqrt(1 - beta2**t))
    assert_close(ours[0], theirs[0], np.abs(p) + np.abs(theirs[0]) + update_scale, dtype, "param")
    np.testing.assert_array_equal(ours[1], g)  # the gradient is read, never written
    for arr, before in zip(ours, (p, g, m, v)):
        assert_padding_untouched(before, arr, starts, stops)


@pytest.mark.parametrize("threads", [1, 4])
@EXAMPLES
@given(n=sizes, dtype=dtypes, seed=st.integers(0, 2**32 - 1), beta1=st.floats(0.0, 0.99),
       beta2=st.floats(0.0, 0.9999), eps=st.floats(1e-10, 1e-3), bias_correction=st.booleans(),
       grad_scale=st.floats(0.01, 1.0))
def test_lamb_moments_matches_twin(threads, n, dtype, seed, beta1, beta2, eps, bias_correction, grad_scale):
    rng = np.random.default_rng(seed)
    starts, stops = layout(n, rng)
    S = starts.size
    scale = 10.0 ** rng.uniform(-4, 1)
    seg_wd = rng.choice([0.0, 0.01], S)
    gate = rng.random(S) < 0.8
    c1, c2 = (1 / (1 - beta1**3), 1 / (1 - beta2**3)) if bias_correction else (1.0, 1.0)
    p, g = flat(rng, n, dtype), flat(rng, n, dtype, scale)
    m, v = flat(rng, n, dtype, 0.3 * scale), flat(rng, n, dtype, scale, positive=True)
    r = flat(rng, n, dtype)  # garbage the kernel must overwrite inside segments
    with num_threads(threads):
        ours, theirs, sq_numba, sq_numpy = run_both(
            "lamb_moments", [p, g, m, v, r], starts, stops, seg_wd, gate, beta1, beta2, eps,
            c1, c2, grad_scale)
    gs = np.abs(g) * grad_scale
    assert_close(ours[2], theirs[2], np.abs(m) + gs + np.abs(theirs[2]), dtype, "exp_avg")
    assert_close(ours[3], theirs[3], np.abs(v) + gs * gs + np.abs(theirs[3]), dtype, "exp_avg_sq")
    # r = m*c1/(sqrt(v*c2) + eps) + wd*p: m's cancellation error carried through, plus |r|, |wd*p|
    r_scale = c1 * moment_error_scale(m, gs, theirs[2], theirs[3] * c2, eps)
    assert_close(ours[4], theirs[4], np.abs(theirs[4]) + 0.02 * np.abs(p) + r_scale, dtype, "update r")
    np.testing.assert_array_equal(ours[0], p)  # pass 1 does not move the parameters
    assert sq_numba.shape == sq_numpy.shape == (S, 2) and sq_numba.dtype == np.float64
    np.testing.assert_allclose(sq_numba[:, 0], sq_numpy[:, 0], rtol=1e-12, err_msg="||p||^2")
    # ||r||^2 is checked against the kernel's own r (r itself was compared elementwise above)
    own = [float(np.sum(ours[4][a:b].astype(np.float64) ** 2)) for a, b in zip(starts, stops)]
    np.testing.assert_allclose(sq_numba[:, 1], own, rtol=1e-12, err_msg="||r||^2")
    assert_padding_untouched(r, ours[4], starts, stops)


@pytest.mark.parametrize("threads", [1, 4])
@EXAMPLES
@given(n=sizes, dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_lamb_apply_matches_twin(threads, n, dtype, seed):
    rng = np.random.default_rng(seed)
    starts, stops = layout(n, rng)
    seg_scale = rng.uniform(0, 1e-2, starts.size) * rng.uniform(0.1, 10, starts.size)
    p, r = flat(rng, n, dtype), flat(rng, n, dtype)
    with num_threads(threads):
        ours, theirs, _, _ = run_both("lamb_apply", [p, r], starts, stops, seg_scale)
    assert_close(ours[0], theirs[0], np.abs(p) + np.abs(theirs[0]), dtype, "param")
    assert_padding_untouched(p, ours[0], starts, stops)


@pytest.mark.parametrize("threads", [1, 4])
@EXAMPLES
@given(n=st.one_of(st.integers(0, 3000), st.integers(70_000, 200_000)), dtype=dtypes,
       seed=st.integers(0, 2**32 - 1), log_scale=st.floats(-20, 20))
def test_squared_norm_matches_twin(threads, n, dtype, seed, log_scale):
    x = flat(np.random.default_rng(seed), n, dtype, 10.0**log_scale)
    with num_threads(threads):
        ours = K.squared_norm.numba(x)
    theirs = K.squared_norm.numpy(x)
    assert isinstance(ours, float) and isinstance(theirs, float)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_large_sizes_really_use_several_chunks():
    with num_threads(4):
        assert len(row_chunks(70_000, 1)) == 2
        assert len(row_chunks(200_000, 1)) == 4
    with num_threads(1):
        assert len(row_chunks(200_000, 1)) == 1


def test_float32_squares_accumulate_in_float64():
    # 1e6 copies of 0.1f: a float32 running sum drifts by ~1e-3 relative; float64 does not.
    x = np.full(1_000_000, 0.1, np.float32)
    exact = 1_000_000 * float(np.float32(0.1)) ** 2
    assert K.squared_norm(x) == pytest.approx(exact, rel=1e-12)


def test_kernels_are_registered_with_their_twins():
    for name in ("sgd_update", "adamw_update", "lamb_moments", "lamb_apply", "squared_norm"):
        assert REGISTRY[name].numpy is getattr(K, name + "_numpy")
    x = np.arange(5.0)
    with use_numpy_twins():
        assert K.squared_norm(x) == 30.0


@pytest.mark.parametrize("impl", ["numba", "numpy"])
def test_dtype_and_shape_errors_name_the_argument(impl):
    f = getattr(K.adamw_update, impl)
    p = np.zeros(8, np.float32)
    seg = (np.array([0]), np.array([8]), np.ones(1), np.ones(1), np.ones(1, bool), 0.9, 0.999, 1e-8, 1.0, 1.0)
    with pytest.raises(TypeError, match="grad has dtype float64"):
        f(p, np.zeros(8), p.copy(), p.copy(), *seg)
    with pytest.raises(TypeError, match="float32 or float64"):
        f(p.astype(np.float16), *(p.astype(np.float16),) * 3, *seg)
    with pytest.raises(ValueError, match="exp_avg_sq has shape"):
        f(p, p.copy(), p.copy(), np.zeros(7, np.float32), *seg)
    with pytest.raises(ValueError, match="segments"):
        f(p, p.copy(), p.copy(), p.copy(), np.array([0]), np.array([9]), *seg[2:])
