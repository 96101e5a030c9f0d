"""The output distillation losses (MLM distillation, soft cross-entropy, hidden-state MSE):
finite-difference gradient checks (float64, 1e-6), cases worked out by hand and an independent
loop-by-loop reference; and, for every distillation loss, the teacher as a constant, float32
against float64, and errors that name the argument. The layer-wise losses' own checks:
tests/test_distill_layerwise.py.

The references are written element by element with ``math`` (no shared code with the package).
"""

import math

import numpy as np
import pytest
from conftest import assert_gradcheck

from tinymobilebert import distill


def states(rng, B=2, T=5, H=7, scale=1.0, shift=0.0):
    return rng.standard_normal((B, T, H)) * scale + shift


def ref_softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [v / sum(e) for v in e]


def ref_log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def ref_mixed_ce(s, t, labels, alpha, temperature=1.0, eps=1e-5):
    total, count = 0.0, 0
    for m in range(s.shape[0]):
        if labels[m] == -100:
            continue
        log_q = ref_log_softmax([x / temperature for x in s[m]])
        p = ref_softmax([x / temperature for x in t[m]])
        target = [alpha * (v == labels[m]) + (1 - alpha) * p[v] for v in range(len(p))]
        total += sum(-w * lq for w, lq in zip(target, log_q) if w > 0)
        count += 1
    return total / (count + eps)


# ------------------------------------------------------------------------ MLM distillation
def test_mlm_distillation_hand_case():
    # student softmax [3/4, 1/4]; teacher softmax [3/4, 1/4]; label 0; alpha 0.5 -> q = [7/8, 1/8]
    s = np.array([[math.log(3), 0.0], [5.0, -5.0]])
    t = np.array([[math.log(3), 0.0], [0.0, 0.0]])
    labels = np.array([0, -100])  # the second row does not count
    ce = -(7 / 8 * math.log(3 / 4) + 1 / 8 * math.log(1 / 4))
    loss, c = distill.mlm_distillation_forward(s, t, labels, alpha=0.5)
    assert loss == pytest.approx(ce / (1 + 1e-5), rel=1e-13)  # the original's sum / (count + 1e-5)
    assert distill.mlm_distillation_forward(s, t, labels, reduction="mean")[0] == pytest.approx(ce, rel=1e-13)
    g = distill.mlm_distillation_backward(1.0, c)  # (softmax(s) - q) / (1 + 1e-5), 0 on the ignored row
    np.testing.assert_allclose(g, [[(3 / 4 - 7 / 8) / (1 + 1e-5), (1 / 4 - 1 / 8) / (1 + 1e-5)], [0, 0]], rtol=1e-12)
    # alpha = 1 is plain MLM cross-entropy, alpha = 0 pure distillation
    assert distill.mlm_distillation_forward(s, t, labels, 1.0, reduction="mean")[0] == pytest.approx(-math.log(3 / 4))
    assert distill.mlm_distillation_forward(s, t, labels, 0.0, reduction="mean")[0] == pytest.approx(
        -(3 / 4 * math.log(3 / 4) + 1 / 4 * math.log(1 / 4)))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("reduction", ["original", "mean"])
def test_mlm_distillation_gradcheck_and_reference(alpha, temperature, reduction):
    rng = np.random.default_rng(7)
    M, V = 6, 11
    s, t = rng.standard_normal((M, V)) * 2, rng.standard_normal((M, V)) * 3
    labels = rng.integers(0, V, M)
    labels[[1, 4]] = -100
    loss, c = distill.mlm_distillation_forward(s, t, labels, alpha, temperature, reduction)
    eps = 1e-5 if reduction == "original" else 0.0
    assert loss == pytest.approx(ref_mixed_ce(s, t, labels, alpha, temperature, eps), rel=1e-12)
    g = distill.mlm_distillation_backward(1.3, c)
    assert np.all(g[[1, 4]] == 0)
    assert_gradcheck(lambda: 1.3 * distill.mlm_distillation_forward(s, t, labels, alpha, temperature, reduction)[0],
                     {"s": s}, {"s": g})


