"""The optimizers against per-tensor reference formulas written out here, step by step.

The references loop over ``store.params`` by name with plain float64 NumPy, one tensor at a
time (not the flat kernels, not the per-segment arrays), and implement the formulas as their
sources state them: torch.optim.AdamW, MobileBERT's ``lamb_optimizer.py``, torch's SGD with a
decoupled decay. Tolerance 1e-12 (float64) after many steps: each step adds a few ulps.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tinymobilebert.optim import (SGD, AdamW, ConstantSchedule, LAMB, LinearWarmupDecay,
                                  PolynomialDecay, clip_grad_norm, default_no_decay)
from tinymobilebert.params import ParameterStore

LAYER0 = "mobilebert.encoder.layer.0"
SHAPES = {
    # (300, 256) = 76,800 elements: more than two 32k chunks, so a chunk boundary falls inside it
    "mobilebert.embeddings.word_embeddings.weight": (300, 256),
    "mobilebert.embeddings.embedding_transformation.weight": (16, 24),
    "mobilebert.embeddings.embedding_transformation.bias": (16,),
    "mobilebert.embeddings.LayerNorm.weight": (16,),
    "mobilebert.embeddings.LayerNorm.bias": (16,),
    f"{LAYER0}.attention.self.query.weight": (8, 8),
    f"{LAYER0}.attention.self.query.bias": (8,),
    f"{LAYER0}.attention.output.LayerNorm.weight": (8,),
    f"{LAYER0}.attention.output.LayerNorm.bias": (8,),
    f"{LAYER0}.intermediate.dense.weight": (32, 8),
    "mobilebert.encoder.layer.1.attention.self.query.weight": (8, 8),
    "cls.predictions.transform.dense.weight": (8, 8),
    "cls.predictions.bias": (300,),
}
FROZEN = f"{LAYER0}.intermediate.dense.weight"


def make_store(dtype=np.float64, seed=0) -> ParameterStore:
    """A small store with MobileBERT names and random, non-trivial parameters."""
    store = ParameterStore(SHAPES, dtype)
    rng = np.random.default_rng(seed)
    for p in store.params.values():
        p[...] = rng.standard_normal(p.shape) * 0.5
    store.params["cls.predictions.bias"][:7] = 0.0  # a tensor may start partly at zero
    return store


def fill_grads(store: ParameterStore, step: int, scale: float = 1.0) -> None:
    """Random gradients that depend only on ``step`` (so two runs can see the same ones)."""
    rng = np.random.default_rng(1000 + step)
    for g in store.grads.values():
        g[...] = rng.standard_normal(g.shape) * scale


def copy_store(store: ParameterStore) -> ParameterStore:
    other = ParameterStore(store.shapes, store.dtype)
    other.data[...] = store.data
    other.grad[...] = store.grad
    return other


# ------------------------------------------------------------------------------ references


def ref_clip(grads: dict, max_norm):
    if max_norm is None:
        return grads
    norm = np.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    coef = min(1.0, max_norm / (norm + 1e-6))
    return {n: g * coef for n, g in grads.items()}


def multiplier(spec, name, step):
    if spec is None:
        return 1.0
    return spec(name, step) if callable(spec) else spec.get(name, 1.0)


def ref_run(kind, store, steps, *, lr, wd, schedule, mults, max_norm, freeze=False, momentum=0.0,
            betas=(0.9, 0.999), eps=1e-6, excluded=default_no_decay, unadapted=None, bias_correction=False):
    """Run ``steps`` updates of optimizer ``kind`` on a dict copy of ``store``; returns (params, state)."""
    params = {n: p.astype(np.float64) for n, p in store.params.items()}
    state = {n: (np.zeros_like(p), np.zeros_like(p)) for n, p in params.items()}
    unadapted = unadapted or excluded
    b1, b2 = betas
    for k in range(steps):
        fill_grads(store, k)
        grads = ref_clip({n: g.astype(np.float64) for n, g in store.grads.items()}, max_norm)
        t = k + 1
        for n, p in params.items():
            g, (m, v) = grads[n], state[n]
            mult = multiplier(mults, n, k)
            lr_s = lr * schedule(k) * mult
            wd_s = 0.0 if excluded(n) else wd
            if kind == "sgd":  # b = mu*b + g; p = p*(1 - lr*wd) - lr*b
                if momentum:
                    m[...] = momentum * m + g
                    g = m
                p[...] = p * (1 - lr_s * wd_s) - lr_s * g
            elif freeze and mult == 0:  # MobileBERT: next_m = gate * (...) with gate 0
                m[...] = 0.0
                v[...] = 0.0
            elif kind == "adamw":  # torch.optim.AdamW, single-tensor path
                p *= 1 - lr_s * wd_s
                m[...] = b1 * m + (1 - b1) * g
                v[...] = b2 * v + (1 - b2) * g * g
                denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
                p -= lr_s / (1 - b1**t) * m / denom
            else:  # LAMB, mobilebert/lamb_optimizer.py
                m[...] = b1 * m + (1 - b1) * g
                v[...] = b2 * v + (1 - b2) * g * g
                mh, vh = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
                r = mh / (np.sqrt(vh) + eps) + wd_s * p
                w_norm, r_norm = np.linalg.norm(p), np.linalg.norm(r)
                ratio = w_norm / r_norm if (w_norm > 0 and r_norm > 0) else 1.0
                if unadapted(n):
                    ratio = 1.0
                p -= lr_s * ratio * r
    return params, state


def opt_run(opt, steps, first=0):
    stats = []
    for k in range(first, first + steps):
        fill_grads(opt.store, k)
        stats.append(opt.step())
    return stats


def assert_matches(store, opt, params, state, rtol=1e-12):
    for n, p in params.items():
        np.testing.assert_allclose(store.params[n], p, rtol=rtol, atol=rtol, err_msg=n)
        a, b = store.slices[n]
        if hasattr(opt, "exp_avg"):
            np.testing.assert_allclose(opt.exp_avg[a:b], state[n][0].ravel(), rtol=rtol, atol=rtol, err_msg=n)
            np.testing.assert_allclose(opt.exp_avg_sq[a:b], state[n][1].ravel(), rtol=rtol, atol=rtol, err_msg=n)


def phase_multipliers(name, step):
    """Like MobileBERT's progressive transfer: layer 0 trains first, layer 1 from step 5."""
    if "layer.1." in name:
        return 0.0 if step < 5 else 3.0
    if name == FROZEN:
        return 0.0
    return 0.1 if "layer.0." in name else 1.0


