"""The layer-wise distillation losses (feature-map, attention, mean/variance transfer):
finite-difference gradient checks (float64, 1e-6), cases worked out by hand, an independent
loop-by-loop reference, padding and extreme values. The output losses, dtypes, the teacher as a
constant and bad arguments: tests/test_distill_losses.py.

The reference implementations here are written element by element with ``math`` (no shared
code with the package), so they check the definitions, not just the vectorisation.
"""

import math

import numpy as np
import pytest
from conftest import assert_gradcheck

from tinymobilebert import distill

F64_MIN = np.finfo(np.float64).min


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


def test_padding_aware_forms_equal_the_original_without_padding():
    rng = np.random.default_rng(15)
    ones = np.ones((2, 5))
    s_s, s_t = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 5, 5))
    h_s, h_t = states(rng), states(rng)
    for form in ("original", "kl"):
        a = distill.attention_transfer_forward(s_s, s_t, form=form)[0]
        assert distill.attention_transfer_forward(s_s, s_t, ones, form)[0] == pytest.approx(a, rel=1e-14)
    a = distill.feature_map_transfer_forward(h_s, h_t)[0]
    assert distill.feature_map_transfer_forward(h_s, h_t, ones)[0] == pytest.approx(a, rel=1e-14)
    a = distill.mean_variance_transfer_forward(h_s, h_t)[0]
    assert distill.mean_variance_transfer_forward(h_s, h_t, ones)[0] == pytest.approx(a, rel=1e-14)


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


