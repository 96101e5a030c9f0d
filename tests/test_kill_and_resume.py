"""Real processes killed (SIGKILL) at the worst moments, then resumed: the log is the uninterrupted
run's, line for line, and nothing the killed process left behind survives the resume.

The child runs the command line with one function wrapped so that it stops at a chosen moment
and says so (a marker file); the test then kills it. The moments: before the first checkpoint,
half-way through writing a checkpoint's weights, between the weights and the trainer state,
and after the checkpoint is in place but before ``latest`` is updated and old ones pruned.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import pretrain_argv, train_losses

from tinymobilebert.train import read_log

STEPS = 30
RUN_FLAGS = ("--save-every", "10", "--eval-every", "15", "--warmup", "5")

CHILD = r'''
import os, sys, time
moment, marker, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
saves = []

def stop_here():
    with open(marker, "w") as f:
        f.write(moment)
    time.sleep(600)

if moment == "before_first_checkpoint":
    from tinymobilebert.train import trainer
    trainer.Trainer._save = lambda self: stop_here()
elif moment == "writing_weights":  # half of the second checkpoint's model.safetensors on disk
    import safetensors.numpy as stn
    save_file = stn.save_file
    def half_then_stop(tensors, path, metadata=None):
        save_file(tensors, path, metadata=metadata)
        if ".tmp-" in path and os.path.basename(path).startswith(".model.safetensors"):
            saves.append(path)
            if len(saves) == 2:
                data = open(path, "rb").read()
                open(path, "wb").write(data[: len(data) // 2])
                stop_here()
    stn.save_file = half_then_stop
elif moment in ("writing_state", "before_latest"):
    from tinymobilebert.train import checkpoints as ck

    def stop_before_second(attr, basename):  # ck.<attr>(path, ...) stops the 2nd time it writes <basename>
        original = getattr(ck, attr)
        def wrapped(path, *args):
            if os.path.basename(path) == basename:
                saves.append(path)
                if len(saves) == 2:
                    stop_here()
            return original(path, *args)
        setattr(ck, attr, wrapped)

    if moment == "writing_state":  # weights and optimizer of the second checkpoint written, its state not
        stop_before_second("write_json", "trainer_state.json")
    else:  # the second checkpoint renamed into place; `latest` not updated, nothing pruned yet
        stop_before_second("atomic_write", "latest")
from tinymobilebert.cli import main
sys.exit(main(argv))
'''


def dev_steps(out):
    return [r["step"] for r in read_log(out) if r["split"] == "dev"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, run_corpus):
    out = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(pretrain_argv(out, run_corpus, STEPS, *RUN_FLAGS), check=True, capture_output=True, timeout=300)
    return out


def kill_at(moment, out, corpus, tmp_path):
    marker = tmp_path / "stopped"
    argv = pretrain_argv(out, corpus, STEPS, *RUN_FLAGS)[3:]  # after "python -m tinymobilebert"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, moment, str(marker), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert marker.exists(), f"the child never reached {moment}: {proc.stderr.read().decode() if proc.poll() else ''}"
    finally:  # never leave the child running, whatever happened
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def leftovers(out):
    return sorted(os.path.relpath(os.path.join(root, name), out) for root, dirs, files in os.walk(out)
                  for name in dirs + files if ".tmp" in name or name.endswith(".damaged"))


@pytest.mark.parametrize("moment", ["before_first_checkpoint", "writing_weights", "writing_state", "before_latest"])
def test_killed_then_resumed_logs_the_uninterrupted_run(tmp_path, whole, run_corpus, moment):
    out = tmp_path / "run"
    kill_at(moment, out, run_corpus, tmp_path)
    logged = train_losses(out)
    assert len(logged) == (10 if moment == "before_first_checkpoint" else 20)
    resumed = subprocess.run(pretrain_argv(out, run_corpus, STEPS, *RUN_FLAGS, "--resume"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert train_losses(out) == train_losses(whole)  # every step once, bit for bit
    assert dev_steps(out) == dev_steps(whole) == [15, 30]
    assert leftovers(out) == []  # no .tmp-<pid> folder, no half-written temporary file
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step-00000020", "step-00000030"]
