"""The distill workflow and command: a run folder like pretrain's (configuration, logs with every
term, checkpoints, a student transformers' layout loads), a killed process that resumes to the
same losses, the teacher pretrained by ``pretrain --model``, one-line errors for bad input, and
task distillation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import kill_midway_then_resume

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert import workflows as wf
from tinymobilebert.distill import distill, distill_task
from tinymobilebert.train import read_log

SHAPE = {"num_hidden_layers": 2, "max_position_embeddings": 32}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, run_corpus):
    """A tiny IB-BERT teacher pretrained by the pretrain workflow (a run folder)."""
    out = tmp_path_factory.mktemp("teacher")
    wf.pretrain(out, corpus=run_corpus, model="ib_bert_tiny", config=SHAPE, vocab_size=300, steps=12, batch_size=8,
                max_length=32, warmup=2, eval_every=0, save_every=0, progress=False)
    return str(out)


def distill_cmd(out, teacher, corpus, *extra):
    return [sys.executable, "-m", "tinymobilebert", "distill", "--teacher", teacher, "--out", str(out),
            "--corpus", corpus, "--student", "tiny", "--student-config", json.dumps(SHAPE), "--steps-per-layer",
            "15", "--pd-steps", "30", "--batch-size", "8", "--max-length", "32", "--save-every", "10",
            "--eval-every", "0", "--no-progress", "--threads", "1", *extra]  # a fixed count: bit-identical sums


def train_records(out):
    return [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in read_log(out) if r["split"] == "train"]


@pytest.mark.parametrize("extra, at_least", [([], 35), (["--token-dropping", "0.5"], 45)],
                         ids=["plain", "token-dropping"])
def test_killed_distill_resumes_to_the_same_losses(tmp_path, run_corpus, teacher_dir, extra, at_least):
    whole = tmp_path / "whole"
    subprocess.run(distill_cmd(whole, teacher_dir, run_corpus, *extra), check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"  # killed in the PD stage, past a checkpoint (with dropping: one taken in PD)
    kill_midway_then_resume(distill_cmd(killed, teacher_dir, run_corpus, *extra), killed, train_records,
                            at_least=at_least, total=60)
    assert train_records(killed) == train_records(whole)  # every term and learning rate, bit for bit
    assert (killed / "model" / "model.safetensors").exists()
    if extra:  # the importance table, restored from the checkpoint, ends the same
        from safetensors.numpy import load_file

        a, b = (load_file(str(d / "token_importance.safetensors")) for d in (whole, killed))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_distill_run_folder(tmp_path, run_corpus, teacher_dir):
    r = distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                steps_per_layer=4, pd_steps=6, batch_size=8, max_length=32, eval_every=5, save_every=0, progress=False)
    assert r["steps"] == 14 and r["stages"] == ["PKT stage 1/2 (layer 0)", "PKT stage 2/2 (layer 1)", "PD"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["command"] == "distill" and run["settings"]["strategy"] == "pkt"
    assert run["settings"]["teacher"] == os.path.join(teacher_dir, "model") and run["facts"]["corpus_sha256"]
    conf = json.loads((tmp_path / "run" / "distillation.json").read_text())
    assert conf["schedule"]["total_steps"] == 14 and conf["optimizer"]["bias_correction"] is False
    assert conf["teacher_config"]["intra_bottleneck_size"] == 48 and conf["mapping"] == [0, 1]
    assert "mobilebert.embeddings.word_embeddings.weight" in conf["copied_from_teacher"]
    records = train_records(tmp_path / "run")
    assert records[2]["fmt_layer_0"] > 0 and "weighted_at_layer_0" in records[2] and "lr_layer_1" in records[2]
    assert "pd_mlm" in records[-1] and "nsp_loss" in records[-1] and records[-1]["lr_embeddings_heads"] > 0
    dev = [x for x in read_log(tmp_path / "run") if x["split"] == "dev"]
    assert [x["step"] for x in dev] == [5, 10, 14]
    student = MobileBertForPreTraining.from_pretrained(tmp_path / "run" / "model")
    assert student.config.hidden_size == 32 and student.tokenizer is not None
    assert not any("projection" in n for n in student.params)
    ft = wf.finetune(tmp_path / "ft", wf.load_task("word_order", wf.load_documents(run_corpus), seed=0, max_train=48,
                                                   max_dev=16),
                     model_dir=tmp_path / "run" / "model", steps=3, batch_size=8, max_length=32, warmup=1,
                     eval_every=0, progress=False)
    assert 0 <= ft["dev_accuracy"] <= 1
    # task distillation from that fine-tuned "teacher" into the distilled student
    task = wf.load_task("word_order", wf.load_documents(run_corpus), seed=0, max_train=48, max_dev=16)
    td = distill_task(tmp_path / "td", task, tmp_path / "ft", tmp_path / "run", alpha=0.5, steps=3, batch_size=8,
                      max_length=32, warmup=1, eval_every=0, progress=False)
    assert 0 <= td["dev_accuracy"] <= 1 and 0 <= td["teacher_dev_accuracy"] <= 1
    assert "soft_ce" in train_records(tmp_path / "td")[0]


@pytest.mark.parametrize("args, message", [
    (["--teacher", "{missing}"], "no such folder"),
    (["--teacher", "{empty}"], "no weights"),
    (["--student", "nope"], "unknown preset"),
    (["--student-config", '{"num_attention_heads": 2}'], "heads"),
    (["--student-config", '{"hidden_size": 64}'], "widths 64 (student) and 32 (teacher)"),
    (["--mapping", "0,1,1"], "the student has 2 layers"),
    (["--strategy", "akt", "--no-pd"], "--no-pd"),
    (["--steps-per-layer", "1"], "steps_per_layer >= 2"),
    (["--token-dropping", "0.5", "--strategy", "akt"], "--token-dropping does not combine with --strategy akt"),
    (["--token-dropping", "0.5", "--no-pd"], "--no-pd leaves no PD stage"),
    (["--split-layer", "0"], "--split-layer 0 needs --token-dropping"),
    (["--token-dropping", "0.5", "--split-layer", "1"], "--split-layer: split_layer must be an integer in [0, 0]"),
    (["--task", "word_order", "--token-dropping", "0.5"], "task distillation (--task) does not drop tokens"),
    (["--alpha", "1.5"], "distill: --alpha must be a number in [0, 1], got 1.5"),
    (["--temperature", "0"], "distill: --temperature must be a finite number > 0, got 0.0"),
    (["--max-length", "64"], "--max-length 64 is more than the model's max_position_embeddings (32)"),
    (["--student-config", "[1]"], "--student config overrides must be a JSON object"),
])
def test_bad_input_is_one_line(tmp_path, run_corpus, teacher_dir, args, message, capsys):
    from tinymobilebert.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((open(os.path.join(teacher_dir, "model", "config.json")).read()))
    base = ["--teacher", teacher_dir, "--student", "tiny", "--student-config", json.dumps(SHAPE)]
    args = [a.replace("{missing}", str(tmp_path / "nothing")).replace("{empty}", str(empty)) for a in args]
    code = main(["distill", "--out", str(tmp_path / "out"), "--corpus", run_corpus, "--no-progress", *base, *args])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()  # nothing written


def test_distill_from_python_without_a_layerwise_loss_is_refused(tmp_path, run_corpus, teacher_dir):
    with pytest.raises(ValueError, match=r"^--losses: strategy jkt trains with layer-wise terms, so it needs at least "
                                         r"one of fmt, at, mv \(for PD alone: --strategy pd\)$"):
        distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE, strategy="jkt",
                losses=[], steps_per_layer=2, pd_steps=2, batch_size=8, max_length=32, progress=False)
    assert not (tmp_path / "run").exists()  # refused before the folder is claimed


def test_distill_without_a_held_out_split(tmp_path, run_corpus, teacher_dir):
    r = distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                steps_per_layer=2, pd_steps=2, batch_size=8, max_length=32, dev_fraction=0, eval_every=0,
                save_every=0, progress=False)
    assert r["steps"] == 6 and r["teacher_dev"] is None and r["last_dev"] is None


def test_pretrain_presets_and_copy_errors(tmp_path, teacher_dir):
    cfg = json.loads(open(os.path.join(teacher_dir, "model", "config.json")).read())
    assert cfg["intra_bottleneck_size"] == 48 and cfg["normalization_type"] == "layer_norm"  # ib_bert_tiny
    with pytest.raises(ValueError, match="unknown preset"):
        wf.pretrain(tmp_path / "x", model="nope", steps=1)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="embedding_size"):  # JKT/PKT copy the embeddings: widths must match
        distill(tmp_path / "y", teacher_dir, student="tiny", student_config={**SHAPE, "embedding_size": 8},
                steps_per_layer=2, pd_steps=0, pd=False, progress=False)
    assert not (tmp_path / "y").exists()  # nothing written


def test_student_is_at_most_half_the_teacher():
    from tinymobilebert.config import ib_bert_small_teacher, mobilebert_small_student

    s = MobileBertForPreTraining(mobilebert_small_student(vocab_size=4000)).num_parameters()
    t = MobileBertForPreTraining(ib_bert_small_teacher(vocab_size=4000)).num_parameters()
    assert s <= 0.5 * t
    a, b = mobilebert_small_student(), ib_bert_small_teacher()
    assert (a.hidden_size, a.num_attention_heads, a.num_hidden_layers, a.embedding_size) == \
        (b.hidden_size, b.num_attention_heads, b.num_hidden_layers, b.embedding_size)
    assert np.isclose(s / t, 0.42, atol=0.05)


def test_evaluate_measures_a_distilled_student_as_its_run_did(tmp_path, run_corpus, teacher_dir):
    from tinymobilebert.evaluation import evaluate

    r = distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                steps_per_layer=2, pd_steps=3, batch_size=8, max_length=32, eval_every=0, save_every=0, progress=False)
    again = evaluate(tmp_path / "run" / "model")
    assert again["mlm_accuracy"] == r["last_dev"]["mlm_accuracy"] and again["run"] == str(tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a distill run"):
        distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                steps_per_layer=2, pd_steps=3, progress=False)
    assert distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                   steps_per_layer=2, pd_steps=3, batch_size=8, max_length=32, eval_every=0, save_every=0,
                   progress=False, overwrite=True)["steps"] == 7


def test_progress_names_the_current_stage(tmp_path, run_corpus, teacher_dir, capsys):
    distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
            steps_per_layer=2, pd_steps=2, batch_size=8, max_length=32, eval_every=0, save_every=0,
            progress="lines", progress_every=1)
    err = capsys.readouterr().err
    for stage in ("PKT stage 1/2 (layer 0): step 1/6", "PKT stage 1/2 (layer 0): step 2/6",
                  "PKT stage 2/2 (layer 1): step 3/6", "PD: step 5/6"):
        assert stage in err, err


def test_distill_with_token_dropping(tmp_path, run_corpus, teacher_dir, capsys):
    from tinymobilebert.cli import main
    from tinymobilebert.token_dropping import TokenImportance

    r = distill(tmp_path / "run", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                steps_per_layer=2, pd_steps=4, batch_size=8, max_length=32, eval_every=0, save_every=0,
                token_dropping=0.5, split_layer=0, progress=False)
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert settings["token_dropping"] == 0.5 and settings["split_layer"] == 0
    records = train_records(tmp_path / "run")
    assert [("kept_share" in x) for x in records] == [False] * 4 + [True] * 4  # PD only
    saved = TokenImportance.load(str(tmp_path / "run" / "token_importance.safetensors"))
    assert r["token_importance"].steps == saved.steps == 4  # one update per PD step
    np.testing.assert_array_equal(saved.scores, r["token_importance"].scores)
    dev = r["last_dev"]
    assert "dropping_mlm_loss" in dev and "mlm_loss" in dev and dev["dropping_mlm_loss"] != dev["mlm_loss"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["token_importance"] == \
        "token_importance.safetensors"
    # out of (0, 1]: the Python API and the command line refuse it, nothing written
    with pytest.raises(ValueError, match=r"--token-dropping must be a share of tokens kept in \(0, 1\]"):
        distill(tmp_path / "bad", teacher_dir, corpus=run_corpus, student="tiny", student_config=SHAPE,
                token_dropping=1.5, progress=False)
    with pytest.raises(SystemExit):
        main(["distill", "--out", str(tmp_path / "bad"), "--teacher", teacher_dir, "--token-dropping", "0"])
    assert "share of tokens kept in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ the teacher on resume
def _change_one_weight(model_dir, cls=MobileBertForPreTraining):
    """Load the model in ``model_dir``, nudge one weight, save it back in place (a "retrained" teacher)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cls.from_pretrained(model_dir)
    m.params["mobilebert.embeddings.word_embeddings.weight"][5, 0] += 0.01
    m.save_pretrained(model_dir, tokenizer=m.tokenizer)


