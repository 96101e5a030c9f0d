"""DynaBERT training: the summed sub-network step, the layer matching, the whole run and its resume.

What is proven here:
- the step's gradients are those of the sum of every sub-network's loss (float64 finite
  differences at 1e-6, teacher at full width and at the student's width, distillation and label
  losses, BERT and MobileBERT), and equal the sum of each sub-network's gradients taken alone;
- the sub-network order (depth descending outside, width descending inside) and the teacher
  hidden state each student state learns from (the spec's tables for L = 12);
- one Trainer step with the DynaBERT step is one optimizer update;
- ``run_dynabert`` runs end to end (teacher fine-tuning, importance, both stages, the table) and
  a run killed in stage 2 and resumed logs the same losses and ends with the same weights;
- the ``dynabert`` command prints the width x depth table.
"""

import os

import numpy as np
import pytest

from tinymobilebert import MobileBertForSequenceClassification
from tinymobilebert.cli import main
from tinymobilebert.config import bert_tiny, tiny
from tinymobilebert.data import Example, Task
from tinymobilebert.dynabert import step as dyna_step
from tinymobilebert.dynabert.run import run_dynabert
from tinymobilebert.dynabert.step import (SubnetworkDistillation, SubnetworkFinetuning, teacher_hidden_indices,
                                          width_depth_subnetworks, width_subnetworks)
from tinymobilebert.gradcheck import check_arrays, perturb_parameters
from tinymobilebert.optim import AdamW
from tinymobilebert.train import Trainer, read_log

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "models", "bert_with_tokenizer")
LAYOUTS = {"released_student": tiny(num_hidden_layers=4, num_feedforward_networks=2),
           "plain_bert": bert_tiny(num_hidden_layers=4)}


def build(cfg, seed):
    m = MobileBertForSequenceClassification(cfg.replace(pad_token_id=None), seed=seed, dtype=np.float64).eval()
    perturb_parameters(m, np.random.default_rng(seed))
    return m


def batch(cfg):
    rng = np.random.default_rng(0)
    mask = np.ones((3, 6), np.int64)
    mask[1, 4:] = 0
    return dict(input_ids=rng.integers(0, cfg.vocab_size, (3, 6)), attention_mask=mask, labels=np.array([0, 1, 1]))


def test_subnetwork_order_and_layer_matching():
    assert width_subnetworks([0.5, 1, 0.25, 0.75]) == [(1.0, 1.0), (0.75, 1.0), (0.5, 1.0), (0.25, 1.0)]
    assert width_depth_subnetworks([0.5, 1.0], [0.5, 1.0, 0.75]) == [
        (1.0, 1.0), (0.5, 1.0), (1.0, 0.75), (0.5, 0.75), (1.0, 0.5), (0.5, 0.5)]
    assert teacher_hidden_indices(12, 1.0) == list(range(13))
    assert teacher_hidden_indices(12, 0.5) == [0, 2, 4, 6, 8, 10, 12]  # the student's last layer -> teacher's last
    assert teacher_hidden_indices(12, 0.75) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12]


def checked_names(m):
    """Embeddings, pooler, classifier, and two layers: one every depth runs, one only d = 1 runs."""
    return [n for n in m.params if "encoder.layer." not in n or ".layer.2." in n or ".layer.3." in n]


@pytest.mark.parametrize("layout, teacher_width", [("released_student", "full"), ("plain_bert", "student")])
def test_distillation_step_gradients(layout, teacher_width):
    cfg = LAYOUTS[layout]
    teacher, student = build(cfg, 1), build(cfg, 2)
    b = batch(cfg)
    step = SubnetworkDistillation(teacher.train(), width_depth_subnetworks([0.5, 1.0], [0.5, 1.0]), 1.0,
                                  teacher_width=teacher_width)
    student.zero_grad()
    logged = step(student, b)
    assert not teacher.training  # the teacher runs in eval mode whatever it was given in
    analytic = {k: v.copy() for k, v in student.grads.items()}
    assert logged["loss"] == pytest.approx(step.objective(student, b), rel=1e-12)
    assert logged["loss"] == pytest.approx(sum(v for k, v in logged.items() if k.startswith("loss_w")), rel=1e-12)
    report = check_arrays(lambda: step.objective(student, b), dict(student.params), analytic,
                          names=checked_names(student), max_entries=3, tol=1e-6)
    assert report.ok(), "\n" + str(report)
    alone = {k: np.zeros_like(v) for k, v in analytic.items()}  # the same gradients, one sub-network at a time
    for sub in step.subnetworks:
        student.zero_grad()
        SubnetworkDistillation(teacher, [sub], 1.0, teacher_width=teacher_width)(student, b)
        for k in alone:
            alone[k] += student.grads[k]
    assert max(np.abs(alone[k] - analytic[k]).max() for k in alone) <= 1e-12 * max(
        np.abs(v).max() for v in analytic.values())


