"""The distillation schedules: PKT's per-layer learning rates (gates 0/1/0.1 times the warm-up bg)
equal the formula of the released code at chosen steps, in the schedule and in the optimizer
that runs it; moments are reset at every stage boundary; embeddings and heads are copied from
the teacher and never move; each stage's loss holds only its layer's terms; JKT, AKT and PD."""

import math

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert.config import ib_bert_tiny, tiny
from tinymobilebert.distill import (DistillationStep, LossWeights, TransferSchedule, background_lr,
                                    copy_from_teacher, distillation_plan, lamb_for, layer_gate, layer_of)

L, S = 3, 10  # 3 layers x 10 steps per stage


def spec_bg(step, steps_per_stage):
    """The spec's bg, written out: min(0.9 + 0.1 sqrt(1 - tau), 10 tau), tau = (s mod S) / S."""
    tau = (step % steps_per_stage) / steps_per_stage
    return min(0.9 + 0.1 * math.sqrt(1 - tau), 10 * tau)


def spec_multiplier(layer, step):
    """3 bg(s) {0 if s <= l S, 1 if l S < s <= (l + 1) S, 0.1 after} for encoder layer ``layer``."""
    gate = 0.0 if step <= layer * S else (1.0 if step <= (layer + 1) * S else 0.1)
    return 3.0 * spec_bg(step, S) * gate


def test_background_lr_by_hand():
    assert background_lr(0, 10) == 0.0  # every stage starts at 0
    assert background_lr(10, 10) == 0.0 and background_lr(20, 10) == 0.0
    assert background_lr(1, 20) == pytest.approx(0.5)  # 10 tau with tau = 0.05: the linear warm-up
    assert background_lr(2, 10) == pytest.approx(0.9 + 0.1 * math.sqrt(0.8))  # past the warm-up: the slow decay
    assert background_lr(19, 20) == pytest.approx(0.9 + 0.1 * math.sqrt(0.05))
    assert max(background_lr(s, 1000) for s in range(1000)) == pytest.approx(0.9 + 0.1 * math.sqrt(1 - 0.0995), abs=2e-3)
    assert background_lr(5, 1) == 1.0  # one step per stage: no warm-up (the original's steps_per_phase <= 1)


def test_layer_gate_boundaries():
    # layer 1 of S = 10: before (s <= 10) 0, during (10 < s <= 20) 1, after 0.1
    assert [layer_gate(1, s, 10) for s in (0, 10, 11, 20, 21, 99)] == [0.0, 0.0, 1.0, 1.0, 0.1, 0.1]
    assert [layer_gate(0, s, 10) for s in (0, 1, 10, 11)] == [0.0, 1.0, 1.0, 0.1]


def test_layer_of_names():
    assert layer_of("mobilebert.encoder.layer.12.attention.self.query.weight") == 12
    assert layer_of("encoder.layer.0.output.dense.bias") == 0
    assert layer_of("mobilebert.embeddings.word_embeddings.weight") is None
    assert layer_of("cls.predictions.bias") is None


def test_pkt_multipliers_equal_the_spec_formula_at_chosen_steps():
    sched = TransferSchedule("pkt", L, S, 0, lr=1e-3)
    assert [st.name for st in sched.stages] == ["PKT stage 1/3 (layer 0)", "PKT stage 2/3 (layer 1)",
                                                 "PKT stage 3/3 (layer 2)"]
    assert sched.total_steps == L * S
    for step in (0, 1, 2, 5, 9, 10, 11, 12, 19, 20, 21, 25, 29):
        for layer in range(L):
            name = f"mobilebert.encoder.layer.{layer}.attention.self.query.weight"
            assert sched.lr_multiplier(name, step) == pytest.approx(spec_multiplier(layer, step), abs=1e-15)
        for frozen in ("mobilebert.embeddings.word_embeddings.weight", "cls.predictions.bias",
                       "mobilebert.embeddings.LayerNorm.weight", "cls.seq_relationship.weight"):
            assert sched.lr_multiplier(frozen, step) == 0.0
        assert sched.base_lr(step) == 1e-3  # constant during the layer-wise stage
    # a few values by hand: step 11 is layer 1's first step with bg = 10 * 0.1 = 1 -> 3.0
    assert sched.layer_multiplier(1, 11) == pytest.approx(3.0 * min(0.9 + 0.1 * math.sqrt(0.9), 1.0))
    assert sched.layer_multiplier(0, 11) == pytest.approx(0.1 * sched.layer_multiplier(1, 11))
    assert sched.layer_multiplier(2, 11) == 0.0
    assert all(sched.layer_multiplier(l, s) == 0.0 for l in range(L) for s in (0, 10, 20))  # boundaries: resets