MULTS = {"none": None, "dict": {FROZEN: 0.0, "cls.predictions.bias": 2.5}, "callable": phase_multipliers}
SCHEDULE = LinearWarmupDecay(warmup_steps=3, total_steps=12, end_factor=0.1)

# ------------------------------------------------------------------------------ vs references


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("max_norm", [None, 5.0])
def test_sgd_matches_reference(momentum, wd, max_norm):
    store = make_store()
    params, state = ref_run("sgd", store, 15, lr=0.05, wd=wd, schedule=SCHEDULE, mults=MULTS["dict"],
                            max_norm=max_norm, momentum=momentum)
    opt = SGD(store, lr=0.05, momentum=momentum, weight_decay=wd, schedule=SCHEDULE,
              lr_multipliers=MULTS["dict"], max_grad_norm=max_norm)
    opt_run(opt, 15)
    assert_matches(store, opt, params, state)
    if momentum:
        for n, (b, _) in state.items():
            a, c = store.slices[n]
            np.testing.assert_allclose(opt.momentum_buffer[a:c], b.ravel(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("mults", ["none", "dict", "callable"])
@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("max_norm", [None, 5.0])
def test_adamw_matches_reference(wd, mults, freeze, max_norm):
    store = make_store()
    kw = dict(lr=1e-2, wd=wd, schedule=SCHEDULE, mults=MULTS[mults], max_norm=max_norm, freeze=freeze)
    params, state = ref_run("adamw", store, 15, betas=(0.9, 0.98), eps=1e-6, **kw)
    opt = AdamW(store, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=wd, schedule=SCHEDULE,
                lr_multipliers=MULTS[mults], max_grad_norm=max_norm, freeze_moments_when_lr_zero=freeze)
    stats = opt_run(opt, 15)
    assert_matches(store, opt, params, state)
    assert [s["step"] for s in stats] == list(range(1, 16))
    assert [s["lr"] for s in stats] == [1e-2 * SCHEDULE(k) for k in range(15)]
    assert ("grad_norm" in stats[0]) == (max_norm is not None)


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("mults", ["none", "callable"])
@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_lamb_matches_reference(wd, mults, freeze, bias_correction):
    store = make_store()
    kw = dict(lr=1e-2, wd=wd, schedule=SCHEDULE, mults=MULTS[mults], max_norm=1.0, freeze=freeze,
              bias_correction=bias_correction)
    params, state = ref_run("lamb", store, 15, **kw)
    opt = LAMB(store, lr=1e-2, weight_decay=wd, schedule=SCHEDULE, lr_multipliers=MULTS[mults],
               max_grad_norm=1.0, freeze_moments_when_lr_zero=freeze, bias_correction=bias_correction)
    opt_run(opt, 15)
    assert_matches(store, opt, params, state)


def test_lamb_layer_adaptation_exclusions_are_separate_from_decay():
    # MobileBERT's regex lists; trust ratio skipped for the query weights too (but they decay)
    patterns = ["teacher", "LayerNorm", "layer_norm", "bias", "FakeLayerNorm"]
    unadapted = patterns + [r"query\.weight$"]
    store = make_store()
    params, state = ref_run("lamb", store, 10, lr=1e-2, wd=0.01, schedule=ConstantSchedule(), mults=None,
                            max_norm=None, unadapted=lambda n: any(re.search(p, n) for p in unadapted))
    opt = LAMB(store, lr=1e-2, weight_decay=0.01, no_decay=patterns, exclude_from_layer_adaptation=unadapted)
    opt_run(opt, 10)
    assert_matches(store, opt, params, state)
    ratios = dict(zip(opt.names, opt.trust_ratios))
    assert ratios[f"{LAYER0}.attention.self.query.weight"] == 1.0
    assert ratios["cls.predictions.bias"] == 1.0
    assert ratios[f"{LAYER0}.intermediate.dense.weight"] != 1.0


def test_lamb_trust_ratio_is_one_for_a_zero_tensor():
    store = make_store()
    store.params[FROZEN][...] = 0.0  # ||p|| = 0 -> ratio 1 (MobileBERT's tf.where fallback)
    opt = LAMB(store, lr=1e-2, weight_decay=0.01)
    opt_run(opt, 1)
    assert dict(zip(opt.names, opt.trust_ratios))[FROZEN] == 1.0


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_float32_tracks_float64(kind):
    Opt = {"adamw": AdamW, "lamb": LAMB}[kind]
    s32 = make_store(np.float32)
    s64 = make_store(np.float64)
    s64.data[...] = s32.data  # the same float32-representable start
    for store in (s32, s64):
        opt = Opt(store, lr=1e-3, weight_decay=0.01, schedule=SCHEDULE, max_grad_norm=1.0)
        opt_run(opt, 20)
        assert store.data.dtype == store.dtype and opt.exp_avg.dtype == store.dtype
    # 20 float32 updates of size ~lr, each with a few ulps of error: ~1e-6 absolute
    np.testing.assert_allclose(s32.data, s64.data, rtol=1e-5, atol=1e-5)


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    store = make_store()
    names = store.names
    tparams = {n: torch.nn.Parameter(torch.from_numpy(store.params[n].copy())) for n in names}
    groups = [{"params": [tparams[n] for n in names if not default_no_decay(n)], "weight_decay": 0.01},
              {"params": [tparams[n] for n in names if default_no_decay(n)], "weight_decay": 0.0}]
    topt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, foreach=False)
    schedule = LinearWarmupDecay(warmup_steps=5, total_steps=20)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, schedule)
    opt = AdamW(store, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, schedule=schedule,
                max_grad_norm=1.0)
    for k in range(20):
        fill_grads(store, k, scale=3.0)
        for n in names:
            tparams[n].grad = torch.from_numpy(store.grads[n].copy())
        tnorm = torch.nn.utils.clip_grad_norm_(list(tparams.values()), 1.0)
        topt.step()
        tsched.step()
        stats = opt.step()
        assert stats["grad_norm"] == pytest.approx(float(tnorm), rel=1e-12)
    for n in names:
        np.testing.assert_allclose(store.params[n], tparams[n].detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=n)
        a, b = store.slices[n]
        np.testing.assert_allclose(opt.exp_avg_sq[a:b], topt.state[tparams[n]]["exp_avg_sq"].numpy().ravel(),
                                   rtol=1e-12, err_msg=n)


