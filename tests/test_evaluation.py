"""``evaluate`` rebuilds its run's held-out data and settings, so its figures are the run's log's, exactly."""

import json
import warnings

import pytest

from tinymobilebert import workflows as wf
from tinymobilebert.train import read_log


def last_dev(out):
    return [r for r in read_log(out) if r["split"] == "dev"][-1]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, run_corpus):
    """A pretraining run on a corpus file with batch size 8 (evaluate's old default was 64 on the built-in corpus)."""
    from conftest import TINY_MODEL

    out = tmp_path_factory.mktemp("eval") / "pre"
    wf.pretrain(out, corpus=run_corpus, vocab_size=300, config=dict(TINY_MODEL), batch_size=8, max_length=32,
                steps=8, warmup=1, save_every=4, eval_every=4, eval_batches=6, progress=False)
    return out


def test_held_out_mlm_figures_match_the_runs_log_exactly(pretrained, run_corpus):
    r = wf.evaluate(pretrained / "model")
    logged = last_dev(pretrained)
    assert logged["step"] == 8
    for key in ("mlm_accuracy", "mlm_loss", "nsp_accuracy", "masked_tokens"):
        assert r[key] == logged[key], key  # exactly: the same batches, the same weights
    assert r["used"]["corpus"] == run_corpus and r["used"]["batch_size"] == 8 and r["used"]["eval_batches"] == 6


def test_evaluate_reports_what_it_used(pretrained, run_corpus):
    lines = []
    wf.evaluate(pretrained / "model", report=lines.append)
    assert len(lines) == 1 and f"settings of the run in {pretrained}" in lines[0] and run_corpus in lines[0]


def test_a_checkpoint_evaluates_to_its_steps_figures(pretrained):
    r = wf.evaluate(pretrained / "checkpoints" / "step-00000004")
    logged = [x for x in read_log(pretrained) if x["split"] == "dev" and x["step"] == 4][0]
    assert (r["mlm_accuracy"], r["mlm_loss"]) == (logged["mlm_accuracy"], logged["mlm_loss"])


def test_given_settings_override_the_record_and_say_so(pretrained):
    lines = []
    r = wf.evaluate(pretrained / "model", batch_size=4, report=lines.append)
    assert r["used"]["batch_size"] == 4 and "given, unlike the run: batch_size 4 (run: 8)" in lines[0]


def test_a_changed_corpus_is_warned_about(tmp_path, run_corpus):
    from conftest import TINY_MODEL

    corpus = tmp_path / "docs.txt"
    corpus.write_text(open(run_corpus).read())
    out = tmp_path / "pre"
    wf.pretrain(out, corpus=str(corpus), vocab_size=300, config=dict(TINY_MODEL), batch_size=8, max_length=32, steps=2,
                warmup=1, save_every=0, eval_every=0, progress=False)
    corpus.write_text(open(run_corpus).read().replace("the", "a"))
    with pytest.warns(UserWarning, match="the corpus has changed since the run"):
        wf.evaluate(out / "model")