def test_pkt_loss_gates_one_layer_per_stage():
    sched = TransferSchedule("pkt", L, S, 5)
    assert sched.loss_layers(0) == ()
    assert [sched.loss_layers(s) for s in (1, 10, 11, 20, 21, 29)] == [(0,), (0,), (1,), (1,), (2,), (2,)]
    assert sched.loss_layers(30) == () and sched.stage_at(30).name == "PD"  # PD: no layer-wise terms
    assert sched.is_pd_start(30) and not sched.is_pd_start(31)


def test_jkt_akt_pd_schedules():
    jkt = TransferSchedule("jkt", L, S, 20, lr=1e-3, pd_lr=2e-3, pd_warmup=4)
    assert [st.name for st in jkt.stages] == ["JKT", "PD"] and jkt.total_steps == L * S + 20
    for step in (0, 1, 3, 15, 29):
        assert jkt.loss_layers(step) == (0, 1, 2)
        for layer in range(L):  # one warm-up over the single stage of L S steps
            tau = step / (L * S)
            assert jkt.layer_multiplier(layer, step) == pytest.approx(3 * min(0.9 + 0.1 * math.sqrt(1 - tau), 10 * tau))
        assert jkt.layer_multiplier(None, step) == 0.0
    # PD: every tensor at 1, the base lr warms up from PD's first step, then decays linearly
    assert all(jkt.layer_multiplier(l, 30 + k) == 1.0 for l in (None, 0, 2) for k in (0, 7))
    assert [jkt.base_lr(30 + k) for k in (0, 2, 4)] == pytest.approx([0.0, 1e-3, 2e-3 * (1 - 0.9999 * 4 / 20)])
    akt = TransferSchedule("akt", L, S, 12)
    assert [st.name for st in akt.stages] == ["AKT (PD + layer-wise terms)"] and akt.total_steps == 12
    assert akt.loss_layers(0) == (0, 1, 2) and not akt.copies_from_teacher and not akt.is_pd_start(0)
    pd = TransferSchedule("pd", L, 0, 8)
    assert pd.loss_layers(3) == () and pd.total_steps == 8
    with pytest.raises(ValueError, match="strategy"):
        TransferSchedule("xkt", L, S, 0)
    with pytest.raises(ValueError, match="pd_steps >= 1"):
        TransferSchedule("akt", L, S, 0)
    with pytest.raises(ValueError, match="steps_per_layer >= 2"):
        TransferSchedule("pkt", L, 1, 5)


def tiny_pair(seed=0, dtype=np.float32):
    cfg = dict(num_hidden_layers=L, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = MobileBertForPreTraining(ib_bert_tiny(**cfg), seed=seed + 1, dtype=dtype).eval()
    student = MobileBertForPreTraining(tiny(num_hidden_layers=L, attention_probs_dropout_prob=0.1), seed=seed,
                                       dtype=dtype)
    return student, teacher


def batch(k, B=3, T=9):
    rng = np.random.default_rng([11, k])
    ids = rng.integers(5, 99, (B, T))
    labels = np.where(rng.random((B, T)) < 0.3, ids, -100)
    labels[:, 2] = ids[:, 2]
    mask = np.ones((B, T), np.int64)
    mask[0, -2:] = 0
    return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=mask, labels=labels,
                next_sentence_label=rng.integers(0, 2, B))


