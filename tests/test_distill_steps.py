"""Distillation steps: the gradients a step leaves in the student are those of the loss it logs
(float64 central differences, every kind of step), the logged total is the sum of its weighted
terms, the teacher stays a constant (eval mode, no gradient, no cache), dropout is off, and a
PKT step that stops both models after the layers its loss reads updates the student exactly as
a step running every layer does."""

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining, MobileBertForSequenceClassification
from tinymobilebert.config import ib_bert_tiny, tiny
from tinymobilebert.distill import (DistillationStep, LossWeights, TaskDistillationStep, TransferSchedule,
                                    copy_from_teacher, distillation_plan, lamb_for)
from tinymobilebert.gradcheck import check_arrays, perturb_parameters

L = 2


def pair(student_cls=MobileBertForPreTraining, seed=0, **student_cfg):
    rng = np.random.default_rng(seed)
    teacher = student_cls(ib_bert_tiny(num_hidden_layers=L, hidden_dropout_prob=0.3), seed=1, dtype=np.float64)
    student = student_cls(tiny(num_hidden_layers=L, hidden_dropout_prob=0.3, **student_cfg), seed=2, dtype=np.float64)
    perturb_parameters(teacher, rng)
    perturb_parameters(student, rng)
    return student, teacher.train()  # the step must put the teacher in eval mode itself