def test_cli_evaluate_prints_what_it_used_and_the_runs_figures(pretrained, capsys):
    from tinymobilebert.cli import main

    assert main(["evaluate", "--model", str(pretrained / "model")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["mlm_accuracy"] == last_dev(pretrained)["mlm_accuracy"]
    assert "evaluate: held-out masked-LM with settings of the run" in err and "batch_size=8" in err


def test_classifier_dev_accuracy_matches_the_runs_log_exactly(pretrained, run_corpus, tmp_path, capsys):
    from tinymobilebert.cli import main

    out = tmp_path / "ft"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["finetune", "--out", str(out), "--model", str(pretrained / "model"), "--task", "word_order",
                     "--corpus", run_corpus, "--steps", "4", "--warmup", "1", "--batch-size", "8", "--max-length",
                     "32", "--eval-every", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model")]) == 0  # no --task: the run's
    r = json.loads(capsys.readouterr().out)
    logged = last_dev(out)
    assert r["task"] == "word_order" and (r["accuracy"], r["loss"], r["examples"]) == (
        logged["accuracy"], logged["loss"], logged["examples"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "reordered", "1": "as written"}
    assert config["label2id"] == {"reordered": 0, "as written": 1}


# ------------------------------------------------------------------------------ task distillation and DynaBERT runs
def test_a_task_distillation_run_evaluates_as_its_log(pretrained, run_corpus, tmp_path):
    """``evaluate`` reads a ``distill --task`` run's record (task, corpus, seed, dev fraction, max
    length), given its model or the run folder, and repeats its last dev figures exactly."""
    from tinymobilebert.distill import distill_task

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf.finetune(tmp_path / "ft", "word_order", model_dir=pretrained / "model", corpus=run_corpus, steps=2,
                    warmup=1, batch_size=8, max_length=32, eval_every=0, progress=False)
        distill_task(tmp_path / "td", "word_order", tmp_path / "ft", pretrained / "model", corpus=run_corpus, steps=3,
                     warmup=1, batch_size=8, max_length=24, seed=1, eval_every=3, save_every=0, progress=False)
    logged = last_dev(tmp_path / "td")
    for given in (tmp_path / "td" / "model", tmp_path / "td"):
        lines = []
        r = wf.evaluate(given, report=lines.append)
        assert r["task"] == "word_order" and r["run"] == str(tmp_path / "td")
        assert (r["accuracy"], r["loss"], r["examples"]) == (logged["accuracy"], logged["loss"], logged["examples"])
        assert r["used"]["max_length"] == 24 and r["used"]["seed"] == 1 and r["used"]["corpus"] == run_corpus
        assert f"settings of the run in {tmp_path / 'td'}" in lines[0] and "subnetwork" not in r


def test_a_dynabert_run_evaluates_its_supernet_at_full_size(pretrained, run_corpus, tmp_path, capsys):
    """Given a ``dynabert`` run folder, ``evaluate`` takes its last stage's model, evaluates it at
    full width and depth on the run's task, and says so; the figures are the run's own (its
    stage-2 log and its table's full-size row), also from a stage's checkpoint."""
    from tinymobilebert.cli import main
    from tinymobilebert.dynabert.run import run_dynabert
    from tinymobilebert.evaluation import locate

    out = tmp_path / "dyna"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = run_dynabert(str(out), str(pretrained / "model"), "word_order", corpus=run_corpus, widths=[0.5, 1.0],
                           depths=[1.0], teacher_steps=2, width_steps=2, depth_steps=2, batch_size=8, max_length=32,
                           eval_every=2, save_every=2, latency_repeats=0, log=lambda s: None, progress=False)
    full = [row for row in run["table"] if (row["width"], row["depth"]) == (1.0, 1.0)][0]
    logged = last_dev(out / "stage2")
    assert logged["accuracy_w1_d1"] == full["accuracy"]
    lines = []
    r = wf.evaluate(out, report=lines.append)
    assert r["accuracy"] == full["accuracy"] and r["task"] == "word_order" and r["run"] == str(out)
    assert r["subnetwork"] == {"width_mult": 1.0, "depth_mult": 1.0} and r["used"]["max_length"] == 32
    assert "the model is the DynaBERT supernet at full width and depth" in lines[0] and "table.md" in lines[0]
    checkpoint = sorted((out / "stage2" / "checkpoints").iterdir())[-1]
    assert wf.evaluate(checkpoint)["accuracy"] == full["accuracy"]
    _, run_dir, record, log_dir = locate(str(out / "stage2" / "model"))  # the stage's log, not RUN/log.jsonl
    assert (run_dir, log_dir, record["command"]) == (str(out), str(out / "stage2"), "dynabert")
    assert wf.evaluate(out / "stage2" / "model")["accuracy"] == full["accuracy"]
    assert main(["evaluate", "--model", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert json.loads(printed)["subnetwork"] == {"width_mult": 1.0, "depth_mult": 1.0}
    assert "full width and depth" in err