def test_pkt_run_gates_resets_and_freezes_in_the_optimizer():
    """A real PKT run (3 layers x 10 steps, then 4 PD steps) through LAMB: the multipliers the
    optimizer applies are the formula's, layer l does not move before its stage, every stage's
    first step resets every moment and moves nothing, embeddings and heads stay the teacher's."""
    student, teacher = tiny_pair()
    copied = copy_from_teacher(student, teacher)
    assert "mobilebert.embeddings.word_embeddings.weight" in copied and "cls.predictions.dense.weight" in copied
    assert "mobilebert.embeddings.LayerNorm.weight" not in copied  # NoNorm vs LayerNorm: no counterpart
    for n in copied:
        np.testing.assert_array_equal(student.params[n], teacher.params[n])
    frozen = {n: student.params[n].copy() for n in student.params if layer_of(n) is None}
    sched = TransferSchedule("pkt", L, S, 4, lr=1e-3, pd_warmup=1)
    opt = lamb_for(student.store, sched)
    plan = distillation_plan(student.config, teacher.config, "uniform", ("fmt", "at", "mv", "mlm"))
    step_fn = DistillationStep(teacher, sched, plan, opt)
    names = opt.names
    for step in range(sched.total_steps):
        assert opt.step_count == step
        before = {n: student.params[n].copy() for n in student.params}
        student.zero_grad()
        logged = step_fn(student, batch(step))
        mult = opt.multipliers(step)
        if step < L * S:
            expected = [0.0 if layer_of(n) is None else spec_multiplier(layer_of(n), step) for n in names]
            np.testing.assert_allclose(mult, expected, rtol=0, atol=1e-15)
            for l in range(L):
                assert logged[f"lr_layer_{l}"] == pytest.approx(1e-3 * spec_multiplier(l, step))
            assert logged["lr_embeddings_heads"] == 0.0
            terms = {k for k in logged if k.startswith(("fmt_", "at_", "beta_", "gamma_"))}
            gated = [l for l in range(L) if l * S < step <= (l + 1) * S]
            assert terms == {f"{t}_layer_{l}" for t in ("fmt", "at", "beta", "gamma") for l in gated}
        opt.step()
        if step < L * S:
            if step % S == 0:  # a boundary: every moment reset, nothing moved
                assert not opt.exp_avg.any() and not opt.exp_avg_sq.any()
                for n in student.params:
                    np.testing.assert_array_equal(student.params[n], before[n])
            for n, p in student.params.items():
                l = layer_of(n)
                if l is None:
                    np.testing.assert_array_equal(p, frozen[n])  # embeddings and heads frozen, moments 0
                    a, b = opt.store.slices[n]
                    assert not opt.exp_avg[a:b].any()
                elif step <= l * S:
                    np.testing.assert_array_equal(p, before[n])  # before its stage: untouched
        elif step == L * S:  # PD's first step: fresh moments, m = (1 - beta1) * clipped gradient
            scale = min(1.0, 1.0 / (np.sqrt(np.sum(opt.store.grad.astype(np.float64) ** 2)) + 1e-6))
            np.testing.assert_allclose(opt.exp_avg, 0.1 * scale * opt.store.grad, rtol=1e-5, atol=1e-12)
    moved = [n for n in frozen if not np.array_equal(student.params[n], frozen[n])]
    assert "cls.predictions.bias" in moved  # PD trains every tensor


