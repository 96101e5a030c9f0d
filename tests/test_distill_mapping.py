"""Layer mappings (presets, explicit lists, validation), the pairing plan and its errors, and the
learned projection (its gradients, its own parameters, never in the student's checkpoint)."""

import math

import numpy as np
import pytest

from tinymobilebert import MobileBertModel, distill
from tinymobilebert.config import ib_bert_large, ib_bert_tiny, mobilebert, tiny
from tinymobilebert.gradcheck import check_arrays


# ------------------------------------------------------------------------ presets
@pytest.mark.parametrize("Ls,Lt,expected", [
    (24, 24, list(range(24))),  # MobileBERT: layer l learns from teacher layer l
    (4, 12, [2, 5, 8, 11]),     # TinyBERT's g(m) = 3m, 1-based
    (3, 4, [1, 2, 3]),
    (6, 4, [0, 1, 1, 2, 3, 3]),  # deeper than the teacher: repeats, still non-decreasing
    (1, 5, [4]),
])
def test_uniform_mapping_examples(Ls, Lt, expected):
    m = distill.layer_mapping("uniform", Ls, Lt)
    assert list(m.teacher_layers) == expected and m.name == "uniform"


def test_uniform_mapping_is_the_documented_formula():
    for Ls in range(1, 30):
        for Lt in range(1, 30):
            m = distill.uniform_mapping(Ls, Lt).teacher_layers
            assert m == tuple(math.ceil((i + 1) * Lt / Ls) - 1 for i in range(Ls))
            assert m[-1] == Lt - 1 and min(m) >= 0 and all(a <= b for a, b in zip(m, m[1:]))
            if Ls <= Lt:
                assert len(set(m)) == Ls  # each teacher layer used at most once


def test_last_mapping_and_pairs():
    m = distill.layer_mapping("last", 3, 5)
    assert m.teacher_layers == (None, None, 4)
    assert m.pairs() == [(2, 4)]
    assert m.hidden_state_pairs() == [(3, 5)]  # hidden_states[i + 1] is layer i's output
    assert m.hidden_state_pairs(include_embeddings=True) == [(0, 0), (3, 5)]


def test_explicit_mappings_and_their_validation():
    m = distill.layer_mapping([0, None, 3], 3, 4)
    assert m.pairs() == [(0, 0), (2, 3)] and m.name == "explicit"
    assert distill.layer_mapping(m, 3, 4) is m
    cases = [
        ([0, 1], 3, 4, "the mapping has 2 entries .* the student has 3 layers"),
        ([0, 1, 4], 3, 4, r"entry 2 \(student layer 2\) must be a teacher layer in \[0, 4\)"),
        ([0, -1, 2], 3, 4, "entry 1"),
        ([0, 1.0, 2], 3, 4, "entry 1"),
        ([True, 1, 2], 3, 4, "entry 0"),
        ([2, 1, 3], 3, 4, "must be non-decreasing, but student layer 0 -> teacher layer 2 and student layer 1"),
        ([None, None, None], 3, 4, "every entry is None"),
        ("middle", 3, 4, "must be one of"),
        ("uniform", 0, 4, "num_student_layers must be a positive integer"),
    ]
    for spec, Ls, Lt, msg in cases:
        with pytest.raises(ValueError, match=msg):
            distill.layer_mapping(spec, Ls, Lt)
    with pytest.raises(TypeError, match="preset name"):
        distill.layer_mapping(3, 3, 4)


# ------------------------------------------------------------------------ the plan
def test_mobilebert_pairs_with_its_teacher_without_projection():
    plan = distill.distillation_plan(mobilebert(), ib_bert_large(), losses=("fmt", "at", "mv", "mlm"))
    assert plan.projection is None and plan.make_projection() is None
    assert plan.hidden_pairs == tuple((i, i) for i in range(1, 25))
    assert plan.attention_pairs == tuple((i, i) for i in range(24))