def test_label_loss_step_gradients():
    cfg = LAYOUTS["released_student"]
    student = build(cfg, 3)
    b = batch(cfg)
    step = SubnetworkFinetuning(width_depth_subnetworks([0.25, 1.0], [0.5, 1.0]))
    student.zero_grad()
    step(student, b)
    analytic = {k: v.copy() for k, v in student.grads.items()}
    report = check_arrays(lambda: step.objective(student, b), dict(student.params), analytic,
                          names=checked_names(student), max_entries=3, tol=1e-6)
    assert report.ok(), "\n" + str(report)


def test_hidden_weight_scales_the_hidden_term_and_regression_has_no_logit_term():
    cfg = LAYOUTS["plain_bert"]
    teacher, student = build(cfg, 1), build(cfg, 2)
    b = batch(cfg)
    one = SubnetworkDistillation(teacher, [(0.5, 0.5)], 1.0)(student, b)
    tenth = SubnetworkDistillation(teacher, [(0.5, 0.5)], 0.1)(student, b)
    assert one["hidden_loss"] == tenth["hidden_loss"]
    assert tenth["loss"] == pytest.approx(tenth["logit_loss"] + 0.1 * tenth["hidden_loss"], rel=1e-12)
    reg_t, reg_s = build(cfg.replace(num_labels=1), 1), build(cfg.replace(num_labels=1), 2)
    r = SubnetworkDistillation(reg_t, [(1.0, 1.0)], 1.0)(reg_s, b)
    assert r["logit_loss"] == 0.0 and r["loss"] == r["hidden_loss"] > 0
    with pytest.raises(ValueError, match="teacher_width must be one of"):
        SubnetworkDistillation(teacher, [(1.0, 1.0)], 1.0, teacher_width="paper")


def test_one_trainer_step_is_one_update_of_the_summed_gradients(tmp_path):
    cfg = LAYOUTS["plain_bert"]
    teacher, student = build(cfg, 1), build(cfg, 2)
    b = batch(cfg)
    step = SubnetworkDistillation(teacher, width_depth_subnetworks([0.5, 1.0], [0.5, 1.0]), 1.0)
    opt = AdamW(student.store, lr=1e-3, weight_decay=0.0, max_grad_norm=1.0)
    Trainer(student, opt, lambda epoch, start: iter([b][start:]), str(tmp_path), max_steps=1, step_fn=step,
            progress=False).train()
    assert opt.step_count == 1
    record = read_log(tmp_path)[0]
    assert record["grad_norm"] > 0 and {"loss_w1_d1", "loss_w0.5_d0.5", "hidden_loss"} <= set(record)


# ---------------------------------------------------------------------------------- the run
WORDS = "the model reads text and every layer keeps a state of the words it has seen so far".split()


def toy_task():
    rng = np.random.default_rng(0)

    def examples(n):
        out = []
        for _ in range(n):
            words = list(rng.choice(WORDS, 8))
            label = int("model" in words)
            out.append(Example(" ".join(words), None, label))
        return out

    return Task("toy", 2, examples(48), examples(16), labels=["no", "yes"])


SETTINGS = dict(widths=[0.5, 1.0], depths=[0.5, 1.0], teacher_steps=3, width_steps=3, depth_steps=4, batch_size=8,
                max_length=16, eval_every=2, save_every=2, latency_repeats=1, augment=1)


@pytest.mark.parametrize("save_every, kill_at", [(2, 6), (100, 5)], ids=["after_a_stage2_checkpoint",
                                                                          "before_stage2s_first_checkpoint"])
