"""A training checkpoint is written whole or not at all, even when the save fails part-way.

``save_training_checkpoint`` writes into a temporary folder and renames it to ``step-N`` only
when every file is in it, then moves ``latest``. These tests make the save fail after some files
are written (a full disk, a kill) and require: no ``step-N`` folder, ``latest`` still naming the
previous checkpoint, and that checkpoint still loading. A save that wrote into ``step-N``
directly would leave a partial folder behind and fail here.
"""

import os

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert.config import tiny
from tinymobilebert.optim import AdamW
from tinymobilebert.train import latest_checkpoint, save_training_checkpoint
from tinymobilebert.train.checkpoints import load_training_checkpoint


def model_and_optimizer(seed=0):
    m = MobileBertForPreTraining(tiny(), seed=seed)
    return m, AdamW(m.store, lr=1e-3)


def fail_optimizer_state(m, opt):
    """The model's files are written, then the optimizer's state cannot be read."""
    def broken():
        raise OSError("No space left on device")
    opt.state_dict = broken


def fail_after_config(m, opt):
    """save_pretrained writes config.json and dies before model.safetensors is complete."""
    def half_written(path, tokenizer=None, dtype=None, **kwargs):
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write("{}")
        with open(os.path.join(path, "model.safetensors"), "wb") as f:
            f.write(b"\0" * 10)
        raise OSError("killed")
    m.save_pretrained = half_written


@pytest.mark.parametrize("failure", [fail_optimizer_state, fail_after_config])
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, failure):
    m, opt = model_and_optimizer()
    good = save_training_checkpoint(tmp_path, 4, m, opt, {"step": 4, "epoch": 0, "batch": 4})
    weights = m.store.data.copy()
    m.store.data[:] += 1.0  # the next step's weights, never to be saved
    failure(m, opt)
    with pytest.raises(OSError):
        save_training_checkpoint(tmp_path, 8, m, opt, {"step": 8, "epoch": 0, "batch": 8})
    root = tmp_path / "checkpoints"
    assert not (root / "step-00000008").exists(), "a partial step-8 folder was left behind"
    assert (root / "latest").read_text().strip() == "step-00000004"
    assert latest_checkpoint(tmp_path) == good
    fresh, fresh_opt = model_and_optimizer(seed=1)
    state = load_training_checkpoint(latest_checkpoint(tmp_path), fresh, fresh_opt)
    assert state["step"] == 4
    np.testing.assert_array_equal(fresh.store.data, weights)