def test_mlm_distillation_shapes_and_empty_batch():
    rng = np.random.default_rng(8)
    s, t = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))  # (B, T, V) with (B, T) labels
    labels = np.full((2, 3), -100)
    loss, c = distill.mlm_distillation_forward(s, t, labels)
    g = distill.mlm_distillation_backward(1.0, c)
    assert loss == 0.0 and g.shape == s.shape and np.all(g == 0)  # no labelled row: 0, no nan
    labels[1, 2] = 4
    loss, _ = distill.mlm_distillation_forward(s, t, labels, reduction="mean")
    assert loss == pytest.approx(ref_mixed_ce(s.reshape(6, 5), t.reshape(6, 5), labels.reshape(6), 0.5, 1.0, 0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlm_distillation_large_logits(dtype):
    rng = np.random.default_rng(9)
    s = (rng.standard_normal((5, 300)) * 1e4).astype(dtype)
    t = (rng.standard_normal((5, 300)) * 1e4).astype(dtype)
    labels = rng.integers(0, 300, 5)
    loss, c = distill.mlm_distillation_forward(s, t, labels)
    g = distill.mlm_distillation_backward(1.0, c)
    assert np.isfinite(loss) and g.dtype == dtype and np.all(np.isfinite(g))
    ref = ref_mixed_ce(s.astype(np.float64), t.astype(np.float64), labels, 0.5)
    assert loss == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------------------------ soft cross-entropy, hidden MSE
def test_soft_cross_entropy_hand_case():
    # teacher [ln 3, 0] -> p = [3/4, 1/4]; student [0, 0] -> log q = -ln 2 each: loss ln 2 per row
    s = np.zeros((2, 2))
    t = np.array([[math.log(3), 0.0], [0.0, math.log(3)]])
    loss, c = distill.soft_cross_entropy_forward(s, t)
    assert loss == pytest.approx(math.log(2), rel=1e-14)
    np.testing.assert_allclose(distill.soft_cross_entropy_backward(1.0, c),
                               [[(0.5 - 0.75) / 2, (0.5 - 0.25) / 2], [0.125, -0.125]], rtol=1e-13)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_cross_entropy_gradcheck_and_reference(temperature):
    rng = np.random.default_rng(10)
    s, t = rng.standard_normal((4, 3)) * 2, rng.standard_normal((4, 3)) * 2
    loss, c = distill.soft_cross_entropy_forward(s, t, temperature)
    ref = sum(-sum(p * math.log(q) for p, q in zip(ref_softmax(list(t[b] / temperature)),
                                                   ref_softmax(list(s[b] / temperature)))) for b in range(4)) / 4
    assert loss == pytest.approx(ref, rel=1e-13)
    g = distill.soft_cross_entropy_backward(0.9, c)
    assert_gradcheck(lambda: 0.9 * distill.soft_cross_entropy_forward(s, t, temperature)[0], {"s": s}, {"s": g})


def test_hidden_mse_hand_case_and_gradcheck():
    h_s = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    h_t = np.array([[[1.0, 0.0, 3.0], [0.0, 0.0, 1.0]]])  # differences 2 and -1: (4 + 1) / 6
    loss, c = distill.hidden_mse_forward(h_s, h_t)
    assert loss == pytest.approx(5.0 / 6.0, rel=1e-15)
    np.testing.assert_allclose(distill.hidden_mse_backward(1.0, c), [[[0, 4 / 6, 0], [0, 0, -2 / 6]]], rtol=1e-15)
    rng = np.random.default_rng(11)
    h_s, h_t = states(rng), states(rng)
    g = distill.hidden_mse_backward(2.0, distill.hidden_mse_forward(h_s, h_t)[1])
    assert_gradcheck(lambda: 2.0 * distill.hidden_mse_forward(h_s, h_t)[0], {"h_s": h_s}, {"h_s": g})


# ------------------------------------------------------------------------ every loss: teacher, dtypes
def all_losses(rng, dtype):
    """(name, forward(student) -> (loss, cache), backward(cache) -> grad, student, teacher)."""
    h_s, h_t = states(rng).astype(dtype), states(rng, scale=2.0).astype(dtype)
    s_s, s_t = rng.standard_normal((2, 2, 4, 4)).astype(dtype), rng.standard_normal((2, 2, 4, 4)).astype(dtype)
    l_s, l_t = rng.standard_normal((6, 9)).astype(dtype), rng.standard_normal((6, 9)).astype(dtype)
    labels = np.array([1, -100, 3, 8, -100, 0])
    return [
        ("fmt", lambda x, y: distill.feature_map_transfer_forward(x, y),
         lambda c: distill.feature_map_transfer_backward(1.0, c), h_s, h_t),
        ("at", lambda x, y: distill.attention_transfer_forward(x, y),
         lambda c: distill.attention_transfer_backward(1.0, c), s_s, s_t),
        ("mv", lambda x, y: distill.mean_variance_transfer_forward(x, y),
         lambda c: distill.mean_variance_transfer_backward(1.0, 1.0, c), h_s, h_t),
        ("mlm", lambda x, y: distill.mlm_distillation_forward(x, y, labels),
         lambda c: distill.mlm_distillation_backward(1.0, c), l_s, l_t),
        ("soft_ce", lambda x, y: distill.soft_cross_entropy_forward(x, y),
         lambda c: distill.soft_cross_entropy_backward(1.0, c), l_s, l_t),
        ("hidden_mse", lambda x, y: distill.hidden_mse_forward(x, y),
         lambda c: distill.hidden_mse_backward(1.0, c), h_s, h_t),
    ]


def test_teacher_is_a_constant():
    """Read-only teacher arrays work, are left unchanged, and the backward returns only the
    student's gradient (one array, the student's shape)."""
    rng = np.random.default_rng(12)
    for name, fwd, bwd, x, y in all_losses(rng, np.float64):
        y_before = y.copy()
        y.flags.writeable = False
        loss, c = fwd(x, y)
        g = bwd(c)
        assert isinstance(g, np.ndarray) and g.shape == x.shape, name
        np.testing.assert_array_equal(y, y_before, err_msg=name)
        values = loss if isinstance(loss, tuple) else (loss,)
        assert all(type(v) is float for v in values), name


def test_float32_matches_float64():
    """float32 students: float32 gradients, close to the float64 computation (never by finite differences)."""
    for (name, fwd, bwd, x, y), (_, _, _, x64, y64) in zip(all_losses(np.random.default_rng(13), np.float32),
                                                            all_losses(np.random.default_rng(13), np.float64)):
        l32, c32 = fwd(x, y)
        l64, c64 = fwd(x64, y64)
        g32, g64 = bwd(c32), bwd(c64)
        assert g32.dtype == np.float32, name
        np.testing.assert_allclose(np.ravel(l32), np.ravel(l64), rtol=2e-6, err_msg=name)
        np.testing.assert_allclose(g32, g64, rtol=0, atol=2e-6 * np.abs(g64).max(), err_msg=name)


# ------------------------------------------------------------------------ bad arguments
def test_errors_name_the_argument():
    rng = np.random.default_rng(14)
    h = states(rng)
    s = rng.standard_normal((2, 2, 5, 5))
    cases = [
        (lambda: distill.feature_map_transfer_forward(h, h[:, :4]), ValueError, "h_t must have the shape of h_s"),
        (lambda: distill.feature_map_transfer_forward(h[0], h[0]), ValueError, "h_s must have 3 dimensions"),
        (lambda: distill.feature_map_transfer_forward(h.astype(int), h), TypeError, "h_s must be a float32 or float64"),
        (lambda: distill.feature_map_transfer_forward(h, h, np.ones((2, 4))), ValueError, "attention_mask must have shape"),
        (lambda: distill.feature_map_transfer_forward(h, h, np.full((2, 5), 2)), ValueError, "only 0"),
        (lambda: distill.feature_map_transfer_forward(h, h, eps=0.0), ValueError, "eps must be"),
        (lambda: distill.attention_transfer_forward(s, s, form="js"), ValueError, "form must be one of"),
        (lambda: distill.attention_transfer_forward(s, s[..., :4]), ValueError, "s_t must have the shape of s_s"),
        (lambda: distill.attention_transfer_forward(s[..., :4], s[..., :4]), ValueError, "self-attention scores"),
        (lambda: distill.mean_variance_transfer_forward(h, h, teacher_layers="every"), ValueError, "teacher_layers"),
        (lambda: distill.mlm_distillation_forward(h[0], h[0], [0, 1]), ValueError, "labels must have shape"),
        (lambda: distill.mlm_distillation_forward(h[0], h[0], [0, 1, 2, 3, 9]), ValueError, r"labels must be in \[0, 7\)"),
        (lambda: distill.mlm_distillation_forward(h[0], h[0], [0] * 5, alpha=1.5), ValueError, "alpha must be"),
        (lambda: distill.mlm_distillation_forward(h[0], h[0], [0] * 5, temperature=0), ValueError, "temperature must be"),
        (lambda: distill.mlm_distillation_forward(h[0], h[0], [0] * 5, reduction="sum"), ValueError, "reduction must be"),
        (lambda: distill.soft_cross_entropy_forward(h[0], h[0], temperature=-1.0), ValueError, "temperature must be"),
        (lambda: distill.hidden_mse_forward(h, h[:1]), ValueError, "h_t must have the shape of h_s"),
        (lambda: distill.feature_map_transfer_backward("x", distill.feature_map_transfer_forward(h, h)[1]),
         ValueError, "dloss must be a number"),
        (lambda: distill.mean_variance_transfer_backward(1.0, [1.0, 2.0], distill.mean_variance_transfer_forward(h, h)[1]),
         ValueError, "dvar must be a number"),
    ]
    for call, err, msg in cases:
        with pytest.raises(err, match=msg):
            call()
