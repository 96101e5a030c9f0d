"""save_pretrained / from_pretrained: round trips, head classes, strictness, files, errors."""

import json
import os
import stat
import warnings

import numpy as np
import pytest

from tinymobilebert import (BertTokenizer, MobileBertForMaskedLM, MobileBertForPreTraining,
                            MobileBertForSequenceClassification, MobileBertModel)
from tinymobilebert import atomic, checkpoint
from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
LAYOUTS = {"student": tiny(), "teacher": ib_bert_tiny(), "bert": bert_tiny(),
           "padding_aware": tiny(trigram_padding_aware=True, masked_attention_score=-6.0)}
CLASSES = [MobileBertModel, MobileBertForPreTraining, MobileBertForMaskedLM, MobileBertForSequenceClassification]


def same_params(a, b):
    assert set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trip(layout, cls, tmp_path):
    m = cls(LAYOUTS[layout], seed=1, dtype=np.float64)
    m.save_pretrained(tmp_path)
    back = cls.from_pretrained(tmp_path, dtype=np.float64)
    same_params(m, back)
    assert back.config == m.config and not back.training
    assert not back.load_report.missing and not back.load_report.initialized
    arch = json.loads((tmp_path / "config.json").read_text())["architectures"][0]
    assert arch == ("Bert" if layout == "bert" else "MobileBert") + cls.__name__[len("MobileBert"):]


def test_config_extras_and_own_fields_survive(tmp_path):
    cfg = tiny(trigram_padding_aware=True, masked_attention_score=-6.0, num_labels=4).replace(
        extra={"architectures": ["X"], "custom": {"a": 1}})
    MobileBertForSequenceClassification(cfg).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["custom"] == {"a": 1} and d["trigram_padding_aware"] is True and len(d["id2label"]) == 4
    back = MobileBertForSequenceClassification.from_pretrained(tmp_path)
    assert back.config.num_labels == 4 and back.config.masked_attention_score == -6.0


def test_dtype_cast_on_save(tmp_path):
    m = MobileBertForPreTraining(tiny(), dtype=np.float64)
    m.save_pretrained(tmp_path, dtype=np.float32)
    back = MobileBertForPreTraining.from_pretrained(tmp_path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back.params["cls.predictions.bias"], m.params["cls.predictions.bias"], rtol=1e-7)


def test_bare_encoder_from_pretraining_checkpoint(tmp_path):
    MobileBertForPreTraining(tiny(classifier_activation=True), seed=2).save_pretrained(tmp_path)
    enc = MobileBertModel.from_pretrained(tmp_path)
    src = MobileBertForPreTraining.from_pretrained(tmp_path)
    for k, v in enc.params.items():
        np.testing.assert_array_equal(v, src.params["mobilebert." + k])
    assert any(k.startswith("cls.predictions") for k in enc.load_report.unused)


def test_classifier_from_pretraining_checkpoint_initialises_the_head(tmp_path):
    MobileBertForPreTraining(tiny(classifier_activation=True), seed=2).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="newly initialised.*classifier.weight"):
        clf = MobileBertForSequenceClassification.from_pretrained(tmp_path, num_labels=3, seed=7)
    assert sorted(clf.load_report.initialized) == ["classifier.bias", "classifier.weight"]
    assert clf.params["classifier.weight"].shape == (3, 32)
    assert any(k.startswith("cls.") for k in clf.load_report.unused)


def test_pretraining_from_bare_checkpoint_adds_the_prefix(tmp_path):
    MobileBertModel(tiny(), seed=3).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MobileBertForPreTraining.from_pretrained(tmp_path)
    np.testing.assert_array_equal(m.params["mobilebert.embeddings.word_embeddings.weight"],
                                  MobileBertModel.from_pretrained(tmp_path).params["embeddings.word_embeddings.weight"])
    assert "cls.predictions.bias" in m.load_report.initialized


def test_strict_errors_and_report(tmp_path):
    m = MobileBertForPreTraining(tiny())
    sd = m.state_dict()
    sd.pop("mobilebert.encoder.layer.0.attention.self.query.weight")
    sd["mobilebert.encoder.layer.9.attention.self.query.weight"] = np.zeros((16, 16), np.float32)
    m.config.to_dict()
    checkpoint.write_safetensors(str(tmp_path / "model.safetensors"), sd)
    checkpoint.write_json(str(tmp_path / "config.json"), m.config.to_dict())
    with pytest.raises(KeyError, match=r"missing \['mobilebert.encoder.layer.0.attention.self.query.weight'\].*"
                                       r"unexpected \['mobilebert.encoder.layer.9"):
        MobileBertForPreTraining.from_pretrained(tmp_path)
    loose = MobileBertForPreTraining.from_pretrained(tmp_path, strict=False)
    assert loose.load_report.missing == ["mobilebert.encoder.layer.0.attention.self.query.weight"]