# ------------------------------------------------------------------------------ behaviour


def test_freezing_moments_when_the_multiplier_is_zero():
    store = make_store()
    a, b = store.slices[FROZEN]
    before = store.params[FROZEN].copy()
    for freeze in (False, True):
        store2 = copy_store(store)
        opt = AdamW(store2, lr=1e-2, weight_decay=0.01, lr_multipliers={FROZEN: 0.0},
                    freeze_moments_when_lr_zero=freeze)
        opt_run(opt, 3)
        np.testing.assert_array_equal(store2.params[FROZEN], before)  # lr 0: no update, no decay
        assert np.any(opt.exp_avg[a:b] != 0) != freeze  # torch keeps accumulating; gated stays 0
        assert np.all(opt.exp_avg_sq[a:b] == 0) == freeze


def test_first_warmup_step_moves_nothing_but_the_moments():
    store = make_store()
    before = store.data.copy()
    opt = AdamW(store, lr=1e-2, schedule=LinearWarmupDecay(10, 100))
    assert opt_run(opt, 1)[0]["lr"] == 0.0
    np.testing.assert_array_equal(store.data, before)
    assert np.any(opt.exp_avg != 0)


def test_callable_multipliers_are_recomputed_every_step_and_dicts_once():
    calls = []

    def mults(name, step):
        calls.append(step)
        return 1.0

    opt = AdamW(make_store(), lr=1e-3, lr_multipliers=mults)
    opt_run(opt, 3)
    assert sorted(set(calls)) == [0, 1, 2] and len(calls) == 3 * len(SHAPES)
    opt = AdamW(make_store(), lr=1e-3, lr_multipliers={FROZEN: 0.5})
    fixed = opt.multipliers(0)
    assert opt.multipliers(7) is fixed and fixed[opt.names.index(FROZEN)] == 0.5