def test_a_resumed_distill_run_refuses_a_changed_teacher(tmp_path, run_corpus, teacher_dir, capsys):
    """The teacher's files are fingerprinted when the run starts: the same teacher resumes, one
    retrained in place (one weight changed, saved again) is a one-line error naming --teacher,
    the run folder and the file that changed; a record of an older version warns and resumes."""
    import hashlib
    import shutil

    from tinymobilebert.cli import main

    teacher, out = tmp_path / "teacher", tmp_path / "run"
    shutil.copytree(os.path.join(teacher_dir, "model"), teacher)
    argv = ["distill", "--teacher", str(teacher), "--out", str(out), "--corpus", run_corpus, "--student", "tiny",
            "--student-config", json.dumps(SHAPE), "--steps-per-layer", "2", "--pd-steps", "2", "--batch-size", "8",
            "--max-length", "32", "--eval-every", "0", "--save-every", "0", "--no-progress"]
    assert main(argv) == 0
    facts = json.loads((out / "run.json").read_text())["facts"]
    assert facts["teacher_sha256"]["model.safetensors"] == \
        hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()
    assert set(facts["teacher_sha256"]) == {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"}
    assert main([*argv, "--resume"]) == 0  # the same teacher
    capsys.readouterr()

    _change_one_weight(teacher)
    log = (out / "log.jsonl").read_text()
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: --teacher {teacher} is not the teacher the run in {out} started with (model.safetensors "
                   "changed since then), so the resumed run would not be the one recorded: restore it, or start "
                   "over with --overwrite or another --out\n")
    assert (out / "log.jsonl").read_text() == log  # nothing written

    record = json.loads((out / "run.json").read_text())
    del record["facts"]["teacher_sha256"]  # as an older version recorded it
    (out / "run.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match=f"--teacher {teacher}: the run in {out} did not record a fingerprint of its "
                                         "teacher"):
        distill(out, teacher, corpus=run_corpus, student="tiny", student_config=SHAPE, steps_per_layer=2, pd_steps=2,
                batch_size=8, max_length=32, eval_every=0, save_every=0, progress=False, resume=True)
    recorded = json.loads((out / "run.json").read_text())["facts"]["teacher_sha256"]
    assert recorded["model.safetensors"] == hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()


def test_a_resumed_task_distillation_refuses_a_changed_teacher(tmp_path, run_corpus, teacher_dir):
    from tinymobilebert import MobileBertForSequenceClassification
    from tinymobilebert.train.run_folder import RunFolderError

    task = wf.load_task("word_order", wf.load_documents(run_corpus), seed=0, max_train=16, max_dev=8)
    wf.finetune(tmp_path / "ft", task, model_dir=os.path.join(teacher_dir, "model"), steps=1, batch_size=8,
                max_length=32, warmup=0, eval_every=0, progress=False)
    kw = dict(steps=2, batch_size=8, max_length=32, warmup=0, eval_every=0, save_every=0, progress=False)
    distill_task(tmp_path / "td", task, tmp_path / "ft", teacher_dir, **kw)
    distill_task(tmp_path / "td", task, tmp_path / "ft", teacher_dir, resume=True, **kw)
    _change_one_weight(tmp_path / "ft" / "model", MobileBertForSequenceClassification)
    with pytest.raises(RunFolderError, match=r"^--teacher .*ft/model is not the teacher the run in .*td started with "
                                             r"\(model.safetensors changed since then\)"):
        distill_task(tmp_path / "td", task, tmp_path / "ft", teacher_dir, resume=True, **kw)


def test_a_resumed_run_refuses_a_changed_starting_model(tmp_path, run_corpus, teacher_dir):
    """What a run starts from is fingerprinted like a teacher: ``finetune --model`` and task
    distillation's ``--student``, changed in place between start and resume, are refused."""
    import shutil

    from tinymobilebert.train.run_folder import RunFolderError

    pretrained = tmp_path / "pretrained"
    shutil.copytree(os.path.join(teacher_dir, "model"), pretrained)
    task = wf.load_task("word_order", wf.load_documents(run_corpus), seed=0, max_train=16, max_dev=8)
    ft = dict(steps=1, batch_size=8, max_length=32, warmup=0, eval_every=0, progress=False)
    wf.finetune(tmp_path / "ft", task, model_dir=pretrained, **ft)
    wf.finetune(tmp_path / "ft", task, model_dir=pretrained, resume=True, **ft)  # the same model resumes
    kw = dict(steps=2, batch_size=8, max_length=32, warmup=0, eval_every=0, save_every=0, progress=False)
    distill_task(tmp_path / "td", task, tmp_path / "ft", pretrained, **kw)
    distill_task(tmp_path / "td", task, tmp_path / "ft", pretrained, resume=True, **kw)

    _change_one_weight(pretrained)
    with pytest.raises(RunFolderError, match=r"^--model .*pretrained is not the pretrained model the run in .*ft "
                                             r"started with \(model.safetensors changed since then\)"):
        wf.finetune(tmp_path / "ft", task, model_dir=pretrained, resume=True, **ft)
    with pytest.raises(RunFolderError, match=r"^--student .*pretrained is not the student the run in .*td started "
                                             r"with \(model.safetensors changed since then\)"):
        distill_task(tmp_path / "td", task, tmp_path / "ft", pretrained, resume=True, **kw)
