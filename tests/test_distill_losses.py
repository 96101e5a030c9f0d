"""The distillation losses: finite-difference gradient checks (float64, 1e-6), cases worked out by
hand, an independent loop-by-loop reference, padding, extreme values, dtypes and bad arguments.

The reference implementations here are written element by element with ``math`` (no shared
code with the package), so they check the definitions, not just the vectorisation.
"""

import math

import numpy as np
import pytest

from tinymobilebert import distill
from tinymobilebert.gradcheck import check_arrays

TOL = 1e-6
F64_MIN = np.finfo(np.float64).min


def assert_gradcheck(f, arrays, analytic, names=None, max_entries=40):
    report = check_arrays(f, arrays, analytic, names=names, max_entries=max_entries, tol=TOL)
    assert report.ok(), "\n" + str(report)
    assert all(not c.zero_gradient for c in report.checks), "\n" + str(report)  # a check that can fail


def states(rng, B=2, T=5, H=7, scale=1.0, shift=0.0):
    return rng.standard_normal((B, T, H)) * scale + shift


# ------------------------------------------------------------------------ references (by loops)
def ref_layer_norm(row, eps=1e-12):
    mu = sum(row) / len(row)
    var = sum((x - mu) ** 2 for x in row) / len(row)
    return [(x - mu) / math.sqrt(var + eps) for x in row]


def ref_fmt(h_s, h_t, mask=None):
    B, T, H = h_s.shape
    total, count = 0.0, 0
    for b in range(B):
        for t in range(T):
            if mask is not None and mask[b, t] == 0:
                continue
            xs, xt = ref_layer_norm(list(h_s[b, t])), ref_layer_norm(list(h_t[b, t]))
            total += sum((a - c) ** 2 for a, c in zip(xs, xt))
            count += H
    return total / count


def ref_softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [v / sum(e) for v in e]


def ref_at(s_s, s_t, mask=None, kl=False):
    B, A, T, _ = s_s.shape
    total, rows = 0.0, 0
    for b in range(B):
        keys = [j for j in range(T) if mask is None or mask[b, j]]
        for a in range(A):
            for t in range(T):
                if mask is not None and not mask[b, t]:
                    continue
                p = ref_softmax([s_t[b, a, t, j] for j in keys])
                q = ref_softmax([s_s[b, a, t, j] for j in keys])
                total += sum(-pj * math.log(qj) + (pj * math.log(pj) if kl else 0.0)
                             for pj, qj in zip(p, q) if pj > 0)  # 0 log 0 := 0
                rows += 1
    return total / rows


def ref_moments(row):
    mu = sum(row) / len(row)
    return mu, sum((x - mu) ** 2 for x in row) / len(row)


def ref_mv(h_s, teachers):
    B, T, _ = h_s.shape
    beta = gamma = 0.0
    for h_t in teachers:
        for b in range(B):
            for t in range(T):
                ms, vs = ref_moments(list(h_s[b, t]))
                mt, vt = ref_moments(list(h_t[b, t]))
                beta += (mt - ms) ** 2
                gamma += abs(vt - vs)
    n = len(teachers) * B * T
    return beta / n, gamma / n


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


# ------------------------------------------------------------------------ feature-map transfer
def test_fmt_hand_case():
    # row 0: LN([1,2,3]) = [-1,0,1]*sqrt(3/2) against LN([3,2,1]), its reverse: squares 6, 0, 6
    # row 1: [5,5,11] = 2*[0,0,3] + 5, an affine image: LN is the same, difference 0
    h_s = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]]])
    h_t = np.array([[[3.0, 2.0, 1.0], [5.0, 5.0, 11.0]]])
    loss, _ = distill.feature_map_transfer_forward(h_s, h_t)
    assert loss == pytest.approx(12.0 / 6.0, rel=1e-10)  # mean over B*T*H = 6 entries, padding included
    loss, _ = distill.feature_map_transfer_forward(h_s, h_t, attention_mask=np.array([[1, 0]]))
    assert loss == pytest.approx(12.0 / 3.0, rel=1e-10)  # over the real token's 3 entries
    loss, c = distill.feature_map_transfer_forward(h_s, h_t, attention_mask=np.array([[0, 1]]))
    assert loss == pytest.approx(0.0, abs=1e-20)
    assert np.all(distill.feature_map_transfer_backward(1.0, c)[0, 0] == 0)


