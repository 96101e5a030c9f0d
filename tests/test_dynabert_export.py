"""DynaBERT export: an extracted sub-network is the supernet's sub-network, and it saves and loads.

What is proven here, for the released student, TINY, the IB-BERT teacher and plain BERT:
- ``extract_subnetwork(w, d)`` computes what ``forward(width_mult=w, depth_mult=d)`` computes
  (float64, logits and every hidden state, <= 1e-12 relative), with its config rewritten;
- every width and depth gives a different parameter count and different outputs;
- the compact form (``save_pretrained(compact=True)``) reloads with ``from_pretrained`` with no
  warning and the same outputs; the default form pads the cut heads back (zeroed), which
  computes the same function in a layout transformers builds;
- transformers loads our saved sub-networks (depth-only, width, both) with the outputs we compute:
  against tests/fixtures/dynabert/, written once with transformers by
  generate_dynabert_fixtures.py (no torch needed here);
- a head width transformers cannot express is refused with a clear error.
"""

import json
import os
import warnings

import numpy as np
import pytest
from conftest import four_layer_layouts
from safetensors import safe_open
from safetensors.numpy import load_file

import tinymobilebert as tmb
from tinymobilebert import MobileBertConfig, MobileBertForPreTraining, MobileBertForSequenceClassification
from tinymobilebert.config import OWN_FIELDS, bert_tiny, tiny
from tinymobilebert.dynabert.extract import subnetwork_config
from tinymobilebert.gradcheck import perturb_parameters

LAYOUTS = four_layer_layouts()
WIDTHS, DEPTHS = (0.25, 0.5, 0.75, 1.0), (0.5, 0.75, 1.0)
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def build(cls, cfg, seed=0):
    m = cls(cfg, seed=seed, dtype=np.float64).eval()
    perturb_parameters(m, np.random.default_rng(seed + 100))
    return m