def test_step_leaves_grads_alone_and_clipping_inside_equals_clipping_outside():
    store_a, store_b = make_store(), make_store()
    opt_a = AdamW(store_a, lr=1e-2, max_grad_norm=1.0)
    opt_b = AdamW(store_b, lr=1e-2)
    for k in range(5):
        fill_grads(store_a, k, scale=3.0)
        fill_grads(store_b, k, scale=3.0)
        grads = store_a.grad.copy()
        norm_a = opt_a.step()["grad_norm"]
        np.testing.assert_array_equal(store_a.grad, grads)
        assert clip_grad_norm(store_b, 1.0) == norm_a
        opt_b.step()
    np.testing.assert_allclose(store_a.data, store_b.data, rtol=1e-12, atol=1e-14)


def test_zero_grad_clears_the_store():
    store = make_store()
    fill_grads(store, 0)
    SGD(store, lr=0.1).zero_grad()
    assert not np.any(store.grad)


def test_default_no_decay():
    assert default_no_decay("mobilebert.embeddings.LayerNorm.weight")
    assert default_no_decay(f"{LAYER0}.attention.output.LayerNorm.bias")
    assert default_no_decay(f"{LAYER0}.attention.self.query.bias")
    assert default_no_decay("cls.predictions.bias")
    assert not default_no_decay(f"{LAYER0}.attention.self.query.weight")
    assert not default_no_decay("mobilebert.embeddings.word_embeddings.weight")
    opt = AdamW(make_store(), lr=1e-3)
    decays = dict(zip(opt.names, opt.decays))
    assert not decays["cls.predictions.bias"] and decays[FROZEN]