@pytest.mark.parametrize("masked", [False, True])
def test_fmt_gradcheck_and_reference(masked):
    rng = np.random.default_rng(0)
    h_s, h_t = states(rng, shift=0.3), states(rng, scale=3.0, shift=-1.0)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]) if masked else None
    loss, c = distill.feature_map_transfer_forward(h_s, h_t, mask)
    assert loss == pytest.approx(ref_fmt(h_s, h_t, mask), rel=1e-12)
    g = distill.feature_map_transfer_backward(0.7, c)
    assert_gradcheck(lambda: 0.7 * distill.feature_map_transfer_forward(h_s, h_t, mask)[0], {"h_s": h_s}, {"h_s": g})
    if masked:
        assert np.all(g[0, 3:] == 0)  # padded tokens: no gradient
        h_s2 = h_s.copy()
        h_s2[0, 3:] = 100.0  # and their values do not matter
        assert distill.feature_map_transfer_forward(h_s2, h_t, mask)[0] == pytest.approx(loss, rel=1e-14)


def test_fmt_matches_its_layer_norm():
    rng = np.random.default_rng(1)
    h_s, h_t = states(rng), states(rng)
    ln_s, ln_t = distill.parameter_free_layer_norm(h_s), distill.parameter_free_layer_norm(h_t)
    assert np.allclose(ln_s.mean(-1), 0) and np.allclose(ln_s.var(-1), 1)
    loss, _ = distill.feature_map_transfer_forward(h_s, h_t)
    assert loss == pytest.approx(np.mean((ln_s - ln_t) ** 2), rel=1e-12)


# ------------------------------------------------------------------------ attention transfer
def test_at_hand_case():
    # row 0: teacher uniform p = [1/2, 1/2], student q = softmax([0, ln 3]) = [1/4, 3/4]
    # row 1: teacher p = [3/4, 1/4], student uniform q = [1/2, 1/2]
    s_t = np.array([[[[0.0, 0.0], [math.log(3), 0.0]]]])  # (B, A, T, T) = (1, 1, 2, 2)
    s_s = np.array([[[[0.0, math.log(3)], [0.0, 0.0]]]])
    ce0 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    ce1 = math.log(2)
    ent0 = math.log(2)
    ent1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    loss, c = distill.attention_transfer_forward(s_s, s_t)
    assert loss == pytest.approx((ce0 + ce1) / 2, rel=1e-13)
    kl, _ = distill.attention_transfer_forward(s_s, s_t, form="kl")
    assert kl == pytest.approx((ce0 - ent0 + ce1 - ent1) / 2, rel=1e-12)
    g = distill.attention_transfer_backward(1.0, c)  # (q - p) / rows
    np.testing.assert_allclose(g[0, 0], [[-0.125, 0.125], [-0.125, 0.125]], rtol=1e-13)
    # padding-aware, second token padded: one query row, one key: p = q = [1], loss 0
    loss, c = distill.attention_transfer_forward(s_s, s_t, attention_mask=np.array([[1, 0]]))
    assert loss == pytest.approx(0.0, abs=1e-15)
    assert np.all(distill.attention_transfer_backward(1.0, c) == 0)


def masked_scores(rng, B, A, T, mask, how):
    """Scores as the models return them: transformers adds finfo.min, the original replaces by -6."""
    s = rng.standard_normal((B, A, T, T)) * 2.0
    keep = mask[:, None, None, :] > 0
    if how == "finfo":
        return s + (1 - mask[:, None, None, :]) * F64_MIN
    return np.where(keep, s, -6.0)


