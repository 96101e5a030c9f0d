"""The distillation losses on real model outputs, end to end: a tiny MobileBERT student learns
from a tiny IB-BERT teacher through ``model.backward(grad_outputs=...)``, and the gradient of the
whole loss with respect to every student parameter passes a float64 finite-difference check.

The teacher runs inference-lean (``keep_cache=False``) and never gets a gradient.
"""

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining, MobileBertModel, distill
from tinymobilebert.config import ib_bert_tiny, tiny
from tinymobilebert.gradcheck import check_arrays, perturb_parameters

TOL = 1e-6


def models(student_cfg, teacher_cfg, cls=MobileBertModel):
    s = cls(student_cfg, seed=0, dtype=np.float64).eval()
    perturb_parameters(s, np.random.default_rng(1))
    t = cls(teacher_cfg, seed=2, dtype=np.float64).eval()
    perturb_parameters(t, np.random.default_rng(3))
    return s, t


def batch(rng, V, B=2, T=6):
    ids = rng.integers(1, V, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 4:] = 0
    return ids, mask


def layerwise_loss(plan, out_s, out_t, mask, form, teacher_layers, projection=None, grads=False):
    """1 FMT + 0.5 AT + 3 beta + 0.7 gamma over the plan's pairs; with grads, the gradients on the
    student's outputs (and the projection's, accumulated into it)."""
    L = len(out_s.hidden_states) - 1
    total = 0.0
    d_hidden, d_scores = [None] * (L + 1), [None] * L
    for i, j in plan.hidden_pairs:
        h, c_proj = out_s.hidden_states[i], None
        if projection is not None:
            h, c_proj = projection.forward(h)
        l_fmt, c_fmt = distill.feature_map_transfer_forward(h, out_t.hidden_states[j], mask)
        h_t = out_t.hidden_states if teacher_layers == "all" else out_t.hidden_states[j]
        (beta, gamma), c_mv = distill.mean_variance_transfer_forward(h, h_t, mask, teacher_layers)
        total += l_fmt + 3.0 * beta + 0.7 * gamma
        if grads:
            dh = distill.feature_map_transfer_backward(1.0, c_fmt) + distill.mean_variance_transfer_backward(3.0, 0.7, c_mv)
            d_hidden[i] = dh if c_proj is None else projection.backward(dh, c_proj)
    for i, j in plan.attention_pairs:
        l_at, c_at = distill.attention_transfer_forward(out_s.attention_scores[i], out_t.attention_scores[j], mask, form)
        total += 0.5 * l_at
        if grads:
            d_scores[i] = distill.attention_transfer_backward(0.5, c_at)
    return total, {"hidden_states": d_hidden, "attention_scores": d_scores}