def batch(cfg, rng, B=3, T=7):
    ids = rng.integers(1, cfg.vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return dict(input_ids=ids, token_type_ids=(np.arange(T) >= 3).astype(np.int64)[None].repeat(B, 0) * mask,
                attention_mask=mask)


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def assert_same_outputs(a, b, tol=1e-12, field="prediction_logits"):
    assert rel(a[field], b[field]) <= tol
    assert len(a.hidden_states) == len(b.hidden_states)
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert rel(x, y) <= tol


# ---------------------------------------------------------------------------------- config
def test_attention_head_size_field():
    cfg = tiny(num_attention_heads=2, attention_head_size=4)  # 2 heads of 4 in a block of 16
    assert cfg.head_size == 4 and cfg.all_head_size == 8 and tiny().head_size == 4 and tiny().all_head_size == 16
    assert "attention_head_size" in OWN_FIELDS
    assert MobileBertConfig.from_dict(cfg.to_dict()) == cfg
    bert = bert_tiny(num_attention_heads=3, attention_head_size=8)
    assert bert.to_dict()["attention_head_size"] == 8 and MobileBertConfig.from_dict(bert.to_dict()) == bert
    shapes = MobileBertForPreTraining.parameter_shapes(cfg)
    assert shapes["mobilebert.encoder.layer.0.attention.self.query.weight"] == (8, 16)
    assert shapes["mobilebert.encoder.layer.0.attention.output.dense.weight"] == (16, 8)
    for bad in (0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="attention_head_size must be None or a positive integer"):
            tiny(attention_head_size=bad)
    with pytest.raises(ValueError, match="or set attention_head_size"):
        tiny(num_attention_heads=3)


def test_subnetwork_config_rewrites_heads_head_size_ffn_and_layers():
    cfg = bert_tiny(num_hidden_layers=12, num_attention_heads=4, intermediate_size=48)
    sub = subnetwork_config(cfg, 0.5, 0.75)
    assert (sub.num_hidden_layers, sub.num_attention_heads, sub.attention_head_size, sub.intermediate_size) == \
        (9, 2, 8, 24)
    full_width = subnetwork_config(cfg, 1.0, 0.5)
    assert full_width.attention_head_size is None and full_width.num_hidden_layers == 6
    with pytest.raises(ValueError, match="width_mult must be in"):
        subnetwork_config(cfg, 0.0, 1.0)


# ---------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_extracted_equals_the_supernet_subnetwork(layout):
    m = build(MobileBertForPreTraining, LAYOUTS[layout])
    inputs = batch(m.config, np.random.default_rng(1))
    for w in WIDTHS:
        for d in DEPTHS:
            sup = m.forward(**inputs, width_mult=w, depth_mult=d, output_hidden_states=True, keep_cache=False)
            sub = m.extract_subnetwork(w, d)
            assert type(sub) is MobileBertForPreTraining and sub.dtype == np.float64 and not sub.training
            assert_same_outputs(sub.forward(**inputs, output_hidden_states=True, keep_cache=False), sup)
            assert rel(sub.forward(**inputs, keep_cache=False).seq_relationship_logits,
                       sup.seq_relationship_logits) <= 1e-12


def test_extracted_layers_are_renumbered_copies():
    m = build(MobileBertForSequenceClassification, LAYOUTS["plain_bert"])
    sub = m.extract_subnetwork(0.5, 0.5)  # layers 0 and 2, 2 heads of 8, FFN 24
    assert sub.config.num_hidden_layers == 2
    q = sub.params["bert.encoder.layer.1.attention.self.query.weight"]
    np.testing.assert_array_equal(q, m.params["bert.encoder.layer.2.attention.self.query.weight"][:16])
    assert not np.shares_memory(q, m.params["bert.encoder.layer.2.attention.self.query.weight"])
    np.testing.assert_array_equal(sub.params["bert.encoder.layer.1.output.dense.weight"],
                                  m.params["bert.encoder.layer.2.output.dense.weight"][:, :24])


@pytest.mark.parametrize("layout", ["released_student", "plain_bert"])
def test_every_width_and_depth_differs_in_size_and_output(layout):
    m = build(MobileBertForSequenceClassification, LAYOUTS[layout])
    inputs = batch(m.config, np.random.default_rng(2))
    sizes, outputs = {}, {}
    for w in WIDTHS:
        for d in DEPTHS:
            sizes[w, d] = m.extract_subnetwork(w, d).num_parameters()
            outputs[w, d] = m.forward(**inputs, width_mult=w, depth_mult=d, keep_cache=False).logits
    assert len(set(sizes.values())) == len(sizes)
    keys = list(outputs)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert rel(outputs[a], outputs[b]) > 1e-6, (a, b)
    assert sizes[1.0, 1.0] == m.num_parameters()


# ---------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_compact_form_reloads_without_warnings(layout, tmp_path):
    m = build(MobileBertForSequenceClassification, LAYOUTS[layout])
    sub = m.extract_subnetwork(0.5, 0.75)
    sub.save_pretrained(tmp_path, compact=True)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_attention_heads"] == 2 and saved["attention_head_size"] == m.config.head_size
    assert saved["num_hidden_layers"] == 3 and saved["intermediate_size"] == m.config.intermediate_size // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = MobileBertForSequenceClassification.from_pretrained(tmp_path, dtype=np.float64)
    assert not back.load_report.initialized and not back.load_report.unused
    assert back.config == sub.config and back.num_parameters() == sub.num_parameters()
    inputs = batch(m.config, np.random.default_rng(3))
    assert_same_outputs(back.forward(**inputs, output_hidden_states=True),
                        m.forward(**inputs, width_mult=0.5, depth_mult=0.75, output_hidden_states=True), field="logits")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_default_form_pads_the_heads_back(layout, tmp_path):
    m = build(MobileBertForPreTraining, LAYOUTS[layout])
    sub = m.extract_subnetwork(0.25, 1.0)  # 1 head of 4
    sub.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_attention_heads"] == 4 and saved["attention_head_size"] is None
    tensors = load_file(str(tmp_path / "model.safetensors"))
    pre, d, I = m.base_prefix, m.config.head_size, m.config.true_hidden_size
    q = tensors[f"{pre}encoder.layer.0.attention.self.query.weight"]
    assert q.shape[0] == I and not q[d:].any() and q[:d].any()
    assert not tensors[f"{pre}encoder.layer.0.attention.output.dense.weight"][:, d:].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = MobileBertForPreTraining.from_pretrained(tmp_path, dtype=np.float64)
    inputs = batch(m.config, np.random.default_rng(4))
    assert_same_outputs(back.forward(**inputs, output_hidden_states=True),
                        m.forward(**inputs, width_mult=0.25, output_hidden_states=True))


def test_unexpressible_head_width_is_refused_but_compact_works(tmp_path):
    m = MobileBertForSequenceClassification(bert_tiny(num_attention_heads=3, attention_head_size=5))  # 15 of 32
    with pytest.raises(ValueError, match="compact=True"):
        m.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    m.save_pretrained(tmp_path / "own", compact=True)
    assert MobileBertForSequenceClassification.from_pretrained(tmp_path / "own").config.all_head_size == 15


# ---------------------------------------------------------------------------------- transformers
CASES = sorted(n[:-len(".reference.safetensors")] for n in os.listdir(os.path.join(FIXTURES, "dynabert"))
               if n.endswith(".reference.safetensors"))


def _transformers_relevant(config):
    return {k: v for k, v in config.items() if k not in OWN_FIELDS and k not in ("dtype", "transformers_version")}


@pytest.mark.parametrize("name", CASES)
def test_transformers_loads_our_subnetworks_with_our_outputs(name, tmp_path):
    """The folder transformers loaded (stored) is what save_pretrained writes today, and
    transformers' float64 outputs on it (stored) are ours to 1e-9."""
    with safe_open(os.path.join(FIXTURES, "dynabert", name + ".reference.safetensors"), "np") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    cls = getattr(tmb, meta["class"])
    source = os.path.join(FIXTURES, "models", meta["source"])
    sub = cls.from_pretrained(source, dtype=np.float64).extract_subnetwork(float(meta["width_mult"]),
                                                                           float(meta["depth_mult"]))
    sub.save_pretrained(tmp_path)
    stored = os.path.join(FIXTURES, "dynabert", name)
    ours, theirs = load_file(str(tmp_path / "model.safetensors")), load_file(os.path.join(stored, "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    with open(os.path.join(stored, "config.json")) as f:
        assert _transformers_relevant(json.loads((tmp_path / "config.json").read_text())) == \
            _transformers_relevant(json.load(f))
    inputs = {k: ref[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    for model in (sub, cls.from_pretrained(tmp_path, dtype=np.float64)):  # the compact and the padded form
        out = model.forward(**inputs, output_hidden_states=True)
        assert rel(np.stack(out.hidden_states), ref["hidden_states"]) < 1e-9
        for field in ("prediction_logits", "seq_relationship_logits", "logits"):
            if field in ref:
                assert rel(out[field], ref[field]) < 1e-9, field


def test_an_extracted_model_trains_and_resumes_in_its_own_shapes(tmp_path):
    """Training checkpoints keep the compact form, so a run fine-tuning a sub-network resumes."""
    from tinymobilebert.optim import AdamW
    from tinymobilebert.train import Trainer

    sub = build(MobileBertForSequenceClassification, LAYOUTS["plain_bert"]).extract_subnetwork(0.5, 0.5)
    inputs = dict(batch(sub.config, np.random.default_rng(5)), labels=np.array([0, 1, 1]))

    def run(steps):
        model = sub.extract_subnetwork(1.0, 1.0)  # a fresh copy of the sub-network
        t = Trainer(model, AdamW(model.store, lr=1e-3), lambda e, s: iter([inputs] * (2 - s)), str(tmp_path / "run"),
                    max_steps=steps, save_every=1, progress=False, threads=1)
        t.resume()
        t.train()
        return model

    run(1)
    resumed = run(3)
    assert resumed.config.attention_head_size == 8 and resumed.config.num_attention_heads == 2
