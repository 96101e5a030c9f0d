"""Training: the loop, checkpoints, exact resume (including a real process killed mid-run), the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import (TINY_MODEL, kill_midway_then_resume, pretrain_argv, synthetic_batches, synthetic_trainer,
                      train_losses)

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert.config import tiny
from tinymobilebert.optim import AdamW
from tinymobilebert.train import Trainer, latest_checkpoint, read_log

def test_resume_in_process_is_exact(tmp_path):
    synthetic_trainer(tmp_path / "a", 12).train()
    synthetic_trainer(tmp_path / "b", 7).train()  # saves at 4 and at its end (7)
    t = synthetic_trainer(tmp_path / "b", 12)
    assert t.resume() and t.state == {"step": 7, "epoch": 1, "batch": 2}
    t.train()
    a = [r["loss"] for r in read_log(tmp_path / "a")]
    b = [r["loss"] for r in read_log(tmp_path / "b")]
    assert len(a) == len(b) == 12 and a == b  # bit-identical, dropout included


class RunningMean:
    """A stand-in for state a custom step keeps (token importances, a distillation projection)."""

    def __init__(self):
        self.mean, self.count = np.zeros(3), 0

    def state_dict(self):
        return {"mean": self.mean.copy(), "count": self.count}

    def load_state_dict(self, d):
        self.mean[...], self.count = d["mean"], int(d["count"])


def make_custom(out, steps):
    """A custom step: the MLM loss at half weight, a running mean of the NSP logits kept as extra state."""
    t = synthetic_trainer(out, steps)
    tracker = RunningMean()

    def step(model, batch):
        o = model.forward(**batch, output_hidden_states=False)
        model.backward(grad_outputs={"seq_relationship_logits": np.full((4, 2), 0.1)})
        tracker.count += 1
        tracker.mean[:2] += (o.seq_relationship_logits.mean(axis=0) - tracker.mean[:2]) / tracker.count
        return {"loss": o.loss, "tracked": tracker.mean[0], "count": tracker.count}

    t.step_fn, t.extra_state = step, {"tracker": tracker}
    return t, tracker


def test_custom_step_and_extra_state_resume_exactly(tmp_path):
    whole, _ = make_custom(tmp_path / "a", 12)
    whole.train()
    make_custom(tmp_path / "b", 7)[0].train()
    t, tracker = make_custom(tmp_path / "b", 12)
    assert t.resume() and tracker.count == 7
    t.train()
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [(r["loss"], r["tracked"], r["count"]) for r in a] == [(r["loss"], r["tracked"], r["count"]) for r in b]
    t2 = synthetic_trainer(tmp_path / "b", 12)
    t2.extra_state = {"other": RunningMean()}
    with pytest.raises(ValueError, match="no state for 'other'"):
        t2.resume()


def test_checkpoints_are_pruned_and_latest_points_at_the_newest(tmp_path):
    t = synthetic_trainer(tmp_path, 12, save_every=2)
    t.train()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000010", "step-00000012"]
    assert latest_checkpoint(tmp_path).endswith("step-00000012")
    assert not list(root.glob("*.tmp-*"))


def test_a_checkpoint_interrupted_while_written_is_never_used(tmp_path):
    t = synthetic_trainer(tmp_path, 4, save_every=4)
    t.train()
    tmp = tmp_path / "checkpoints" / "step-00000008.tmp-999"  # what a kill mid-save leaves
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).endswith("step-00000004")


def test_log_survives_a_torn_last_line(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"split": "train", "step": 1, "loss": 2.0}\n{"split": "tr')
    assert read_log(tmp_path) == [{"split": "train", "step": 1, "loss": 2.0}]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_nan_loss_stops_with_a_clear_error(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    opt = AdamW(m.store, lr=1e30)  # diverges at once
    t = Trainer(m, opt, synthetic_batches, tmp_path, max_steps=20, progress=False)
    with pytest.raises(FloatingPointError, match="loss became"):
        t.train()


def test_trainer_argument_errors(tmp_path):
    m = MobileBertForPreTraining(tiny())
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        Trainer(m, AdamW(m.store), synthetic_batches, tmp_path, max_steps=0)
    t = Trainer(m, AdamW(m.store), lambda e, s: iter(()), tmp_path, max_steps=2, progress=False)
    with pytest.raises(ValueError, match="produced no batch"):
        t.train()


# ------------------------------------------------------------------------------ real processes
PRETRAIN_FLAGS = ("--save-every", "10", "--eval-every", "0", "--warmup", "5")


def test_killed_process_resumes_exactly(tmp_path, run_corpus):
    steps = 120
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(pretrain_argv(whole, run_corpus, steps, *PRETRAIN_FLAGS), check=True, capture_output=True,
                   timeout=300)
    kill_midway_then_resume(pretrain_argv(killed, run_corpus, steps, *PRETRAIN_FLAGS), killed, train_losses,
                            at_least=25, total=steps)
    assert train_losses(killed) == train_losses(whole)  # every step's loss, bit for bit
    assert (killed / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("command", ["demo", "pretrain", "finetune", "evaluate", "plot"])
def test_every_subcommand_has_help(command):
    out = subprocess.run([sys.executable, "-m", "tinymobilebert", command, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout


def test_finetune_evaluate_and_plot(tmp_path, run_corpus):
    from tinymobilebert import workflows as wf
    from tinymobilebert.cli import main

    pre = wf.pretrain(tmp_path / "pre", corpus=run_corpus, vocab_size=300, config=TINY_MODEL, steps=10, batch_size=8,
                      max_length=32, warmup=2, eval_every=5, save_every=0, progress=False)
    assert pre["last_dev"]["mlm_accuracy"] >= 0 and pre["steps"] == 10
    docs = wf.load_documents(run_corpus)
    task = wf.load_task("word_order", docs, seed=0, max_train=64, max_dev=32)
    ft = wf.finetune(tmp_path / "ft", task, model_dir=tmp_path / "pre" / "model", steps=6, batch_size=8,
                     max_length=32, warmup=1, eval_every=3, progress=False)
    assert 0 <= ft["dev_accuracy"] <= 1 and 0 <= ft["bow_dev_accuracy"] <= 1
    assert json.loads((tmp_path / "ft" / "summary.json").read_text())["task"] == "word_order"
    ev = wf.evaluate(tmp_path / "pre" / "model", corpus=run_corpus, max_length=32, batch_size=8)
    assert 0 <= ev["mlm_accuracy"] <= 1
    assert main(["plot", str(tmp_path / "pre"), str(tmp_path / "ft"), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="give --task"):
        wf.evaluate(tmp_path / "ft" / "model")
