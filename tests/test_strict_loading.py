"""Strict loading refuses a checkpoint that lacks one encoder tensor and has nothing extra.

The older test combined a missing and an unexpected tensor, so a strict check that only looked
at unexpected names (or needed both) passed it. Each case here has exactly one kind of mismatch.
"""

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining, MobileBertModel
from tinymobilebert import checkpoint
from tinymobilebert.config import tiny

LOST = "mobilebert.encoder.layer.1.ffn.0.output.dense.weight"


def write(path, state_dict, config):
    checkpoint.write_safetensors(str(path / "model.safetensors"), state_dict)
    checkpoint.write_json(str(path / "config.json"), config.to_dict())


def test_from_pretrained_refuses_a_missing_tensor_alone(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    sd = m.state_dict()
    del sd[LOST]
    write(tmp_path, sd, m.config)
    with pytest.raises(KeyError, match=rf"missing \['{LOST}'\], unexpected \[\]"):
        MobileBertForPreTraining.from_pretrained(tmp_path)
    with pytest.raises(KeyError, match=LOST[len("mobilebert."):]):  # the bare encoder needs it too
        MobileBertModel.from_pretrained(tmp_path)
    loose = MobileBertForPreTraining.from_pretrained(tmp_path, strict=False)
    assert loose.load_report.missing == [LOST] and not loose.load_report.unexpected


def test_from_pretrained_refuses_an_unexpected_tensor_alone(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    sd = m.state_dict()
    sd["mobilebert.encoder.layer.7.output.dense.weight"] = np.zeros((2, 2), np.float32)
    write(tmp_path, sd, m.config)
    with pytest.raises(KeyError, match=r"missing \[\], unexpected \['mobilebert.encoder.layer.7"):
        MobileBertForPreTraining.from_pretrained(tmp_path)


def test_load_state_dict_refuses_a_missing_tensor_alone():
    m = MobileBertForPreTraining(tiny(), seed=0)
    sd = m.state_dict()
    del sd[LOST]
    before = m.params[LOST].copy()
    with pytest.raises(KeyError, match=LOST):
        MobileBertForPreTraining(tiny(), seed=1).load_state_dict(sd)
    report = m.load_state_dict(sd, strict=False)
    assert report.missing == [LOST] and not report.unexpected
    np.testing.assert_array_equal(m.params[LOST], before)  # left as it was