def test_plan_errors_name_both_models():
    s, t = tiny(), ib_bert_tiny()
    sizes = r"student \(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, vocab_size=99\) and teacher"
    with pytest.raises(ValueError, match=sizes + r" \(hidden_size=32, num_attention_heads=8,"):
        distill.distillation_plan(s, t.replace(num_attention_heads=8))
    with pytest.raises(ValueError, match="attention transfer: it compares heads one to one, but the student has 4 heads "
                                         "and the teacher 8"):
        distill.distillation_plan(s, t.replace(num_attention_heads=8))
    # heads may differ when attention transfer is not asked for
    assert distill.distillation_plan(s, t.replace(num_attention_heads=8), losses=("fmt",)).attention_pairs == ()
    with pytest.raises(ValueError, match="fmt, mv: the hidden states have widths 32 \\(student\\) and 64 \\(teacher\\)"):
        distill.distillation_plan(s, t.replace(hidden_size=64))
    with pytest.raises(ValueError, match="vocabularies differ \\(99 vs 120"):
        distill.distillation_plan(s, t.replace(vocab_size=120), losses=("mlm",))
    with pytest.raises(ValueError, match="num_labels is 2 \\(student\\) and 3"):
        distill.distillation_plan(s, t.replace(num_labels=3), losses=("logits",))
    with pytest.raises(ValueError, match="losses must be a non-empty list"):
        distill.distillation_plan(s, t, losses=("fmt", "kd"))
    with pytest.raises(ValueError, match="none of the losses .* reads hidden states"):
        distill.distillation_plan(s, t, losses=("at",), projection=True)
    with pytest.raises(ValueError, match="3 entries .* the student has 2 layers"):
        distill.distillation_plan(s, t, mapping=[0, 1, 1])


def test_plan_with_a_shallower_student_and_embeddings():
    plan = distill.distillation_plan(tiny(num_hidden_layers=2), ib_bert_tiny(num_hidden_layers=4),
                                     losses="hidden_mse", include_embeddings=True)
    assert plan.hidden_pairs == ((0, 0), (1, 2), (2, 4)) and plan.attention_pairs == ()


# ------------------------------------------------------------------------ the projection
def test_projection_forward_backward_gradcheck():
    rng = np.random.default_rng(0)
    proj = distill.HiddenProjection(5, 7, seed=1, dtype=np.float64)
    proj.params["projection.bias"][...] = rng.standard_normal(7)
    h = rng.standard_normal((2, 3, 5))
    R = rng.standard_normal((2, 3, 7))
    y, c = proj.forward(h)
    assert y.shape == (2, 3, 7)
    np.testing.assert_allclose(y, h @ proj.params["projection.weight"].T + proj.params["projection.bias"], rtol=1e-14)
    dh = proj.backward(R, c)
    grads = {"h": dh, **{k: v.copy() for k, v in proj.grads.items()}}
    proj.backward(R, c)  # gradients accumulate
    np.testing.assert_allclose(proj.grads["projection.weight"], 2 * grads["projection.weight"], rtol=1e-14)
    arrays = {"h": h, **proj.params}
    report = check_arrays(lambda: float(np.sum(R * proj.forward(h)[0])), arrays, grads, tol=1e-6)
    assert report.ok() and not any(c.zero_gradient for c in report.checks), "\n" + str(report)
    proj.zero_grad()
    assert not np.any(proj.store.grad)


def test_projection_per_key_state_dict_and_errors():
    proj = distill.HiddenProjection(4, 6, keys=[1, 2], seed=0)
    assert sorted(proj.params) == ["projection.1.bias", "projection.1.weight", "projection.2.bias",
                                   "projection.2.weight"]
    assert proj.params["projection.1.weight"].dtype == np.float32
    y, _ = proj.forward(np.ones((3, 4), np.float32), key=2)
    assert y.shape == (3, 6)
    state = proj.state_dict()
    other = distill.HiddenProjection(4, 6, keys=[1, 2], seed=5)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.params["projection.2.weight"], proj.params["projection.2.weight"])
    with pytest.raises(ValueError, match="key must be one of"):
        proj.forward(np.ones((3, 4)), key=0)
    with pytest.raises(ValueError, match="must end in the student width 4"):
        proj.forward(np.ones((3, 5)), key=1)
    with pytest.raises(ValueError, match="shared, so key must be None"):
        distill.HiddenProjection(4, 6).forward(np.ones((3, 4)), key=1)
    with pytest.raises(ValueError, match="teacher_width must be a positive integer"):
        distill.HiddenProjection(4, 0)
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"projection.1.weight": state["projection.1.weight"]})


def test_projection_is_never_saved_with_the_student(tmp_path):
    from safetensors.numpy import load_file

    s_cfg = tiny(hidden_size=24)
    student = MobileBertModel(s_cfg, seed=0)
    plan = distill.distillation_plan(s_cfg, ib_bert_tiny(), losses=("fmt",), projection=True)
    proj = plan.make_projection(seed=0)
    proj.forward(np.ones((1, 2, 24), np.float32))
    student.save_pretrained(tmp_path / "student")
    saved = load_file(str(tmp_path / "student" / "model.safetensors"))
    assert saved and not any("projection" in k for k in saved)
    assert set(proj.params).isdisjoint(student.params)
