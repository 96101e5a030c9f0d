"""Parity with transformers, without torch: transformers-written directories and their outputs.

Each folder under tests/fixtures/models/ was written by transformers' own ``save_pretrained``
(see generate_model_fixtures.py), with transformers' float64 outputs and loss gradients next to
it. We load the folder with ``from_pretrained`` and must reproduce:

* float64: outputs (loss, logits, hidden states, attentions) to relative error 1e-9, gradients
  of every parameter to 1e-8, each relative to the tensor's largest entry. The attention key
  bias has a true gradient of 0 (softmax cancels it): both sides hold rounding noise there, so
  gradients also pass below an absolute 1e-12 x the model's largest gradient.
* float32 (the same weights cast): outputs to 1e-5 and gradients to 1e-4 relative.
"""

import json
import os

import numpy as np
import pytest
from safetensors import safe_open

import tinymobilebert as tmb

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "models")
CASES = sorted(d for d in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, d)) and d != "bert_with_tokenizer")


def load_reference(name):
    path = os.path.join(FIXTURES, name, "reference.safetensors")
    with safe_open(path, "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def our_class(hf_class):
    return getattr(tmb, "MobileBert" + hf_class.split("Bert", 1)[1])


def run(name, dtype):
    ref, meta = load_reference(name)
    model = our_class(meta["class"]).from_pretrained(os.path.join(FIXTURES, name), dtype=dtype)
    kwargs = {k: ref[k] for k in ("input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label")
              if k in ref}
    out = model.forward(**kwargs, output_hidden_states=True, output_attentions=True)
    grad_outputs = None
    if "grad_last_hidden_state" in ref:
        grad_outputs = {"last_hidden_state": ref["grad_last_hidden_state"]}
    grads = model.backward(grad_outputs)
    return model, out, grads, ref


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-300))


def compare_outputs(out, ref, tol):
    errors = {"hidden_states": rel_err(np.stack(out.hidden_states), ref["hidden_states"]),
              "attentions": rel_err(np.stack(out.attentions), ref["attentions"])}
    for field in ("prediction_logits", "seq_relationship_logits", "logits", "last_hidden_state", "pooler_output"):
        if field in ref:
            errors[field] = rel_err(out[field], ref[field])
    if out["loss"] if hasattr(out, "loss") else None:
        errors["loss"] = abs(out.loss - ref["loss"][0]) / abs(ref["loss"][0])
    bad = {k: v for k, v in errors.items() if v > tol}
    assert not bad, f"outputs above {tol}: {bad}"
    return errors


def compare_grads(model, grads, ref, tol, floor):
    scale = max(np.abs(v).max() for k, v in ref.items() if k.startswith("grad.") and v.size)
    bad = {}
    for name in model.params:
        r = ref["grad." + name]
        err = np.abs(np.asarray(grads[name], np.float64) - r).max(initial=0.0)
        if err > tol * np.abs(r).max(initial=0.0) + floor * scale:
            bad[name] = err
    assert not bad, f"gradients off: {bad}"


@pytest.mark.parametrize("name", CASES)
def test_float64_parity(name):
    model, out, grads, ref = run(name, np.float64)
    assert not model.load_report.missing and not model.load_report.unexpected and not model.load_report.initialized
    compare_outputs(out, ref, 1e-9)
    compare_grads(model, grads, ref, 1e-8, 1e-12)


@pytest.mark.parametrize("name", CASES)
def test_float32_parity(name):
    model, out, grads, ref = run(name, np.float32)
    compare_outputs(out, ref, 1e-5)
    compare_grads(model, grads, ref, 1e-4, 1e-6)


def test_every_parameter_has_a_reference_gradient():
    for name in CASES:
        ref, meta = load_reference(name)
        model = our_class(meta["class"]).from_pretrained(os.path.join(FIXTURES, name))
        assert all("grad." + n in ref for n in model.params), name


def test_fixtures_stay_small():
    root = os.path.dirname(FIXTURES)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(root) for f in fs)
    assert total < 2 * 1024 * 1024, f"fixtures are {total / 1024:.0f} KB"


def test_bert_directory_with_tokenizer():
    """A BERT directory as transformers writes it (float32 weights, vocab.txt): tokenizer and model agree."""
    folder = os.path.join(FIXTURES, "bert_with_tokenizer")
    with safe_open(os.path.join(folder, "reference.safetensors"), "np") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
        sentences = json.loads(f.metadata()["sentences"])
    model = tmb.MobileBertForMaskedLM.from_pretrained(folder, dtype=np.float64)
    assert model.config.model_type == "bert" and model.tokenizer is not None
    batch = model.tokenizer(sentences, padding=True)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(batch[key], ref[key])
    out = model.forward(**batch, output_hidden_states=True)
    assert rel_err(np.stack(out.hidden_states), ref["hidden_states"]) < 1e-9
