"""Token dropping in distillation's PD stage: the student's forward gets the kept positions (and its
gradients are those of the loss it logs, float64 central differences), the teacher reads the whole
sequence, layer-wise steps never drop, a resumed run restores the importance table, bad settings
are refused before anything is written."""

import copy

import numpy as np
import pytest
from conftest import synthetic_batches
from test_distill_steps import batch, check_step, pair

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert.config import ib_bert_tiny, tiny
from tinymobilebert.distill import DistillationStep, LossWeights, TransferSchedule, distillation_plan, lamb_for
from tinymobilebert.distill.logits import mlm_distillation_backward, mlm_distillation_forward
from tinymobilebert.distill.teacher import teacher_pass
from tinymobilebert.gradcheck import perturb_parameters
from tinymobilebert.losses import cross_entropy_backward_mean, cross_entropy_forward_mean
from tinymobilebert.token_dropping import TokenDropping, TokenImportance
from tinymobilebert.train import Trainer, read_log

PROTECTED, NEVER = [1, 2, 3, 4], [0]


def dropping(seed=3, keep=0.5, split_layer=None):
    """A TokenDropping whose table has learned from random losses, so selection is by score, not by tie."""
    rng = np.random.default_rng(seed)
    imp = TokenImportance(99, PROTECTED, NEVER, beta=0.5)
    ids = rng.integers(5, 99, 200)
    imp.update(ids, rng.random(200) * 5)
    return TokenDropping(imp, keep=keep, split_layer=split_layer)


def pair4():
    """``pair()`` with 4 layers each: the split at layer 1 leaves layer 2 to the kept tokens alone."""
    rng = np.random.default_rng(0)
    teacher = MobileBertForPreTraining(ib_bert_tiny(num_hidden_layers=4), seed=1, dtype=np.float64)
    student = MobileBertForPreTraining(tiny(num_hidden_layers=4), seed=2, dtype=np.float64)
    perturb_parameters(teacher, rng)
    perturb_parameters(student, rng)
    return student, teacher.train()


def step_for(student, teacher, strategy, spl, pd_steps, step, td=None, **options):
    sched = TransferSchedule(strategy, student.config.num_hidden_layers, spl, pd_steps, pd_warmup=1)
    opt = lamb_for(student.store, sched)
    opt.step_count = step
    losses = ("fmt", "at", "mv", "mlm") if strategy != "pd" else ("mlm",)
    plan = distillation_plan(student.config, teacher.config, "uniform", losses)
    return DistillationStep(teacher, sched, plan, opt, LossWeights(100, 1, 50, 5), token_dropping=td, **options)


def frozen(step_fn, td):
    """``step_fn`` with ``td``'s table reset before every call: each evaluation keeps the same tokens."""
    state = copy.deepcopy(td.state_dict())

    def step(student, b):
        td.load_state_dict(copy.deepcopy(state))
        return step_fn(student, b)
    return step


def test_pd_step_drops_in_the_student_only(monkeypatch):
    student, teacher = pair4()
    teacher_plain = pair4()[1]  # the same teacher, untouched
    td = dropping()
    b = batch()
    before = copy.deepcopy(td.state_dict())
    idx = td.importance.select(b["input_ids"], b["attention_mask"], keep=0.5)  # (B, k)
    assert idx.shape == (3, 4) and not np.array_equal(idx, np.tile(np.arange(4), (3, 1)))  # by score, not position
    seen = []
    original = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda *a, **kw: seen.append(kw) or original(*a, **kw))
    step_fn = step_for(student, teacher, "pd", 0, 4, 2, td, temperature=2.0)
    student.zero_grad()
    logged = step_fn(student, b)
    got = {k: v.copy() for k, v in student.grads.items()}
    assert len(seen) == 1 and seen[0].get("keep_positions") is None  # the teacher reads every token
    assert logged["kept_share"] == 0.5

    # by hand: the teacher's full pass, the student's forward with the same kept positions
    out_t = teacher_pass(teacher_plain.eval(), b, hidden_states=False, attention_scores=False, mlm=True,
                         temperature=2.0)
    student.zero_grad()
    out_s = student.forward(b["input_ids"], b["token_type_ids"], b["attention_mask"], labels=b["labels"],
                            next_sentence_label=b["next_sentence_label"], mlm_positions="labelled",
                            keep_positions=idx)
    gold = b["labels"].reshape(-1)[out_s.mlm_positions]
    pd_mlm, c = mlm_distillation_forward(out_s.prediction_logits, out_t.mlm_logits, gold, alpha=0.5)
    nsp, c_nsp = cross_entropy_forward_mean(out_s.seq_relationship_logits, b["next_sentence_label"])
    student.backward(grad_outputs={"prediction_logits": mlm_distillation_backward(1.0, c),
                                   "seq_relationship_logits": cross_entropy_backward_mean(1.0, c_nsp)},
                     include_loss=False)
    assert logged["pd_mlm"] == pd_mlm and logged["nsp_loss"] == nsp
    for name, g in student.grads.items():
        np.testing.assert_array_equal(got[name], g, err_msg=name)  # bit-equal
    # importance learned from the student's per-token MLM losses, once
    ref = TokenDropping(TokenImportance(99, PROTECTED, NEVER, beta=0.5), keep=0.5)
    ref.load_state_dict(before)
    ref.learn(b, out_s)
    np.testing.assert_array_equal(td.importance.scores, ref.importance.scores)
    assert td.importance.steps == ref.importance.steps == 2
    # and dropping changed the step: without it the gradients differ
    plain = step_for(*pair4(), "pd", 0, 4, 2, temperature=2.0)
    student.zero_grad()
    plain(student, b)
    assert any(not np.array_equal(got[n], student.grads[n]) for n in got)