def test_run_end_to_end_and_resume_is_exact(tmp_path, monkeypatch, save_every, kill_at):
    """Killed in stage 2 after its checkpoint at step 2, or before any (stage 2 then restarts from
    the finished stage 1: its weights and its dropout stream)."""
    task = toy_task()
    settings = {**SETTINGS, "save_every": save_every}
    a = run_dynabert(str(tmp_path / "a"), FIXTURE, task, log=lambda s: None, progress=False, **settings)
    assert len(a["table"]) == 4 and len({r["parameters"] for r in a["table"]}) == 4
    for name in ("teacher/model", "importance.safetensors", "augmented.safetensors", "stage1/model", "stage2/model",
                 "table.md", "summary.json"):
        assert os.path.exists(tmp_path / "a" / name), name
    assert {k for k in read_log(tmp_path / "a" / "stage2")[-1] if k.startswith("accuracy_")} == {
        "accuracy_w1_d1", "accuracy_w0.5_d1", "accuracy_w1_d0.5", "accuracy_w0.5_d0.5"}

    calls = {"n": 0}
    original = dyna_step.SubnetworkDistillation.__call__

    def killed_in_stage2(self, model, b):  # stage 1 takes 3 steps; die at stage 2's step kill_at - 3
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return original(self, model, b)

    monkeypatch.setattr(dyna_step.SubnetworkDistillation, "__call__", killed_in_stage2)
    with pytest.raises(KeyboardInterrupt):
        run_dynabert(str(tmp_path / "b"), FIXTURE, task, log=lambda s: None, progress=False, **settings)
    monkeypatch.setattr(dyna_step.SubnetworkDistillation, "__call__", original)
    with pytest.raises(ValueError, match="--resume"):
        run_dynabert(str(tmp_path / "b"), FIXTURE, task, log=lambda s: None, progress=False, **settings)
    b = run_dynabert(str(tmp_path / "b"), FIXTURE, task, log=lambda s: None, progress=False, resume=True, **settings)
    for stage in ("stage1", "stage2"):
        la = [r["loss"] for r in read_log(tmp_path / "a" / stage) if r["split"] == "train"]
        lb = [r["loss"] for r in read_log(tmp_path / "b" / stage) if r["split"] == "train"]
        assert la == lb and len(la) == SETTINGS[{"stage1": "width_steps", "stage2": "depth_steps"}[stage]]
    ma = MobileBertForSequenceClassification.from_pretrained(str(tmp_path / "a" / "stage2" / "model"))
    mb = MobileBertForSequenceClassification.from_pretrained(str(tmp_path / "b" / "stage2" / "model"))
    assert all(np.array_equal(ma.params[k], mb.params[k]) for k in ma.params)
    assert [r["accuracy"] for r in a["table"]] == [r["accuracy"] for r in b["table"]]


