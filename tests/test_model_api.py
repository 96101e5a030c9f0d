"""The model classes' public API: outputs, state dicts, modes, dtypes and clear errors."""

import numpy as np
import pytest

from tinymobilebert import (MobileBertConfig, MobileBertForMaskedLM, MobileBertForPreTraining,
                            MobileBertForSequenceClassification, MobileBertModel)
from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny


@pytest.fixture
def student():
    return MobileBertForPreTraining(tiny(), seed=0).eval()


def ids_for(cfg, B=2, T=6, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, T))


def test_public_api_shapes(student):
    cfg = student.config
    ids = ids_for(cfg)
    out = student.forward(ids, output_hidden_states=True, output_attentions=True)
    assert out.prediction_logits.shape == (2, 6, cfg.vocab_size)
    assert out.seq_relationship_logits.shape == (2, 2)
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    assert all(h.shape == (2, 6, cfg.hidden_size) for h in out.hidden_states)
    assert all(a.shape == (2, cfg.num_attention_heads, 6, 6) for a in out.attentions)
    assert out.loss is None and out.prediction_logits.dtype == np.float32
    enc = MobileBertModel(cfg)
    o = enc.forward(ids)
    assert o.last_hidden_state.shape == (2, 6, cfg.hidden_size) and o.pooler_output.shape == (2, cfg.hidden_size)
    assert o.hidden_states is None and o["last_hidden_state"] is o.last_hidden_state
    assert all(not k.startswith("mobilebert.") for k in enc.state_dict())


def test_loss_is_mlm_plus_nsp(student):
    ids = ids_for(student.config)
    labels = np.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    out = student.forward(ids, labels=labels, next_sentence_label=[0, 1])
    assert out.loss == pytest.approx(out.mlm_loss + out.nsp_loss)
    logits = out.prediction_logits.astype(np.float64)[:, 2]
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    assert out.mlm_loss == pytest.approx(np.mean(lse - logits[np.arange(2), ids[:, 2]]), rel=1e-6)


def test_backward_returns_named_gradients_and_accumulates(student):
    ids = ids_for(student.config)
    labels = np.where(np.random.default_rng(1).random(ids.shape) < 0.5, ids, -100)
    student.forward(ids, labels=labels, next_sentence_label=[1, 0])
    g1 = {k: v.copy() for k, v in student.backward().items()}
    assert set(g1) == set(student.state_dict())
    assert all(g1[k].shape == v.shape for k, v in student.params.items())
    student.forward(ids, labels=labels, next_sentence_label=[1, 0])
    g2 = student.backward()
    for k in g1:
        np.testing.assert_allclose(g2[k], 2 * g1[k], rtol=1e-5, atol=1e-7)  # += as in PyTorch
    student.zero_grad()
    assert all(not np.any(v) for v in student.grads.values())