@pytest.mark.parametrize("strategy, spl, step, split", [("pd", 0, 2, None), ("pkt", 3, 7, 0)])
def test_pd_step_with_dropping_gradients_are_the_logged_loss(strategy, spl, step, split):
    student, teacher = pair()
    td = dropping(split_layer=split)
    step_fn = step_for(student, teacher, strategy, spl, 3, step, td)
    assert step_fn.schedule.stage_at(step).kind == "pd" and not step_fn.schedule.loss_layers(step)
    logged = check_step(student, frozen(step_fn, td), batch())
    assert logged["loss"] == pytest.approx(logged["pd_mlm"] + logged["nsp_loss"], rel=1e-12)
    assert "kept_share" in logged


@pytest.mark.parametrize("strategy, spl, step", [("pkt", 4, 6), ("jkt", 3, 2)])
def test_layerwise_steps_ignore_dropping(strategy, spl, step):
    grads, logs = [], []
    td = dropping()
    before = copy.deepcopy(td.state_dict())
    for with_td in (None, td):
        student, teacher = pair()
        step_fn = step_for(student, teacher, strategy, spl, 3, step, with_td)
        student.zero_grad()
        logs.append(step_fn(student, batch()))
        grads.append({k: v.copy() for k, v in student.grads.items()})
    assert logs[0] == logs[1] and "kept_share" not in logs[1]
    for name in grads[0]:
        np.testing.assert_array_equal(grads[0][name], grads[1][name], err_msg=name)
    np.testing.assert_array_equal(td.importance.scores, before["scores"])  # nothing learned
    assert td.importance.steps == 1  # the one update made by dropping()


def test_akt_with_dropping_is_refused():
    student, teacher = pair()
    with pytest.raises(ValueError, match="akt"):
        step_for(student, teacher, "akt", 0, 3, 0, dropping())
    with pytest.raises(TypeError, match="TokenDropping"):
        step_for(student, teacher, "pd", 0, 3, 0, dropping().importance)


def test_a_nan_in_the_student_stops_the_pd_step_before_the_table_learns():
    from tinymobilebert.diagnostics import NonFiniteError

    student, teacher = pair()
    student.params["mobilebert.embeddings.word_embeddings.weight"][...] = np.nan
    td = dropping()
    before = td.importance.scores.copy()
    with pytest.raises(NonFiniteError, match="loss became nan.*embeddings"):
        step_for(student, teacher, "pd", 0, 3, 1, td)(student, batch())
    np.testing.assert_array_equal(td.importance.scores, before)


def make(out, steps):
    """A PKT (2 stages of 2 steps) then PD (8 steps) distillation with dropping, as a Trainer."""
    teacher = MobileBertForPreTraining(ib_bert_tiny(num_hidden_layers=2), seed=1)
    student = MobileBertForPreTraining(tiny(num_hidden_layers=2), seed=2)
    sched = TransferSchedule("pkt", 2, 2, 8, pd_warmup=2)
    opt = lamb_for(student.store, sched)
    td = TokenDropping(TokenImportance(99, PROTECTED, NEVER, beta=0.9), keep=0.5)
    step_fn = DistillationStep(teacher, sched, distillation_plan(student.config, teacher.config), opt,
                               token_dropping=td)
    return Trainer(student, opt, synthetic_batches, out, max_steps=steps, save_every=4, progress=False,
                   step_fn=step_fn, extra_state={"token_importance": td}, threads=1), td


def test_resume_in_the_pd_stage_is_exact_with_the_importance_table(tmp_path):
    a, ta = make(tmp_path / "a", 12)
    a.train()
    make(tmp_path / "b", 7)[0].train()  # saves at 4 and at its end (7), in PD
    b, tb = make(tmp_path / "b", 12)
    assert b.resume() and b.state["step"] == 7
    assert tb.importance.steps == 3  # PD steps 5, 6, 7 learned; the layer-wise ones did not
    b.train()
    la = [(r["step"], r["loss"]) for r in read_log(tmp_path / "a") if r["split"] == "train"]
    lb = [(r["step"], r["loss"]) for r in read_log(tmp_path / "b") if r["split"] == "train"]
    assert len(la) == 12 and la == lb
    np.testing.assert_array_equal(ta.importance.scores, tb.importance.scores)
    np.testing.assert_array_equal(ta.importance.counts, tb.importance.counts)
    assert ta.importance.steps == tb.importance.steps == 8
