"""A run folder has one owner: refusing, overwriting and resuming runs; settings recorded and checked.

Each test here pins down a finding of issue 12 (the second run that reused the first's vocabulary
and mixed their logs and checkpoints; flags ignored on resume; short runs failing on a warm-up
nobody set; small corpora failing for the wrong reason).
"""

import hashlib
import json
import os

import numpy as np
import pytest

from tinymobilebert import workflows as wf
from tinymobilebert.train import read_log


def snapshot(folder):
    """{relative path: SHA-256} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def steps_logged(out, split="train"):
    return [r["step"] for r in read_log(out) if r["split"] == split]


def checkpoints(out):
    return sorted(p for p in os.listdir(os.path.join(out, "checkpoints")) if p.startswith("step-"))


# ------------------------------------------------------------------------------ one owner
def test_a_second_run_without_resume_or_overwrite_is_refused_and_changes_nothing(tmp_path, tiny_pretrain):
    out = tmp_path / "run"
    wf.pretrain(out, steps=12, save_every=4, eval_every=0, **tiny_pretrain)
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"already holds a pretrain run.*--resume.*--overwrite"):
        wf.pretrain(out, steps=6, save_every=2, eval_every=0, **{**tiny_pretrain, "vocab_size": 250})
    assert snapshot(out) == before


def test_overwrite_deletes_the_old_run_first_and_resume_then_continues_the_new_one(tmp_path, tiny_pretrain):
    out = tmp_path / "run"
    wf.pretrain(out, steps=12, save_every=4, eval_every=0, **tiny_pretrain)
    (out / "notes.txt").write_text("mine")  # not the run's: kept
    second = wf.pretrain(out, steps=6, save_every=2, eval_every=0, overwrite=True,
                         **{**tiny_pretrain, "vocab_size": 250})
    assert second["vocab_size"] == len((out / "vocab.txt").read_text().splitlines()) <= 250  # its own vocabulary
    assert steps_logged(out) == [1, 2, 3, 4, 5, 6]  # not appended to the first run's 12
    assert checkpoints(out) == ["step-00000004", "step-00000006"]  # the old step-8/12 did not outrank them
    assert (out / "notes.txt").read_text() == "mine"
    resumed = wf.pretrain(out, resume=True, **{k: v for k, v in tiny_pretrain.items() if k == "progress"})
    assert resumed["resumed"] and resumed["vocab_size"] == second["vocab_size"]
    assert steps_logged(out) == [1, 2, 3, 4, 5, 6]


def test_overwrite_removes_the_old_runs_token_importance_table(tmp_path, tiny_pretrain):
    out = tmp_path / "run"
    three_layers = {**tiny_pretrain, "config": {**tiny_pretrain["config"], "num_hidden_layers": 3}}
    wf.pretrain(out, steps=2, eval_every=0, save_every=0, token_dropping=0.5, **three_layers)
    assert (out / "token_importance.safetensors").exists()
    wf.pretrain(out, steps=2, eval_every=0, save_every=0, overwrite=True, **tiny_pretrain)
    assert not (out / "token_importance.safetensors").exists()  # the new run drops no tokens


def test_a_folder_of_other_files_is_never_a_run_folder(tmp_path, tiny_pretrain):
    (tmp_path / "thesis.tex").write_text("precious")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ValueError, match="is not empty and holds no run"):
            wf.pretrain(tmp_path, steps=4, **flags, **tiny_pretrain)
    assert os.listdir(tmp_path) == ["thesis.tex"]


def test_resume_and_overwrite_exclude_each_other(tmp_path, tiny_pretrain):
    with pytest.raises(ValueError, match="--resume and --overwrite"):
        wf.pretrain(tmp_path / "r", steps=4, resume=True, overwrite=True, **tiny_pretrain)


# ------------------------------------------------------------------------------ resume: settings
def test_more_steps_on_resume_are_applied_and_logged(tmp_path, tiny_pretrain, capsys):
    out = tmp_path / "run"
    wf.pretrain(out, steps=8, save_every=4, eval_every=0, **tiny_pretrain)
    r = wf.pretrain(out, steps=12, resume=True, progress=False)
    assert r["steps"] == 12 and steps_logged(out) == list(range(1, 13))
    assert "--steps changed from 8 to 12" in capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["steps"] == 12 and record["changes"] == [{"steps": {"from": 8, "to": 12}}]
    again = wf.pretrain(out, resume=True, progress=False)  # the run now has 12 steps: nothing left to do
    assert again["steps"] == 12 and steps_logged(out) == list(range(1, 13))


def test_flags_that_differ_from_the_record_are_an_error_listing_them(tmp_path, tiny_pretrain):
    out = tmp_path / "run"
    wf.pretrain(out, steps=4, save_every=2, eval_every=0, **tiny_pretrain)
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"these flags differ: --batch-size 4 \(the run has 8\); --lr 0.01 "
                                         r"\(the run has 0.004\).*safe to change on resume: --steps"):
        wf.pretrain(out, resume=True, batch_size=4, lr=0.01, progress=False)
    with pytest.raises(ValueError, match=r"checkpoint at step 4, past --steps 3"):
        wf.pretrain(out, resume=True, steps=3, progress=False)
    assert snapshot(out) == before
    wf.pretrain(out, resume=True, batch_size=8, progress=False)  # the recorded value: not a difference


def test_save_every_and_eval_every_are_recorded_and_kept_on_resume(tmp_path, tiny_pretrain, monkeypatch):
    from tinymobilebert.train.trainer import Trainer

    out = tmp_path / "run"
    save = Trainer._save

    def save_then_die_at_step_6(self):
        save(self)
        if self.state["step"] == 6:
            raise KeyboardInterrupt  # the run stops right after its checkpoint at step 6

    monkeypatch.setattr(Trainer, "_save", save_then_die_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        wf.pretrain(out, steps=12, save_every=3, eval_every=3, **tiny_pretrain)
    monkeypatch.setattr(Trainer, "_save", save)
    wf.pretrain(out, resume=True, progress=False)  # no --save-every / --eval-every given
    assert steps_logged(out, "dev") == [3, 6, 9, 12]  # not the default 100
    assert checkpoints(out) == ["step-00000009", "step-00000012"]


# ------------------------------------------------------------------------------ warm-up
def test_a_short_run_gets_a_warmup_that_fits(tmp_path, tiny_pretrain):
    tiny_pretrain.pop("warmup")  # the default
    r = wf.pretrain(tmp_path / "short", steps=12, save_every=0, eval_every=0, **tiny_pretrain)
    assert r["steps"] == 12 and r["settings"]["warmup"] == 1  # 7.5% of 12, not 60
    lrs = [rec["lr"] for rec in read_log(tmp_path / "short") if rec["split"] == "train"]
    assert lrs[0] == 0 and max(lrs) == pytest.approx(4e-3)


@pytest.mark.parametrize("bad, message", [
    ({"steps": 40, "warmup": 60}, r"--warmup 60 is longer than the run \(--steps 40\)"),
    ({"steps": 0}, r"--steps must be a whole number >= 1, got 0"),
    ({"steps": 10, "lr": -1.0}, r"--lr must be a number > 0"),
    ({"steps": 10, "dev_fraction": 1.5}, r"--dev-fraction must be in \[0, 1\)"),
    ({"steps": 10, "max_length": 64}, r"--max-length 64 is more than the model's max_position_embeddings \(32\)"),
    ({"steps": 10, "config": {"hidden_sise": 3}}, r"--config .*hidden_sise"),
])
def test_bad_settings_name_the_flag_and_write_nothing(tmp_path, tiny_pretrain, bad, message):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        wf.pretrain(out, **{**tiny_pretrain, **bad})
    assert not out.exists()


# ------------------------------------------------------------------------------ small corpora
def write_docs(path, n_docs, sentences=6):
    text = "\n\n\n".join(" ".join(f"Document {d} says thing {s} about the quiet lake near the hill."
                                  for s in range(sentences)) for d in range(n_docs))
    path.write_text(text)
    return str(path)


def test_a_one_document_corpus_is_told_about_the_held_out_split(tmp_path, tiny_pretrain):
    corpus = write_docs(tmp_path / "one.txt", 1)
    small = {**tiny_pretrain, "corpus": corpus, "vocab_size": 60, "batch_size": 1}
    with pytest.raises(ValueError, match=r"only 1 document.*held-out split \(--dev-fraction 0.05\).*--dev-fraction 0"):
        wf.pretrain(tmp_path / "a", steps=2, **small)
    r = wf.pretrain(tmp_path / "b", steps=2, dev_fraction=0, nsp=False, **small)
    assert r["last_dev"] is None and r["steps"] == 2


def test_a_corpus_too_small_for_next_sentence_pairs_says_so(tmp_path, tiny_pretrain):
    corpus = write_docs(tmp_path / "two.txt", 2)
    small = {**tiny_pretrain, "corpus": corpus, "vocab_size": 60, "batch_size": 1}
    with pytest.raises(ValueError, match=r"next-sentence pairs need at least two documents.*training split has 1 "
                                         r".*held-out split.*--no-nsp"):
        wf.pretrain(tmp_path / "a", steps=2, **small)
    with pytest.raises(ValueError, match=r"fewer than one batch \(--batch-size 64\)"):
        wf.pretrain(tmp_path / "b", steps=2, nsp=False, **{**small, "batch_size": 64})


# ------------------------------------------------------------------------------ the module itself
def test_run_folder_api(tmp_path):
    from tinymobilebert.train.run_folder import RunFolder, RunFolderError, read_run_record

    defaults = {"steps": 10, "lr": 1.0, "name": "x"}
    run = RunFolder(tmp_path / "r", "distill", {"steps": 5, "lr": None}, defaults)
    assert run.settings == {"steps": 5, "lr": 1.0, "name": "x"} and not run.resuming
    assert not (tmp_path / "r").exists()  # nothing written before start()
    run.start(facts={"teacher_sha256": "abc"})
    assert read_run_record(tmp_path / "r") == {"command": "distill", "settings": run.settings,
                                                "facts": {"teacher_sha256": "abc"}, "changes": []}
    again = RunFolder(tmp_path / "r", "distill", {"steps": 7}, defaults, resume=True, safe_to_change=("steps",))
    assert again.resuming and again.settings["steps"] == 7 and again.changes == {"steps": (5, 7)}
    with pytest.raises(RunFolderError, match="inputs have changed.*teacher_sha256 is xyz now, abc when"):
        again.start(facts={"teacher_sha256": "xyz"})
    with pytest.raises(RunFolderError, match="holds a distill run; pretrain --resume cannot continue it"):
        RunFolder(tmp_path / "r", "pretrain", {}, defaults, resume=True)
    with pytest.raises(TypeError, match=r"settings \['typo'\] are not in the defaults"):
        RunFolder(tmp_path / "q", "distill", {"typo": 1}, defaults)
    assert np.isclose(RunFolder(tmp_path / "r", "distill", {}, defaults, resume=True).settings["lr"], 1.0)