def test_state_dict_round_trip_and_errors(student):
    sd = student.state_dict()
    other = MobileBertForPreTraining(tiny(), seed=5)
    other.load_state_dict(sd)
    for k in sd:
        np.testing.assert_array_equal(other.params[k], sd[k])
    sd_extra = dict(sd, **{"mobilebert.embeddings.position_ids": np.arange(64)[None],
                           "cls.predictions.decoder.weight": sd["mobilebert.embeddings.word_embeddings.weight"],
                           "cls.predictions.decoder.bias": sd["cls.predictions.bias"]})
    other.load_state_dict(sd_extra)  # transformers' tied aliases and buffers are accepted
    bad = dict(sd)
    bad.pop("cls.predictions.bias")
    bad["mobilebert.unknown.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match=r"missing keys \['cls.predictions.bias'\].*unexpected keys \['mobilebert.unknown"):
        other.load_state_dict(bad)
    report = other.load_state_dict(bad, strict=False)
    assert report.missing == ["cls.predictions.bias"] and report.unexpected == ["mobilebert.unknown.weight"]
    wrong = dict(sd, **{"cls.predictions.bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"cls.predictions.bias: expected \(99,\), got \(3,\)"):
        other.load_state_dict(wrong)


def test_writing_params_updates_the_flat_store(student):
    name = "cls.predictions.bias"
    student.load_state_dict(dict(student.state_dict(), **{name: np.full(99, 0.5)}))
    a, b = student.store.slices[name]
    assert np.all(student.store.data[a:b] == 0.5)


@pytest.mark.parametrize("cfg", [tiny(), ib_bert_tiny(), bert_tiny()], ids=["student", "teacher", "bert"])
def test_float32_agrees_with_float64(cfg):
    ids = ids_for(cfg, B=3, T=8)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    labels = np.where(mask > 0, ids, -100)
    outs, grads = [], []
    for dtype in (np.float32, np.float64):
        m = MobileBertForPreTraining(cfg, seed=0, dtype=dtype).eval()
        outs.append(m.forward(ids, attention_mask=mask, labels=labels, next_sentence_label=[0, 1, 0]))
        grads.append({k: v.astype(np.float64) for k, v in m.backward().items()})
        assert all(v.dtype == dtype for v in m.params.values())
    assert outs[0].loss == pytest.approx(outs[1].loss, rel=1e-5)
    np.testing.assert_allclose(outs[0].prediction_logits, outs[1].prediction_logits, rtol=1e-4, atol=1e-5)
    for k in grads[1]:  # the 1e-7 floor covers the key bias, whose true gradient is 0
        scale = np.abs(grads[1][k]).max()
        assert np.abs(grads[0][k] - grads[1][k]).max() <= 1e-3 * scale + 1e-7, k


def test_train_mode_dropout_and_eval_determinism():
    cfg = tiny(hidden_dropout_prob=0.3)
    m = MobileBertForPreTraining(cfg, seed=0)
    assert m.training  # as a freshly built torch module
    ids = ids_for(cfg)
    a = m.forward(ids).prediction_logits
    b = m.forward(ids).prediction_logits
    assert not np.allclose(a, b)
    m.eval()
    np.testing.assert_array_equal(m.forward(ids).prediction_logits, m.forward(ids).prediction_logits)


def test_same_seed_same_model():
    a = MobileBertForPreTraining(tiny(), seed=3).state_dict()
    b = MobileBertForPreTraining(tiny(), seed=3).state_dict()
    c = MobileBertForPreTraining(tiny(), seed=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    assert np.all(a["mobilebert.embeddings.word_embeddings.weight"][0] == 0)  # [PAD] row


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(input_ids=np.array([1, 2, 3])), ValueError, r"input_ids must be a non-empty 2-D array"),
    (dict(input_ids=np.array([[1.0, 2.0]])), TypeError, "input_ids must hold integers"),
    (dict(input_ids=np.array([[1, 99]])), ValueError, r"input_ids must be in \[0, vocab_size=99\), found 99"),
    (dict(input_ids=np.array([[1, -1]])), ValueError, "found -1"),
    (dict(input_ids=np.ones((1, 65), int)), ValueError, "more than max_position_embeddings=64"),
    (dict(input_ids=np.ones((2, 3), int), token_type_ids=np.ones((2, 4), int)), ValueError, "token_type_ids must have"),
    (dict(input_ids=np.ones((2, 3), int), token_type_ids=np.full((2, 3), 2)), ValueError, r"type_vocab_size=2"),
    (dict(input_ids=np.ones((2, 3), int), attention_mask=np.full((2, 3), 2)), ValueError, "only 0 .padding. and 1"),
    (dict(input_ids=np.ones((2, 3), int), attention_mask=np.ones((3, 3))), ValueError, "attention_mask must have"),
    (dict(input_ids=np.ones((2, 3), int), labels=np.full((2, 3), 200)), ValueError, r"labels must be in \[0, 99\)"),
    (dict(input_ids=np.ones((2, 3), int), labels=np.ones((2, 4), int)), ValueError, r"labels must have shape \(2, 3\)"),
    (dict(input_ids=np.ones((2, 3), int), next_sentence_label=[0, 2]), ValueError, r"next_sentence_label must be in \[0, 2\)"),
])
def test_input_errors(student, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        student.forward(**kwargs)


def test_backward_errors(student):
    with pytest.raises(RuntimeError, match="no forward pass"):
        student.backward()
    ids = ids_for(student.config)
    student.forward(ids)
    with pytest.raises(ValueError, match="computed no loss"):
        student.backward()
    student.forward(ids)
    with pytest.raises(ValueError, match="did not return hidden_states"):
        student.backward({"hidden_states": [None] * 3})
    student.forward(ids)
    with pytest.raises(KeyError, match="unknown grad_outputs keys"):
        student.backward({"hidden": 1})
    student.forward(ids, output_attentions=True)
    with pytest.raises(ValueError, match=r"must have 2 entries"):
        student.backward({"attentions": [None]})
    student.forward(ids)
    with pytest.raises(ValueError, match=r"prediction_logits.*shape"):
        student.backward({"prediction_logits": np.zeros((1, 2))})
    student.forward(ids, labels=ids)
    student.backward()
    with pytest.raises(RuntimeError, match="no forward pass"):
        student.backward()  # each forward pass is differentiated once


def test_constructor_errors():
    with pytest.raises(TypeError, match="MobileBertConfig.from_dict"):
        MobileBertModel({"hidden_size": 32})
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        MobileBertModel(tiny(), dtype=np.float16)


def test_masked_lm_and_classification_heads():
    cfg = tiny(num_labels=3)
    ids = ids_for(cfg)
    mlm = MobileBertForMaskedLM(cfg).eval()
    assert not any(k.startswith("mobilebert.pooler") or k.startswith("cls.seq") for k in mlm.params)
    out = mlm.forward(ids, labels=ids)
    assert out.logits.shape == (2, 6, 99) and out.loss > 0
    mlm.backward()
    clf = MobileBertForSequenceClassification(cfg).eval()
    out = clf.forward(ids, labels=[0, 2])
    assert out.logits.shape == (2, 3) and out.loss > 0
    clf.backward()
    reg = MobileBertForSequenceClassification(cfg.replace(num_labels=1)).eval()
    out = reg.forward(ids, labels=[0.5, -1.0])
    assert out.logits.shape == (2, 1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        clf.forward(ids, labels=[0, 3])


def test_from_dict_api():
    d = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "embedding_size": 16,
         "intra_bottleneck_size": 16, "num_attention_heads": 2, "intermediate_size": 16,
         "architectures": ["MobileBertForPreTraining"]}
    m = MobileBertForPreTraining(MobileBertConfig.from_dict(d), seed=0, dtype=np.float64)
    m.eval()
    out = m.forward(np.array([[1, 2, 3]]), labels=np.array([[1, -100, 3]]), next_sentence_label=np.array([0]))
    assert np.isfinite(out.loss)
    grads = m.backward()
    assert grads["cls.predictions.bias"].dtype == np.float64


@pytest.mark.parametrize("cls", [MobileBertForPreTraining, MobileBertForMaskedLM], ids=lambda c: c.__name__)
def test_mlm_head_at_labelled_positions_only(cls):
    """Same loss and gradients; logits only for the labelled rows (the original TF code's gather)."""
    cfg = tiny()
    ids = ids_for(cfg, B=3, T=7)
    labels = np.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 0] = ids[0, 2], ids[1, 5], ids[2, 0]
    kw = dict(labels=labels) if cls is MobileBertForMaskedLM else dict(labels=labels, next_sentence_label=[0, 1, 0])
    runs = []
    for where in ("all", "labelled"):
        m = cls(cfg, seed=0, dtype=np.float64).eval()
        out = m.forward(ids, mlm_positions=where, **kw)
        runs.append((out, {k: v.copy() for k, v in m.backward().items()}))
    (full, g_full), (part, g_part) = runs
    assert part.loss == pytest.approx(full.loss, rel=1e-12)
    logits = "logits" if cls is MobileBertForMaskedLM else "prediction_logits"
    np.testing.assert_array_equal(part.mlm_positions, [2, 12, 14])
    np.testing.assert_allclose(part[logits], full[logits].reshape(21, -1)[[2, 12, 14]], rtol=1e-12)
    for k in g_full:
        np.testing.assert_allclose(g_part[k], g_full[k], rtol=1e-10, atol=1e-14, err_msg=k)
    with pytest.raises(ValueError, match="mlm_positions must be"):
        cls(cfg).forward(ids, mlm_positions="some", **kw)
