"""Damaged files are named and never used: checkpoint manifests, fallback to an intact checkpoint,
clear errors from ``from_pretrained``, leftovers of killed writes removed, all-or-nothing loads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic_batches, synthetic_trainer, train_losses

from tinymobilebert import MobileBertForPreTraining, MobileBertModel
from tinymobilebert.config import tiny
from tinymobilebert.optim import AdamW
from tinymobilebert.train import save_training_checkpoint


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    synthetic_trainer(out, 12).train()
    return train_losses(out)


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip_bit":  # one bit in the middle of the file (the tensor data of a weights file)
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x04]) + data[i + 1:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json"])
@pytest.mark.parametrize("how", ["truncate", "flip_bit"])
def test_a_damaged_latest_checkpoint_is_named_and_the_one_before_used(tmp_path, whole_run, name, how):
    synthetic_trainer(tmp_path, 8).train()  # checkpoints at 4 and 8
    damage(tmp_path / "checkpoints" / "step-00000008" / name, how)
    t = synthetic_trainer(tmp_path, 12)
    with pytest.warns(UserWarning, match=rf"step-00000008 is damaged: {name} .*falling back"):
        assert t.resume()
    assert t.state["step"] == 4
    t.train()
    assert train_losses(tmp_path) == whole_run  # resumed exactly, from step 4
    assert (tmp_path / "checkpoints" / "step-00000008.damaged" / name).exists()  # kept to look at, never used


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    synthetic_trainer(tmp_path, 8).train()
    damage(tmp_path / "checkpoints" / "step-00000008" / "model.safetensors", "truncate")
    damage(tmp_path / "checkpoints" / "step-00000004" / "trainer_state.json", "empty")
    t = synthetic_trainer(tmp_path, 12)
    with pytest.warns(UserWarning, match="damaged"):
        with pytest.raises(ValueError, match=r"no intact checkpoint to resume from: .*step-00000008: model.safetensors "
                                             r"is .* bytes.*step-00000004: trainer_state.json"):
            t.resume()


def test_checkpoint_manifest_lists_every_file(tmp_path):
    from tinymobilebert.train import verify_checkpoint

    synthetic_trainer(tmp_path, 4).train()
    folder = tmp_path / "checkpoints" / "step-00000004"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors", "optimizer.safetensors",
                                         "trainer_state.json"]
    assert manifest["files"]["model.safetensors"]["size"] == (folder / "model.safetensors").stat().st_size
    assert verify_checkpoint(str(folder)) == []


def test_leftovers_of_killed_writes_are_removed_at_the_next_start(tmp_path):
    synthetic_trainer(tmp_path, 4).train()
    pid = dead_pid()
    half = tmp_path / "checkpoints" / f"step-00000008.tmp-{pid}"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half")
    stray = tmp_path / f".log.jsonl.{pid}.k2j4x.tmp"
    stray.write_text("half")
    live = tmp_path / "checkpoints" / f"step-00000012.tmp-{os.getpid()}"  # a live process's: left alone
    live.mkdir()
    t = synthetic_trainer(tmp_path, 8)
    assert t.resume() and t.state["step"] == 4
    assert not half.exists() and not stray.exists() and live.exists()


def test_pruning_keeps_the_newest_by_step(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    opt = AdamW(m.store)
    for step in (99_999_999, 100_000_000):  # names sort the other way round
        save_training_checkpoint(tmp_path, step, m, opt, {"step": step, "epoch": 0, "batch": 0}, keep=1)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step-100000000"]


def test_a_fresh_trainer_refuses_a_folder_with_another_runs_checkpoints(tmp_path):
    synthetic_trainer(tmp_path, 8).train()
    with pytest.raises(ValueError, match=r"holds checkpoints of another run \(steps \[4, 8\]\)"):
        synthetic_trainer(tmp_path, 4).train()


def test_resume_before_the_first_checkpoint_starts_a_fresh_log(tmp_path, whole_run, capsys):
    def dying(epoch, start):
        for k, batch in enumerate(synthetic_batches(epoch, start)):
            if epoch == 0 and start + k == 3:
                raise KeyboardInterrupt  # killed at step 4, before its first checkpoint (4)
            yield batch

    t = synthetic_trainer(tmp_path, 12)
    t.batches = dying
    with pytest.raises(KeyboardInterrupt):
        t.train()
    assert len(train_losses(tmp_path)) == 3
    t = synthetic_trainer(tmp_path, 12)
    assert not t.resume()
    assert "no checkpoint yet: starting from step 0 with a fresh log" in capsys.readouterr().err
    t.train()
    assert train_losses(tmp_path) == whole_run  # 12 lines, none duplicated


# ------------------------------------------------------------------------------ from_pretrained
@pytest.mark.parametrize("how", ["truncate", "empty", "garbage"])
def test_from_pretrained_names_a_damaged_weights_file(tmp_path, how):
    MobileBertModel(tiny()).save_pretrained(tmp_path)
    damage(tmp_path / "model.safetensors", how)
    with pytest.raises(ValueError, match=rf"{tmp_path}/model.safetensors: not a readable safetensors file \(.*\); "
                                         r"the file (is empty|is [\d,]+ bytes; truncated)"):
        MobileBertModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("name, how, message", [
    ("config.json", "empty", r"config.json: not valid JSON .*the file is empty"),
    ("config.json", "truncate", r"config.json: not valid JSON"),
    ("vocab.txt", "garbage", r"vocab.txt: not a vocabulary"),
    ("vocab.txt", "empty", r"vocab.txt: the vocabulary file is empty"),
])
def test_from_pretrained_names_other_damaged_files(tmp_path, name, how, message):
    from tinymobilebert import BertTokenizer

    tok = BertTokenizer.train(["the cat sat on the mat", "a dog ate the cat"], vocab_size=60, min_frequency=1)
    MobileBertModel(tiny(vocab_size=len(tok))).save_pretrained(tmp_path, tokenizer=tok)
    damage(tmp_path / name, how)
    with pytest.raises(ValueError, match=message):
        MobileBertModel.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------ load_state_dict
def test_load_state_dict_checks_everything_before_it_changes_anything():
    m = MobileBertForPreTraining(tiny(), seed=0)
    before = {k: v.copy() for k, v in m.params.items()}
    sd = MobileBertForPreTraining(tiny(), seed=1).state_dict()
    last = list(sd)[-1]
    sd[last] = np.full(sd[last].shape, "x")  # the right shape, but not numbers
    with pytest.raises(ValueError, match=rf"{last}: expected real numbers"):
        m.load_state_dict(sd)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")