# ------------------------------------------------------------------------------ schedules, clipping


def test_linear_warmup_decay_matches_transformers():
    # transformers get_linear_schedule_with_warmup(opt, 3, 10) + LambdaLR, lr 1 (recorded)
    expected = [0.0, 1 / 3, 2 / 3, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0.0, 0.0]
    s = LinearWarmupDecay(3, 10)
    assert [s(k) for k in range(12)] == pytest.approx(expected, abs=1e-15)
    s = LinearWarmupDecay(2, 6, end_factor=0.2)
    assert [s(k) for k in range(8)] == pytest.approx([0, 0.5, 1, 0.8, 0.6, 0.4, 0.2, 0.2])
    assert LinearWarmupDecay(0, 4)(0) == 1.0
    assert ConstantSchedule()(123) == 1.0


def test_polynomial_decay_is_tf_bert_schedule():
    s = PolynomialDecay(total_steps=100, end_factor=1e-4, power=1.0, warmup_steps=10)
    assert s(0) == 0.0 and s(5) == 0.5
    assert s(10) == pytest.approx((1 - 1e-4) * 0.9 + 1e-4)  # decay counted from step 0
    assert s(100) == s(1000) == pytest.approx(1e-4)
    assert PolynomialDecay(4, power=2.0)(2) == pytest.approx(0.25)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm(dtype):
    store = make_store(dtype)
    fill_grads(store, 0)
    grads = {n: g.astype(np.float64) for n, g in store.grads.items()}
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    assert clip_grad_norm(store, norm * 2) == pytest.approx(norm, rel=1e-12)
    for n, g in grads.items():
        np.testing.assert_array_equal(store.grads[n], g.astype(dtype))  # below max: untouched
    assert clip_grad_norm(store, 1.0) == pytest.approx(norm, rel=1e-12)
    assert store.grad.dtype == dtype
    after = np.sqrt(np.sum(store.grad.astype(np.float64) ** 2))
    assert after == pytest.approx(1.0 * norm / (norm + 1e-6), rel=1e-6)
    store.grad[3] = np.inf
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm(store, 1.0, error_if_nonfinite=True)


# ------------------------------------------------------------------------------ exact resume


OPTIMIZERS = {
    "sgd": lambda s: SGD(s, lr=0.05, momentum=0.9, weight_decay=0.01, schedule=SCHEDULE, max_grad_norm=5.0),
    "adamw": lambda s: AdamW(s, lr=1e-2, weight_decay=0.01, schedule=SCHEDULE, max_grad_norm=5.0,
                             lr_multipliers=phase_multipliers, freeze_moments_when_lr_zero=True),
    "lamb": lambda s: LAMB(s, lr=1e-2, schedule=PolynomialDecay(20, 0.01, warmup_steps=3),
                           lr_multipliers=phase_multipliers, max_grad_norm=1.0),
}


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_resume(kind, dtype, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    make = OPTIMIZERS[kind]
    straight = make_store(dtype)
    straight_opt = make(straight)
    opt_run(straight_opt, 20)

    first = make_store(dtype)
    opt = make(first)
    opt_run(opt, 10)
    sd = opt.state_dict()
    arrays = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in sd.items() if not isinstance(v, np.ndarray)}
    assert set(arrays) | set(scalars) == set(sd) and all(isinstance(v, (int, float)) for v in scalars.values())
    safetensors_numpy.save_file(arrays, tmp_path / "opt.safetensors")
    (tmp_path / "opt.json").write_text(json.dumps(scalars))
    loaded = {**safetensors_numpy.load_file(tmp_path / "opt.safetensors"),
              **json.loads((tmp_path / "opt.json").read_text())}

    resumed_store = copy_store(first)
    resumed = make(resumed_store)
    resumed.load_state_dict(loaded)
    assert resumed.step_count == 10
    opt_run(resumed, 10, first=10)
    np.testing.assert_array_equal(resumed_store.data, straight.data)  # bit-identical
    for name in resumed._buffers:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(straight_opt, name))