@pytest.mark.parametrize("masking,padding_aware,form,teacher_layers", [
    (None, False, "original", "same"),      # transformers' masking, the original code's loss forms
    (-6.0, True, "kl", "all"),              # the original TF masking, padding-aware, KL, the MV bug
])
def test_fmt_at_mv_gradcheck_through_the_student(masking, padding_aware, form, teacher_layers):
    s_cfg = tiny(masked_attention_score=masking)
    t_cfg = ib_bert_tiny(masked_attention_score=masking, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    student, teacher = models(s_cfg, t_cfg)
    plan = distill.distillation_plan(s_cfg, t_cfg, losses=("fmt", "at", "mv"))
    assert plan.hidden_pairs == ((1, 1), (2, 2)) and plan.attention_pairs == ((0, 0), (1, 1))
    ids, mask = batch(np.random.default_rng(4), s_cfg.vocab_size)
    kw = dict(attention_mask=mask, output_hidden_states=True, output_attention_scores=True)
    out_t = teacher.forward(ids, keep_cache=False, **kw)  # inference-lean: nothing kept for a backward
    loss_mask = mask if padding_aware else None

    out_s = student.forward(ids, **kw)
    loss, grad_outputs = layerwise_loss(plan, out_s, out_t, loss_mask, form, teacher_layers, grads=True)
    assert np.isfinite(loss) and loss > 0
    student.zero_grad()
    analytic = {k: v.copy() for k, v in student.backward(grad_outputs).items()}

    def f():
        out = student.forward(ids, keep_cache=False, **kw)
        return layerwise_loss(plan, out, out_t, loss_mask, form, teacher_layers)[0]

    report = check_arrays(f, student.params, analytic, max_entries=3, tol=TOL, rng=np.random.default_rng(5))
    assert report.ok(), "\n" + str(report)
    assert sum(not c.zero_gradient for c in report.checks) > 40  # most tensors really were checked
    # the teacher is a constant: no gradient, no cache to differentiate
    assert not np.any(teacher.store.grad)
    with pytest.raises(RuntimeError, match="no forward pass to differentiate"):
        teacher.backward({"last_hidden_state": np.ones_like(out_t.last_hidden_state)})


def test_projection_for_a_narrower_student():
    """Student width 24, teacher 32: FMT and MV through a learned projection; gradients reach the
    student and the projection, and the projection is not part of the student's checkpoint."""
    s_cfg, t_cfg = tiny(hidden_size=24), ib_bert_tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with pytest.raises(ValueError, match="widths 24 \\(student\\) and 32 \\(teacher\\); pass projection=True"):
        distill.distillation_plan(s_cfg, t_cfg)
    plan = distill.distillation_plan(s_cfg, t_cfg, losses=("fmt", "mv", "at"), projection=True)
    proj = plan.make_projection(seed=6, dtype=np.float64)
    assert proj.params["projection.weight"].shape == (32, 24)
    proj.params["projection.bias"][...] = np.random.default_rng(7).normal(0, 0.1, 32)
    student, teacher = models(s_cfg, t_cfg)
    ids, mask = batch(np.random.default_rng(8), s_cfg.vocab_size)
    kw = dict(attention_mask=mask, output_hidden_states=True, output_attention_scores=True)
    out_t = teacher.forward(ids, keep_cache=False, **kw)

    out_s = student.forward(ids, **kw)
    student.zero_grad()
    proj.zero_grad()
    _, grad_outputs = layerwise_loss(plan, out_s, out_t, None, "original", "same", proj, grads=True)
    analytic = {k: v.copy() for k, v in student.backward(grad_outputs).items()}
    analytic.update({k: v.copy() for k, v in proj.grads.items()})
    arrays = {**student.params, **proj.params}

    def f():
        out = student.forward(ids, keep_cache=False, **kw)
        return layerwise_loss(plan, out, out_t, None, "original", "same", proj)[0]

    names = ["projection.weight", "projection.bias", "encoder.layer.1.output.bottleneck.dense.weight",
             "encoder.layer.0.attention.self.query.weight", "embeddings.embedding_transformation.weight"]
    report = check_arrays(f, arrays, analytic, names=names, max_entries=8, tol=TOL, rng=np.random.default_rng(9))
    assert report.ok() and not any(c.zero_gradient for c in report.checks), "\n" + str(report)
    assert not any("projection" in k for k in student.state_dict())


def test_mlm_distillation_through_the_student_with_the_original_temperature():
    """PD's MLM term: student logits at the labelled positions against the teacher's, made with the
    original's temperature on the teacher's hidden states."""
    s_cfg = tiny()
    t_cfg = ib_bert_tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    student, teacher = models(s_cfg, t_cfg, MobileBertForPreTraining)
    rng = np.random.default_rng(10)
    ids, mask = batch(rng, s_cfg.vocab_size)
    labels = np.full(ids.shape, -100)
    labels[0, [1, 3]] = rng.integers(1, 99, 2)
    labels[1, 2] = 7
    rows = np.flatnonzero(labels.reshape(-1) != -100)
    out_t = teacher.forward(ids, attention_mask=mask, keep_cache=False)
    logits_t = distill.teacher_mlm_logits(teacher, out_t.last_hidden_state, temperature=2.0, rows=rows)
    y = labels.reshape(-1)[rows]

    out = student.forward(ids, attention_mask=mask, labels=labels, mlm_positions="labelled")
    loss, c = distill.mlm_distillation_forward(out.prediction_logits, logits_t, y, alpha=0.5)
    assert np.isfinite(loss) and loss > 0 and out.prediction_logits.shape == (3, s_cfg.vocab_size)
    student.zero_grad()
    analytic = {k: v.copy() for k, v in student.backward(
        {"prediction_logits": distill.mlm_distillation_backward(1.0, c)}, include_loss=False).items()}

    def f():
        o = student.forward(ids, attention_mask=mask, labels=labels, mlm_positions="labelled", keep_cache=False)
        return distill.mlm_distillation_forward(o.prediction_logits, logits_t, y, alpha=0.5)[0]

    names = [n for n in student.params if n.startswith(("cls.predictions", "mobilebert.encoder.layer.1.output"))]
    names.append("mobilebert.embeddings.word_embeddings.weight")  # tied to the MLM decoder
    assert len(names) > 10
    report = check_arrays(f, student.params, analytic, names=names, max_entries=6, tol=TOL,
                          rng=np.random.default_rng(11))
    assert report.ok() and sum(not c.zero_gradient for c in report.checks) > 10, "\n" + str(report)
    assert not np.any(teacher.store.grad)


def test_teacher_mlm_logits_temperature_scales_hidden_states_not_logits():
    cfg = ib_bert_tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = MobileBertForPreTraining(cfg, seed=0, dtype=np.float64).eval()
    perturb_parameters(teacher, np.random.default_rng(12))
    ids = np.random.default_rng(13).integers(1, 99, (2, 5))
    out = teacher.forward(ids, keep_cache=False)
    rows = np.array([1, 6, 9])
    at_one = distill.teacher_mlm_logits(teacher, out.last_hidden_state, 1.0, rows)
    np.testing.assert_allclose(at_one, out.prediction_logits.reshape(10, -1)[rows], rtol=1e-13)
    # an independent MLM head: dense, GELU (tanh form), a true LayerNorm, [tied | extra] weights
    P, E = teacher.params, cfg.embedding_size
    h = 2.0 * out.last_hidden_state.reshape(10, -1)[rows]
    a = h @ P["cls.predictions.transform.dense.weight"].T + P["cls.predictions.transform.dense.bias"]
    a = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))
    z = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + cfg.layer_norm_eps)
    z = z * P["cls.predictions.transform.LayerNorm.weight"] + P["cls.predictions.transform.LayerNorm.bias"]
    W = np.concatenate([P["mobilebert.embeddings.word_embeddings.weight"].T, P["cls.predictions.dense.weight"]])
    expected = z @ W + P["cls.predictions.bias"]
    at_two = distill.teacher_mlm_logits(teacher, out.last_hidden_state, 2.0, rows)
    np.testing.assert_allclose(at_two, expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(at_two, at_one / 0.5)  # not the same as dividing logits by T = 1/2
    with pytest.raises(TypeError, match="model with an MLM head"):
        distill.teacher_mlm_logits(MobileBertModel(cfg), out.last_hidden_state)
    with pytest.raises(ValueError, match="rows must be"):
        distill.teacher_mlm_logits(teacher, out.last_hidden_state, rows=np.array([10]))
    with pytest.raises(ValueError, match=r"sequence_output must be \(B, T, 32\)"):
        distill.teacher_mlm_logits(teacher, out.last_hidden_state[..., :8])
    assert E < cfg.hidden_size