def batch(B=3, T=8, seed=5):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 99, (B, T))
    labels = np.where(rng.random((B, T)) < 0.35, ids, -100)
    labels[:, 1] = ids[:, 1]
    mask = np.ones((B, T), np.int64)
    mask[1, -3:] = 0
    labels[1, -3:] = -100
    return dict(input_ids=ids, token_type_ids=(np.arange(T) >= T // 2).astype(np.int64)[None].repeat(B, 0),
                attention_mask=mask, labels=labels, next_sentence_label=rng.integers(0, 2, B))


def check_step(student, step_fn, b, names=None, allow_zero=()):
    student.zero_grad()
    logged = step_fn(student, b)
    analytic = {k: v.copy() for k, v in student.grads.items()}

    def f():
        student.zero_grad()
        return step_fn(student, b)["loss"]

    names = names or [n for n in student.params if not n.endswith("position_embeddings.weight")][::3]
    report = check_arrays(f, dict(student.params), analytic, names=names, max_entries=4, allow_zero=allow_zero)
    assert report.ok(), str(report)
    return logged


CASES = {  # strategy, steps_per_layer, pd_steps, the step to check, DistillationStep options
    "pkt layer 1": ("pkt", 4, 3, 6, {}),
    "jkt": ("jkt", 3, 2, 2, dict(padding_aware=True, at_form="kl")),
    "akt": ("akt", 0, 4, 1, dict(mv_teacher_layers="all", alpha=0.3)),
    "pd": ("pd", 0, 4, 2, dict(temperature=2.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_gradients_are_the_logged_loss(case):
    strategy, spl, pd_steps, step, options = CASES[case]
    student, teacher = pair()
    sched = TransferSchedule(strategy, L, spl, pd_steps, pd_warmup=1)
    opt = lamb_for(student.store, sched)
    opt.step_count = step
    plan = distillation_plan(student.config, teacher.config, "uniform", ("fmt", "at", "mv", "mlm"))
    step_fn = DistillationStep(teacher, sched, plan, opt, LossWeights(100, 1, 50, 5), **options)
    layerwise_only = sched.stage_at(step).kind != "pd"
    heads = [n for n in student.params if n.startswith("cls.")]
    logged = check_step(student, step_fn, batch(), allow_zero=heads if layerwise_only else ())
    if layerwise_only:  # no MLM or NSP in a layer-wise stage: the heads get nothing (and the check says 0 too)
        assert not any(student.grads[n].any() for n in heads)
    layerwise = sum(v for k, v in logged.items() if k.startswith("weighted_"))
    assert logged["loss"] == pytest.approx(layerwise + logged.get("pd_loss", 0.0), rel=1e-12)
    if sched.loss_layers(step):
        assert logged["layerwise_loss"] == pytest.approx(layerwise, rel=1e-12)
        for l in sched.loss_layers(step):
            assert logged[f"weighted_fmt_layer_{l}"] == pytest.approx(50.0 * logged[f"fmt_layer_{l}"])  # 100 / L
    if sched.stage_at(step).kind == "pd":
        assert logged["pd_loss"] == pytest.approx(logged["pd_mlm"] + logged["nsp_loss"])
    # the teacher: eval mode, nothing kept, no gradient
    assert not teacher.training and teacher._state is None and not teacher.store.grad.any()


def test_step_zero_of_pkt_computes_nothing():
    student, teacher = pair()
    sched = TransferSchedule("pkt", L, 4, 0)
    opt = lamb_for(student.store, sched)
    step_fn = DistillationStep(teacher, sched, distillation_plan(student.config, teacher.config), opt)
    student.zero_grad()
    logged = step_fn(student, batch())
    assert logged["loss"] == 0.0 and not student.store.grad.any()
    assert logged["lr_layer_0"] == 0.0 and logged["lr_embeddings_heads"] == 0.0


def test_dropout_is_off_in_the_student_during_a_step():
    student, teacher = pair()
    student.train()
    sched = TransferSchedule("pd", L, 0, 3)
    opt = lamb_for(student.store, sched)
    step_fn = DistillationStep(teacher, sched, distillation_plan(student.config, teacher.config, losses=("mlm",)), opt)
    losses = [step_fn(student.train(), batch())["loss"] for _ in range(2)]
    assert losses[0] == losses[1]  # hidden_dropout_prob 0.3 in both configs, yet nothing random


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_task_distillation_step_gradients(alpha):
    student, teacher = pair(MobileBertForSequenceClassification, classifier_pooling="mean")
    b = batch()
    b = {k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")} | {"labels": np.array([0, 1, 1])}
    logged = check_step(student, TaskDistillationStep(teacher, alpha=alpha, temperature=2.0), b)
    assert logged["loss"] == pytest.approx((1 - alpha) * logged["soft_ce"] + alpha * logged.get("gold_ce", 0.0))
    assert ("gold_ce" in logged) == (alpha > 0)
    assert not teacher.training and not teacher.store.grad.any()
    with pytest.raises(ValueError, match="alpha"):
        TaskDistillationStep(teacher, alpha=1.5)


# ------------------------------------------------------------------------------ stopping early
def recording_stops(model, calls):
    """Wrap ``model.forward`` so that each call's ``stop_after_layer`` is appended to ``calls``."""
    forward = model.forward

    def recorded(*args, **kwargs):
        calls.append(kwargs.get("stop_after_layer"))
        return forward(*args, **kwargs)
    model.forward = recorded


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [{}, dict(mv_teacher_layers="all", padding_aware=True, at_form="kl")])
def test_pkt_stopping_early_makes_the_same_updates(dtype, options):
    """A PKT run over three stages and into PD, its steps stopping early (student after the
    stage's layer, teacher after its paired layer), against the same run with every layer
    running in every step: after each step the same gradients, logs, parameters and LAMB
    moments, bit for bit; the layers above the stage never move and keep zero moments."""
    Ls, Lt, S = 3, 6, 3  # uniform mapping: student layer l learns from teacher layer 2 l + 1
    teacher = MobileBertForPreTraining(ib_bert_tiny(num_hidden_layers=Lt), seed=1, dtype=dtype)
    perturb_parameters(teacher, np.random.default_rng(0))
    teacher_stops, runs = [], []
    recording_stops(teacher, teacher_stops)
    for stop_early in (True, False):
        student = MobileBertForPreTraining(tiny(num_hidden_layers=Ls), seed=2, dtype=dtype)
        perturb_parameters(student, np.random.default_rng(3))
        copy_from_teacher(student, teacher)
        sched = TransferSchedule("pkt", Ls, S, 2, pd_warmup=1, lr=1e-3)
        opt = lamb_for(student.store, sched)
        plan = distillation_plan(student.config, teacher.config, "uniform", ("fmt", "at", "mv", "mlm"))
        step_fn = DistillationStep(teacher, sched, plan, opt, **options)
        step_fn._stop_early = stop_early
        stops = []
        recording_stops(student, stops)
        runs.append((student, opt, step_fn, stops))
    (fast, opt_f, step_f, stops_f), (ref, opt_r, step_r, stops_r) = runs
    start = fast.store.data.copy()
    layer_ranges = {l: [fast.store.slices[n] for n in fast.params if f"encoder.layer.{l}." in n] for l in range(Ls)}
    for step in range(sched.total_steps):
        logs = []
        for student, opt, step_fn, _ in runs:
            student.zero_grad()
            logs.append(step_fn(student, batch(seed=10 + step)))
        assert logs[0] == logs[1], step
        np.testing.assert_array_equal(fast.store.grad, ref.store.grad)
        for _, opt, _, _ in runs:
            opt.step()
        np.testing.assert_array_equal(fast.store.data, ref.store.data)
        np.testing.assert_array_equal(opt_f.exp_avg, opt_r.exp_avg)
        np.testing.assert_array_equal(opt_f.exp_avg_sq, opt_r.exp_avg_sq)
        stage = sched.stage_at(step)
        if stage.kind == "pd" or step == 0:
            continue
        l = sched.loss_layers(step)[0]
        for above in range(l + 1, Ls):  # no gradient, lr 0: untouched, moments gated to 0
            for a, b in layer_ranges[above]:
                assert not fast.store.grad[a:b].any() and not opt_f.exp_avg[a:b].any()
                assert not opt_f.exp_avg_sq[a:b].any()
                np.testing.assert_array_equal(fast.store.data[a:b], start[a:b])
        if step % S == 0:  # a stage boundary: every multiplier is 0, every moment reset
            assert not opt_f.exp_avg.any() and not opt_f.exp_avg_sq.any()
    # what ran: step 0 runs nothing; stage l stops the student after l and the teacher after 2 l + 1
    # (or runs it whole when every teacher state is compared); PD runs both whole
    layer = [sched.loss_layers(s)[0] for s in range(1, Ls * S)]
    paired = [None if options else 2 * l + 1 for l in layer]
    assert stops_f == layer + [None, None] and stops_r == [None] * (Ls * S + 1)
    assert teacher_stops[::2] == paired + [None, None] and teacher_stops[1::2] == [None] * (Ls * S + 1)
    assert stops_f[:S] == [0, 0, 0] and stops_f[S:2 * S] == [1, 1, 1]  # two stages and more, truly cut short
    for l in range(Ls):  # and every layer learned
        assert any(not np.array_equal(fast.store.data[a:b], start[a:b]) for a, b in layer_ranges[l])


def test_layerwise_steps_and_teacher_pass_stop_where_their_loss_does():
    from tinymobilebert.distill.steps import last_layers_read
    from tinymobilebert.distill.teacher import teacher_pass

    student, teacher = pair()
    plan = distillation_plan(student.config, teacher.config, [None, 1], ("fmt", "mv"))
    assert last_layers_read((1,), plan) == (1, 1) and last_layers_read((0,), plan) == (0, 0)  # 0: nothing read
    assert last_layers_read((0, 1), plan, "all") == (1, None)
    assert last_layers_read((0, 1), distillation_plan(student.config, teacher.config, [0, 0], ("at",)), "all") == (1, 0)
    out = teacher_pass(teacher, batch(), hidden_states=True, attention_scores=True, stop_after_layer=0)
    assert len(out.hidden_states) == 2 and len(out.attention_scores) == 1 and teacher._state is None
    with pytest.raises(ValueError, match="mlm needs the teacher's last layer"):
        teacher_pass(teacher, batch(), mlm=True, stop_after_layer=0)


def test_a_layerwise_strategy_without_a_layerwise_loss_is_refused():
    """PKT, JKT and AKT train with FMT / AT / mean-variance terms: a plan with none of them (PD's
    "mlm" alone, or DynaBERT's "hidden_mse") is one clear error, not a crash at the first step."""
    student, teacher = pair()
    for losses in (("mlm",), ("hidden_mse", "mlm")):
        plan = distillation_plan(student.config, teacher.config, "uniform", losses)
        for strategy in ("pkt", "jkt", "akt"):
            schedule = TransferSchedule(strategy, 2, 4, 3)
            with pytest.raises(ValueError, match=f"strategy {strategy} trains with layer-wise terms"):
                DistillationStep(teacher, schedule, plan, lamb_for(student.store, schedule))
    pd = TransferSchedule("pd", 2, 0, 3)
    DistillationStep(teacher, pd, distillation_plan(student.config, teacher.config, "uniform", ("mlm",)),
                     lamb_for(student.store, pd))  # PD alone needs no layer-wise term