@pytest.mark.parametrize("form", ["original", "kl"])
@pytest.mark.parametrize("masking", ["none", "finfo", "minus6"])
@pytest.mark.parametrize("padding_aware", [False, True])
def test_at_gradcheck_and_reference(form, masking, padding_aware):
    rng = np.random.default_rng(2)
    B, A, T = 2, 3, 5
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]) if masking != "none" else np.ones((B, T), int)
    s_s = masked_scores(rng, B, A, T, mask, masking)
    s_t = masked_scores(rng, B, A, T, mask, masking)
    am = mask if padding_aware else None
    loss, c = distill.attention_transfer_forward(s_s, s_t, am, form)
    assert np.isfinite(loss)
    assert loss == pytest.approx(ref_at(s_s, s_t, am, form == "kl"), rel=1e-12)
    g = distill.attention_transfer_backward(0.3, c)
    assert np.all(np.isfinite(g))
    assert_gradcheck(lambda: 0.3 * distill.attention_transfer_forward(s_s, s_t, am, form)[0], {"s_s": s_s}, {"s_s": g})
    if padding_aware and masking != "none":
        assert np.all(g[0, :, 3:] == 0) and np.all(g[0, :, :, 3:] == 0)  # padded queries and keys left out


def test_at_original_form_counts_padding_and_minus6_keys():
    """Faithful form: padded query rows count in the mean; with -6 masking padded keys carry weight."""
    rng = np.random.default_rng(3)
    mask = np.array([[1, 1, 1, 0]])
    s_s, s_t = masked_scores(rng, 1, 2, 4, mask, "minus6"), masked_scores(rng, 1, 2, 4, mask, "minus6")
    orig, c = distill.attention_transfer_forward(s_s, s_t)
    aware, _ = distill.attention_transfer_forward(s_s, s_t, attention_mask=mask)
    assert orig != pytest.approx(aware)
    assert np.all(distill.attention_transfer_backward(1.0, c)[0, :, :, 3] != 0)  # -6 keys are pulled too
    # finfo.min masking: padded keys weigh 0 in both models, so no gradient reaches them ...
    s_s, s_t = masked_scores(rng, 1, 2, 4, mask, "finfo"), masked_scores(rng, 1, 2, 4, mask, "finfo")
    orig, c = distill.attention_transfer_forward(s_s, s_t)
    assert np.all(distill.attention_transfer_backward(1.0, c)[0, :, :, 3] == 0)
    # ... but the padded query row still counts: changing it moves the original form only
    aware, _ = distill.attention_transfer_forward(s_s, s_t, attention_mask=mask)
    s_s2 = s_s.copy()
    s_s2[0, :, 3, :3] += rng.standard_normal((2, 3))
    assert distill.attention_transfer_forward(s_s2, s_t)[0] != pytest.approx(orig)
    assert distill.attention_transfer_forward(s_s2, s_t, attention_mask=mask)[0] == pytest.approx(aware, rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_at_extremes_are_finite(dtype):
    """finfo.min and -inf masks, an all-masked (uniform) row, scores of 1e4: no nan, no inf."""
    rng = np.random.default_rng(4)
    mn = np.finfo(dtype).min
    s_s = (rng.standard_normal((2, 2, 4, 4)) * 1e4).astype(dtype)
    s_t = (rng.standard_normal((2, 2, 4, 4)) * 1e4).astype(dtype)
    s_s[0, :, :, 2:] = mn
    s_t[0, :, :, 2:] = mn
    s_s[1, :, :, 3] = -np.inf
    s_t[1, :, :, 3] = -np.inf
    s_s[1, 0, 0, :] = mn  # a fully padded row in transformers' convention: uniform in both
    s_t[1, 0, 0, :] = mn
    for form in ("original", "kl"):
        loss, c = distill.attention_transfer_forward(s_s, s_t, form=form)
        g = distill.attention_transfer_backward(1.0, c)
        assert np.isfinite(loss) and g.dtype == dtype and np.all(np.isfinite(g))
    # shift invariance per row: adding a constant to the student's scores changes nothing
    loss64, _ = distill.attention_transfer_forward(s_s.astype(np.float64), s_t.astype(np.float64))
    shifted = s_s.astype(np.float64) + 1e3
    shifted[np.isinf(s_s)] = -np.inf
    shifted[s_s == mn] = F64_MIN
    assert distill.attention_transfer_forward(shifted, s_t.astype(np.float64))[0] == pytest.approx(loss64, rel=1e-9)


# ------------------------------------------------------------------------ mean / variance transfer
def test_mv_hand_case():
    # [1,2,3]: mean 2, variance 2/3; [2,4,6]: mean 4, variance 8/3  ->  beta 4, gamma 2
    h_s = np.array([[[1.0, 2.0, 3.0]]])
    h_t = np.array([[[2.0, 4.0, 6.0]]])
    (beta, gamma), _ = distill.mean_variance_transfer_forward(h_s, h_t)
    assert (beta, gamma) == (pytest.approx(4.0, rel=1e-13), pytest.approx(2.0, rel=1e-13))
    # all teacher layers: [2,4,6] and [1,1,1] (mean 1, variance 0): beta = (4 + 1) / 2, gamma = (2 + 2/3) / 2
    (beta, gamma), _ = distill.mean_variance_transfer_forward(h_s, [h_t, np.ones((1, 1, 3))], teacher_layers="all")
    assert (beta, gamma) == (pytest.approx(2.5, rel=1e-13), pytest.approx(4.0 / 3.0, rel=1e-13))


@pytest.mark.parametrize("teacher_layers", ["same", "all"])
@pytest.mark.parametrize("masked", [False, True])
def test_mv_gradcheck_and_reference(teacher_layers, masked):
    rng = np.random.default_rng(5)
    # teacher states with larger variance and another mean: |var_t - var_s| stays far from its kink
    h_s = states(rng, shift=0.2)
    teachers = [states(rng, scale=2.0 + j, shift=1.0 - j) for j in range(3 if teacher_layers == "all" else 1)]
    h_t = teachers if teacher_layers == "all" else teachers[0]
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]) if masked else None
    (beta, gamma), c = distill.mean_variance_transfer_forward(h_s, h_t, mask, teacher_layers)
    if not masked:
        rb, rg = ref_mv(h_s, teachers)
        assert beta == pytest.approx(rb, rel=1e-12) and gamma == pytest.approx(rg, rel=1e-12)
    g = distill.mean_variance_transfer_backward(0.6, 1.7, c)

    def f():
        (b, gm), _ = distill.mean_variance_transfer_forward(h_s, h_t, mask, teacher_layers)
        return 0.6 * b + 1.7 * gm

    assert_gradcheck(f, {"h_s": h_s}, {"h_s": g})
    if masked:
        assert np.all(g[0, 2:] == 0)


def test_mv_all_layers_accepts_a_stack_and_checks_each_state():
    rng = np.random.default_rng(6)
    h_s = states(rng)
    stack = np.stack([states(rng) for _ in range(3)])
    a, _ = distill.mean_variance_transfer_forward(h_s, stack, teacher_layers="all")
    b, _ = distill.mean_variance_transfer_forward(h_s, list(stack), teacher_layers="all")
    assert a == b
    with pytest.raises(ValueError, match=r"h_t\[1\] must have the shape of h_s"):
        distill.mean_variance_transfer_forward(h_s, [stack[0], stack[1][:, :3]], teacher_layers="all")
    with pytest.raises(ValueError, match="list of all the teacher's hidden states"):
        distill.mean_variance_transfer_forward(h_s, stack[0], teacher_layers="all")


def test_mv_subgradient_at_the_kink_is_zero():
    """Equal variances: |var_t - var_s| has a kink; the gradient used there is sign(0) = 0."""
    h = np.array([[[1.0, 2.0, 3.0]]])
    (_, gamma), c = distill.mean_variance_transfer_forward(h, h + 5.0)  # same variance, other mean
    assert gamma == 0.0
    assert np.all(distill.mean_variance_transfer_backward(0.0, 1.0, c) == 0)


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
