"""The command line: one-line errors naming the flag, non-zero exits, --debug, progress lines in logs."""

import os
import subprocess
import sys

import pytest
from conftest import pretrain_argv


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "tinymobilebert", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--out", "{tmp}/a", "--steps", "0"], "error: --steps must be a whole number >= 1, got 0"),
    (["pretrain", "--out", "{tmp}/a", "--steps", "40", "--warmup", "60"],
     "error: --warmup 60 is longer than the run (--steps 40)"),
    (["pretrain", "--out", "{tmp}/a", "--corpus", "{tmp}/nowhere.txt"], "error: --corpus {tmp}/nowhere.txt does not exist"),
    (["finetune", "--out", "{tmp}/a", "--task", "{tmp}/nowhere.tsv", "--from-scratch", "{tmp}/v.txt"],
     "error: --task must be one of"),
    (["evaluate", "--model", "{tmp}/nowhere"], "error: no config.json at {tmp}/nowhere"),
    (["pretrain", "--out", "{tmp}/a", "--resume", "--overwrite"], "error: --resume and --overwrite exclude each other"),
])
def test_errors_are_one_line_naming_the_flag(tmp_path, args, message):
    r = cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 1
    assert r.stderr.splitlines() == [r.stderr.strip()], f"not one line:\n{r.stderr}"
    assert r.stderr.startswith(message.format(tmp=tmp_path)), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "a").exists()


def test_a_malformed_command_line_is_argparses_one_line_error(tmp_path):
    r = cli("pretrain", "--out", str(tmp_path / "a"), "--config", "{nope")
    assert r.returncode == 2 and "argument --config: expected a JSON file or a JSON object" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(tmp_path, how):
    args = ["pretrain", "--out", str(tmp_path / "a"), "--steps", "0"]
    r = cli(*args, "--debug") if how == "flag" else cli(*args, env={"TINYMOBILEBERT_DEBUG": "1"})
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr
    assert "ValueError: --steps must be a whole number >= 1" in r.stderr


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, run_corpus):
    argv = [a for a in pretrain_argv(tmp_path / "run", run_corpus, 20, "--progress-every", "5", "--save-every", "0",
                                     "--eval-every", "0") if a != "--no-progress"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pretrain: step")]
    assert [ln.split()[2] for ln in lines] == ["5/20", "10/20", "15/20", "20/20"]
    assert "loss" in lines[0] and "elapsed" in lines[0] and "\r" not in r.stderr
    quiet = subprocess.run(argv + ["--overwrite", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "pretrain: step" not in quiet.stderr


def test_the_same_run_twice_is_refused_on_one_line(tmp_path, run_corpus):
    argv = pretrain_argv(tmp_path / "run", run_corpus, 4, "--save-every", "0", "--eval-every", "0")
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 0
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert "already holds a pretrain run" in r.stderr and "--resume" in r.stderr and "--overwrite" in r.stderr


def test_a_damaged_checkpoint_is_one_warning_line_and_the_run_resumes(tmp_path, run_corpus):
    out = tmp_path / "run"
    argv = pretrain_argv(out, run_corpus, 8, "--save-every", "4", "--eval-every", "0", "--warmup", "1")
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 0
    weights = out / "checkpoints" / "step-00000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    r = subprocess.run(argv + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "step-00000008 is damaged: model.safetensors is 100 bytes" in warning[0]
    assert "UserWarning" not in r.stderr and "Traceback" not in r.stderr