def test_shape_mismatch_is_an_error(tmp_path):
    MobileBertForPreTraining(tiny()).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    d["vocab_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"word_embeddings.weight: expected \(100, 16\), got \(99, 16\)"):
        MobileBertForPreTraining.from_pretrained(tmp_path)


def test_transformers_aliases_and_buffers_are_skipped(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=4)
    sd = m.state_dict()
    sd["cls.predictions.decoder.weight"] = sd["mobilebert.embeddings.word_embeddings.weight"]
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    sd["mobilebert.embeddings.position_ids"] = np.arange(64)[None]
    checkpoint.write_safetensors(str(tmp_path / "model.safetensors"), sd)
    checkpoint.write_json(str(tmp_path / "config.json"), m.config.to_dict())
    back = MobileBertForPreTraining.from_pretrained(tmp_path)
    same_params(m, back)
    assert len(back.load_report.skipped) == 3


def test_sharded_checkpoint(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=5)
    sd = m.state_dict()
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        checkpoint.write_safetensors(str(tmp_path / file), {k: sd[k] for k in keys})
    checkpoint.write_json(str(tmp_path / "model.safetensors.index.json"),
                          {"weight_map": {k: f for f, ks in shards.items() for k in ks}})
    checkpoint.write_json(str(tmp_path / "config.json"), m.config.to_dict())
    same_params(m, MobileBertForPreTraining.from_pretrained(tmp_path))
    # its fingerprint (what a distillation run records of its teacher) covers the index and every shard
    import hashlib

    fingerprint = checkpoint.model_fingerprint(tmp_path)
    assert list(fingerprint) == ["config.json", "model.safetensors.index.json", *sorted(shards)]
    assert all(fingerprint[n] == hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in fingerprint)
    (tmp_path / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(checkpoint.DamagedFileError, match="weight_map"):
        checkpoint.model_fingerprint(tmp_path)


def test_tokenizer_travels_with_the_model(tmp_path):
    tok = BertTokenizer.train(["the cat sat on the mat", "a dog ate the cat"], vocab_size=60, min_frequency=1)
    m = MobileBertForMaskedLM(tiny(vocab_size=len(tok)))
    m.save_pretrained(tmp_path, tokenizer=tok)
    assert (tmp_path / "vocab.txt").exists()
    back = MobileBertForMaskedLM.from_pretrained(tmp_path)
    assert back.tokenizer.encode("the cat") == tok.encode("the cat")


def test_saved_files_have_normal_permissions(tmp_path):
    MobileBertModel(tiny()).save_pretrained(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "model.safetensors").st_mode)
    assert mode == 0o666 & ~atomic._umask()


def test_a_failed_save_leaves_the_old_files_intact(tmp_path, monkeypatch):
    old = MobileBertModel(tiny(), seed=1)
    old.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    import safetensors.numpy

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        MobileBertModel(tiny(), seed=2).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        MobileBertModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        MobileBertModel.from_pretrained(tmp_path)
    checkpoint.write_json(str(tmp_path / "config.json"), tiny().to_dict())
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        MobileBertModel.from_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="needs torch.*safe_serialization=True"):
        MobileBertModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="needs torch.*safe_serialization=True"):
        checkpoint.model_fingerprint(tmp_path)  # a run's --model / --teacher: the same advice
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MobileBertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ValueError, match="model_type 'roberta' is not supported"):
        MobileBertModel.from_pretrained(tmp_path)


def test_bert_config_dicts():
    from tinymobilebert import MobileBertConfig

    d = json.loads(open(os.path.join(FIXTURES, "models", "bert_pretraining", "config.json")).read())
    cfg = MobileBertConfig.from_dict(d)
    assert cfg.model_type == "bert" and cfg.is_plain_bert and cfg.embedding_layer_norm_eps == cfg.layer_norm_eps
    out = cfg.to_dict()
    assert out["model_type"] == "bert" and "trigram_input" not in out and out["architectures"] == d["architectures"]
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        MobileBertConfig.from_dict({"model_type": "bert", "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="model_type='bert' needs the plain-BERT layout"):
        MobileBertConfig(model_type="bert")


def test_classifier_from_masked_lm_checkpoint_initialises_the_pooler(tmp_path):
    MobileBertForMaskedLM(bert_tiny(), seed=2).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="newly initialised"):
        clf = MobileBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert sorted(clf.load_report.initialized) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                                   "classifier.bias", "classifier.weight"]
    mlm = MobileBertForMaskedLM.from_pretrained(tmp_path)
    clf.save_pretrained(tmp_path / "clf")
    with pytest.warns(UserWarning, match="newly initialised"):  # the classifier has no MLM head
        reloaded = MobileBertForMaskedLM.from_pretrained(tmp_path / "clf")
    assert "bert.pooler.dense.weight" in reloaded.load_report.unused
    assert not mlm.load_report.unused