def test_dynabert_command_prints_the_table(tmp_path, capsys):
    """On a GLUE-style folder (SST-2's columns), from a pretrained (masked-LM) directory."""
    task, glue = toy_task(), tmp_path / "glue"
    glue.mkdir()
    for split, examples in (("train", task.train), ("dev", task.dev)):
        rows = ["sentence\tlabel"] + [f"{e.text_a}\t{e.label}" for e in examples]
        (glue / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main(["dynabert", "--model", FIXTURE, "--task", str(glue), "--out", str(out), "--widths", "0.5,1",
                 "--depths", "0.5,1", "--teacher-steps", "2", "--width-steps", "1", "--depth-steps", "1",
                 "--batch-size", "8", "--max-length", "16", "--latency-repeats", "1", "--threads", "1",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| width | depth | heads | FFN | layers | dev accuracy | parameters | MFLOPs/token |" in printed
    assert printed.count("\n| ") == 5  # header + 4 sub-networks
    assert (out / "table.md").read_text().strip() in printed


# ---------------------------------------------------------------------------------- augmentation, table
def test_augmentation_replaces_single_piece_words_with_words():
    from tinymobilebert import MobileBertForMaskedLM
    from tinymobilebert.data import encode_examples
    from tinymobilebert.dynabert.augment import augment_examples, replaceable_positions

    mlm = MobileBertForMaskedLM.from_pretrained(FIXTURE)
    tok = mlm.tokenizer
    enc = encode_examples(toy_task().train[:12], tok, 16)
    a = augment_examples(enc, mlm, tok, 3, np.random.default_rng(0))
    again = augment_examples(enc, mlm, tok, 3, np.random.default_rng(0))
    assert all(np.array_equal(a[k], again[k]) for k in a)  # the seed decides everything
    N = len(enc["labels"])
    for k in enc:
        np.testing.assert_array_equal(a[k][:N], enc[k])  # the originals first, unchanged
    new = a["input_ids"][N:]
    assert 0 < len(new) <= 3 * N and len({r.tobytes() for r in a["input_ids"]}) == len(a["input_ids"])  # no duplicates
    allowed = replaceable_positions(enc["input_ids"], enc["attention_mask"], tok)
    words = {i for i, t in enumerate(tok.ids_to_tokens) if not t.startswith("##") and any(c.isalnum() for c in t)}
    words -= set(tok.all_special_ids)
    changed = 0
    for row in new:  # each new row is an original with words put in at replaceable positions only
        orig = [o for o, m in zip(enc["input_ids"], allowed) if not ((o != row) & ~m).any()]
        assert orig, row
        diff = np.flatnonzero(orig[0] != row)
        changed += len(diff)
        assert all(int(row[i]) in words for i in diff)
    assert changed > 0
    with pytest.raises(ValueError, match="copies must be >= 1"):
        augment_examples(enc, mlm, tok, 0, np.random.default_rng(0))


def test_table_format():
    from tinymobilebert.dynabert.table import format_table

    rows = [{"width": 0.5, "depth": 1.0, "heads": 2, "neurons": 64, "layers": 4, "parameters": 12345,
             "flops_per_token": 2.5e6, "accuracy": 0.8125, "accuracy_std": 0.0125, "latency_b1_ms": 1.234,
             "latency_b32_ms": 20.5}]
    text = format_table(rows)
    assert "| 0.5 | 1 | 2 | 64 | 4 | 81.2 ± 1.2 | 12,345 | 2.50 | 1.23 | 20.50 |" in text
    assert text.splitlines()[0].endswith("| latency b=1 (ms) | latency b=32 (ms) |")


@pytest.mark.parametrize("args, message", [
    (["--widths", "0,1"], "error: --widths must be a comma list of numbers in (0, 1], got"),
    (["--depth-steps", "0"], "error: --depth-steps must be a whole number >= 1, got 0"),
    (["--max-length", "64"], "error: --max-length 64 is more than the model's max_position_embeddings (32)"),
    (["--resume", "--overwrite"], "error: --resume and --overwrite exclude each other"),
    (["--teacher-lr", "-1"], "error: --teacher-lr must be a number > 0, got -1"),
    (["--warmup", "10", "--final-steps", "5"], "error: --warmup 10 is longer than a stage ("),
    (["--task", "word_order", "--batch-size", "100000", "--max-length", "32"],
     "error: word_order has 4000 training examples, fewer than one batch (--batch-size 100000)"),
])
def test_dynabert_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["dynabert", "--model", FIXTURE, "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert main(["dynabert", "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith("error: dynabert needs --model")


def test_tables_of_several_runs_combine(tmp_path, capsys):
    import json

    from tinymobilebert.dynabert.table import combine_tables, main as table_main

    base = {"width": 1.0, "depth": 1.0, "heads": 4, "neurons": 8, "layers": 2, "parameters": 100,
            "flops_per_token": 1e6, "latency_b1_ms": 1.0}
    a, b = [dict(base, accuracy=0.6, latency_b1_ms=1.0)], [dict(base, accuracy=0.7, latency_b1_ms=3.0)]
    row = combine_tables([a, b])[0]
    assert row["accuracy"] == pytest.approx(0.65) and row["accuracy_std"] == pytest.approx(0.05)
    assert row["latency_b1_ms"] == 2.0 and row["runs"] == 2
    with pytest.raises(ValueError, match="same sub-networks"):
        combine_tables([a, [dict(base, parameters=99, accuracy=0.5)]])
    for name, rows in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "table.json").write_text(json.dumps(rows))
    table_main([str(tmp_path / "a"), str(tmp_path / "b" / "table.json")])
    assert "| 65.0 ± 5.0 |" in capsys.readouterr().out


def test_a_resumed_run_refuses_a_changed_model(tmp_path):
    """--model's files are fingerprinted in run.json; a resume against a model saved again with
    one weight changed is refused before anything is written, naming the file."""
    import shutil

    from tinymobilebert.checkpoint import read_safetensors, write_safetensors
    from tinymobilebert.train.run_folder import RunFolderError

    model, out = tmp_path / "model", tmp_path / "run"
    shutil.copytree(FIXTURE, model)
    task = toy_task()
    settings = dict(widths=[1.0], depths=[1.0], teacher_steps=1, width_steps=1, depth_steps=1, batch_size=8,
                    max_length=16, eval_every=0, save_every=0, latency_repeats=0)
    run_dynabert(str(out), str(model), task, log=lambda s: None, progress=False, **settings)
    run_dynabert(str(out), str(model), task, log=lambda s: None, progress=False, resume=True, **settings)
    weights = read_safetensors(model / "model.safetensors")
    name = sorted(weights)[0]
    weights[name].flat[0] += 0.01
    write_safetensors(str(model / "model.safetensors"), weights)
    with pytest.raises(RunFolderError, match=rf"^--model {model} is not the model the run in {out} started with "
                                             r"\(model.safetensors changed since then\)"):
        run_dynabert(str(out), str(model), task, log=lambda s: None, progress=False, resume=True, **settings)