def test_each_layer_trains_during_its_stage():
    """On one fixed batch, each stage's loss (only its layer's terms) falls from the stage's second
    step (the first with momentum to use) to its last, and the layer's weights move."""
    student, teacher = tiny_pair(seed=3)
    copy_from_teacher(student, teacher)
    sched = TransferSchedule("pkt", L, S, 0, lr=1e-3)
    opt = lamb_for(student.store, sched)
    step_fn = DistillationStep(teacher, sched, distillation_plan(student.config, teacher.config), opt)
    start = {n: p.copy() for n, p in student.params.items()}
    losses = []
    for step in range(sched.total_steps):
        student.zero_grad()
        losses.append(step_fn(student, batch(0))["layerwise_loss"] if step else 0.0)
        opt.step()
    for l in range(L):
        assert losses[min((l + 1) * S, L * S - 1)] < 0.7 * losses[l * S + 2], f"stage {l}'s loss did not fall"
        q = f"mobilebert.encoder.layer.{l}.attention.self.query.weight"
        assert not np.array_equal(student.params[q], start[q])
    assert LossWeights().per_layer(4) == {"fmt": 25.0, "at": 0.25, "beta": 1250.0, "gamma": 1.25}


def test_equal_budgets_split_the_same_cpu_seconds():
    from tinymobilebert.distill.budget import Budget, measure_budget, split_budget, step_costs

    stages = [0.09, 0.11, 0.13, 0.15]  # PKT's stage l runs layers 0 .. l: each costs more than the last
    costs = {"mlm": 0.1, "pkt_stages": stages, "layerwise": 0.12, "jkt": 0.16, "pd": 0.2, "akt": 0.21}
    n = split_budget(costs, 90.0, 4, layerwise_share=0.3)
    assert n["mlm_steps"] == 900 and n["pd_only_steps"] == 450 and n["akt_steps"] == 428
    assert n["steps_per_layer"] == int(0.3 * 90 / sum(stages)) == 56  # S steps in every stage
    spent = n["steps_per_layer"] * sum(stages) + n["pd_steps"] * 0.2
    assert 90 - 0.2 < spent <= 90  # the distilled student spends the same CPU seconds, to one step
    assert n["jkt_steps_per_layer"] == int(0.3 * 90 / (4 * 0.16)) == 42  # one stage of L S JKT steps
    assert 90 - 0.2 < 4 * n["jkt_steps_per_layer"] * 0.16 + n["jkt_pd_steps"] * 0.2 <= 90
    with pytest.raises(ValueError, match="layerwise_share"):
        split_budget(costs, 90.0, 4, layerwise_share=1.0)
    with pytest.raises(ValueError, match="one cost per layer \\(4\\), got 3"):
        split_budget({**costs, "pkt_stages": stages[:3]}, 90.0, 4)
    # measured on real steps: every kind of step costs CPU time, and a step with the teacher costs more
    student, teacher = tiny_pair()
    batches = [batch(k) for k in range(3)]
    measured = step_costs(teacher, student.config, batches)
    assert all(measured[k] > 0 for k in ("mlm", "layerwise", "jkt", "pd", "akt", "cpu_per_wall"))
    assert len(measured["pkt_stages"]) == L and all(c > 0 for c in measured["pkt_stages"])
    assert measured["layerwise"] == pytest.approx(sum(measured["pkt_stages"]) / L)
    b = measure_budget(teacher, student.config, batches, 40)
    assert b.mlm_steps == 40 and b.cpu_seconds == pytest.approx(40 * b.mlm_step_cpu)
    assert b.steps_per_layer >= 2 and b.pd_steps >= 1 and len(b.pkt_stage_cpu) == L
    assert b.layerwise_step_cpu == pytest.approx(sum(b.pkt_stage_cpu) / L)
    assert b.steps_per_layer * sum(b.pkt_stage_cpu) + b.pd_steps * b.pd_step_cpu <= b.cpu_seconds
    assert Budget(**b.as_dict()) == b  # what the demo writes to budget.json and reads back on resume
    with pytest.raises(ValueError, match="student_steps"):
        measure_budget(teacher, student.config, batches, 0)