def test_state_dict_is_a_copy():
    store = make_store()
    opt = AdamW(store, lr=1e-2)
    opt_run(opt, 1)
    sd = opt.state_dict()
    opt_run(opt, 1, first=1)
    assert not np.array_equal(sd["exp_avg"], opt.exp_avg)


# ------------------------------------------------------------------------------ errors


def test_state_dict_from_another_store_is_refused():
    opt = AdamW(make_store(), lr=1e-2)
    opt_run(opt, 2)
    sd = opt.state_dict()
    small = ParameterStore({"cls.predictions.bias": (300,)}, np.float64)
    with pytest.raises(ValueError, match="elements"):
        AdamW(small, lr=1e-2).load_state_dict(sd)
    renamed = ParameterStore({k.replace("query", "key"): v for k, v in SHAPES.items()}, np.float64)
    with pytest.raises(ValueError, match="names or layout"):
        AdamW(renamed, lr=1e-2).load_state_dict(sd)
    with pytest.raises(TypeError, match=r"state_dict\['exp_avg'\] has dtype float64"):
        AdamW(make_store(np.float32), lr=1e-2).load_state_dict(sd)
    bad = dict(sd, exp_avg_sq=sd["exp_avg_sq"][:-1])
    with pytest.raises(ValueError, match="exp_avg_sq"):
        AdamW(make_store(), lr=1e-2).load_state_dict(bad)
    with pytest.raises(KeyError, match="momentum"):
        SGD(make_store(), lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="betas"):
        AdamW(make_store(), lr=1e-2).load_state_dict(dict(sd, beta1=1.0))


@pytest.mark.parametrize("Opt", [SGD, AdamW, LAMB])
def test_bad_hyper_parameters_name_the_argument(Opt):
    store = make_store()
    with pytest.raises(ValueError, match="lr must be >= 0"):
        Opt(store, lr=-1e-3)
    with pytest.raises(ValueError, match="weight_decay"):
        Opt(store, lr=1e-3, weight_decay=-0.1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        Opt(store, lr=1e-3, max_grad_norm=0.0)
    with pytest.raises(TypeError, match="store must be a ParameterStore"):
        Opt({"w": np.zeros(3)}, lr=1e-3)
    with pytest.raises(KeyError, match="not in the store"):
        Opt(store, lr=1e-3, lr_multipliers={"bert.nothing": 1.0})
    with pytest.raises(ValueError, match="lr_multipliers gave -1.0 for 'cls.predictions.bias'"):
        Opt(store, lr=1e-3, lr_multipliers={"cls.predictions.bias": -1.0})
    opt = Opt(store, lr=1e-3, lr_multipliers=lambda name, step: float("nan"))
    with pytest.raises(ValueError, match="lr_multipliers gave nan"):
        opt.step()
    if Opt is SGD:
        with pytest.raises(ValueError, match="momentum"):
            SGD(store, lr=1e-3, momentum=-0.5)
        return
    for betas, which in (((1.0, 0.999), r"betas\[0\]"), ((0.9, -0.1), r"betas\[1\]"), ((0.9, 1.5), r"betas\[1\]")):
        with pytest.raises(ValueError, match=which + r" must be in \[0, 1\)"):
            Opt(store, lr=1e-3, betas=betas)
    for eps in (0.0, -1e-8):
        with pytest.raises(ValueError, match="eps must be > 0"):
            Opt(store, lr=1e-3, eps=eps)


def test_bad_schedules():
    with pytest.raises(ValueError, match="total_steps"):
        LinearWarmupDecay(10, 5)
    with pytest.raises(ValueError, match="warmup_steps"):
        LinearWarmupDecay(-1, 5)
    with pytest.raises(ValueError, match="end_factor"):
        PolynomialDecay(10, end_factor=2.0)
