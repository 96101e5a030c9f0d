"""The plan-driven encoder: DynaBERT width and depth, head masks and token dropping.

What is proven here, for the released student, TINY, the IB-BERT teacher and plain BERT:
- the size rules (heads, neurons, kept layers) against the spec's tables;
- a width-w run equals the full model with the cut heads' and neurons' output weights zeroed, a
  depth-d run equals a shallower model built from the kept layers, keeping every token equals
  no dropping, token dropping equals a reference built from plain layer calls, and stopping
  after layer l gives the full forward's first per-layer outputs and a model of l + 1 layers'
  head outputs;
- backward differentiates exactly what ran (float64 finite differences at 1e-6), head mask
  included;
- bad multipliers, head masks, kept positions and stopping layers are clear errors.
"""

import numpy as np
import pytest
from conftest import float64_model, four_layer_layouts, padded_batch

from tinymobilebert import MobileBertForPreTraining, MobileBertForSequenceClassification, MobileBertModel
from tinymobilebert.blocks.embeddings import embeddings_forward
from tinymobilebert.blocks.layer import layer_forward
from tinymobilebert.config import bert_tiny
from tinymobilebert.gradcheck import gradcheck
from tinymobilebert.model.plan import (check_keep_positions, depth_layers, encoder_plan, subnetwork_heads,
                                       subnetwork_neurons)

TOL = 1e-6
LAYOUTS = four_layer_layouts()


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------------------------- size rules
def test_depth_rule_matches_the_spec_tables():
    assert depth_layers(12, 1.0) == list(range(12))
    assert depth_layers(12, 0.75) == [0, 1, 2, 4, 5, 6, 8, 9, 10]  # drops 3, 7, 11
    assert depth_layers(12, 0.5) == [0, 2, 4, 6, 8, 10]
    # L = 24: d = 0.75 drops every 4th layer, d = 0.5 every other one
    assert depth_layers(24, 0.75) == [i for i in range(24) if (i + 1) % 4 != 0]
    assert depth_layers(24, 0.5) == list(range(0, 24, 2))
    assert depth_layers(24, 0.25) == list(range(0, 24, 4))


@pytest.mark.parametrize("A, M, expected", [
    (12, 3072, [(3, 768), (6, 1536), (9, 2304), (12, 3072)]),  # BERT-base (spec A.2)
    (4, 512, [(1, 128), (2, 256), (3, 384), (4, 512)]),  # MobileBERT: 4 heads, FFNs of 512
])
def test_width_rule_matches_the_spec(A, M, expected):
    got = [(subnetwork_heads(A, w), subnetwork_neurons(A, M, w)) for w in (0.25, 0.5, 0.75, 1.0)]
    assert got == expected


def test_width_keeps_at_least_one_head():
    assert subnetwork_heads(4, 0.1) == 1 and subnetwork_neurons(4, 512, 0.1) == 128


@pytest.mark.parametrize("kw, match", [
    (dict(width_mult=0.0), "width_mult must be in"), (dict(width_mult=1.5), "width_mult must be in"),
    (dict(depth_mult=-0.5), "depth_mult must be in"), (dict(depth_mult=0.1), "keeps no layer"),
    (dict(width_mult="half"), "width_mult must be a number"),
    (dict(split_layer=1), "no tokens are dropped"),
    (dict(stop_after_layer=4), "stop_after_layer must be None or an integer in \\[0, 3\\]"),
    (dict(stop_after_layer=-1), "stop_after_layer must be None or an integer in \\[0, 3\\]"),
    (dict(stop_after_layer=1.0), "stop_after_layer must be None or an integer"),
    (dict(stop_after_layer=True), "stop_after_layer must be None or an integer"),
    (dict(stop_after_layer=1, depth_mult=0.5), "stop_after_layer does not combine with depth_mult"),
    (dict(stop_after_layer=1, token_dropping=True), "stop_after_layer does not combine with token dropping"),
])
def test_bad_plan_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        encoder_plan(LAYOUTS["plain_bert"], **kw)


def test_token_dropping_plan_layout():
    plan = encoder_plan(bert_tiny(num_hidden_layers=12), token_dropping=True)
    assert [r.rows for r in plan.runs] == ["all"] * 5 + ["split"] + ["kept"] * 5 + ["all"]
    with pytest.raises(ValueError, match="split_layer must be an integer in \\[0, 10\\]"):
        encoder_plan(bert_tiny(num_hidden_layers=12), token_dropping=True, split_layer=11)
    with pytest.raises(ValueError, match="at least 2 executed layers"):
        encoder_plan(bert_tiny(num_hidden_layers=1), token_dropping=True)


@pytest.mark.parametrize("idx, match", [
    (np.array([[0, 1]]), "shape \\(batch=2, k\\)"),
    (np.array([0, 1]), "shape \\(batch=2, k\\)"),
    (np.zeros((2, 0), np.int64), "between 1 and T=5"),
    (np.zeros((2, 6), np.int64), "between 1 and T=5"),
    (np.array([[0, 5], [1, 2]]), "in \\[0, T=5\\), found 5"),
    (np.array([[0, -1], [1, 2]]), "found -1"),
    (np.array([[1, 1], [1, 2]]), "twice in row 0"),
    (np.array([[0.0, 1.0], [1.0, 2.0]]), "integer positions"),
])
def test_bad_keep_positions(idx, match):
    with pytest.raises((ValueError, TypeError), match=match):
        check_keep_positions(idx, 2, 5)


def test_keep_positions_any_order_gives_the_same_outputs():
    m = float64_model(MobileBertModel, LAYOUTS["released_student"])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(0))
    a = m.forward(ids, tt, mask, keep_positions=np.array([[0, 2, 4], [4, 1, 0], [2, 1, 0]]), keep_cache=False)
    b = m.forward(ids, tt, mask, keep_positions=np.array([[4, 2, 0], [0, 1, 4], [0, 1, 2]]), keep_cache=False)
    np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)


def test_bad_head_mask():
    m = float64_model(MobileBertModel, LAYOUTS["plain_bert"])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(0))
    with pytest.raises(ValueError, match="head_mask must have shape .*\\(4, 4\\)"):
        m.forward(ids, head_mask=np.ones((3, 4)))
    with pytest.raises(ValueError, match="width_mult must be in"):
        m.forward(ids, width_mult=2)


# ---------------------------------------------------------------------------------- equivalences
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("width", [0.25, 0.5, 0.75])
def test_width_equals_the_full_model_with_cut_parts_zeroed(layout, width):
    """Cut heads contribute nothing once their output columns are zero; cut neurons likewise.
    (The softmax of the kept heads never sees the cut ones, so this is exact.)"""
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    cfg, P, pre = m.config, m.params, m.base_prefix
    ids, tt, mask = padded_batch(cfg, np.random.default_rng(1))
    sub = m.forward(ids, tt, mask, width_mult=width, output_hidden_states=True, keep_cache=False)
    a = subnetwork_heads(cfg.num_attention_heads, width) * cfg.head_size
    n = subnetwork_neurons(cfg.num_attention_heads, cfg.intermediate_size, width)
    for i in range(cfg.num_hidden_layers):
        p = f"{pre}encoder.layer.{i}."
        P[p + "attention.output.dense.weight"][:, a:] = 0
        P[p + "output.dense.weight"][:, n:] = 0
        for j in range(cfg.num_feedforward_networks - 1):
            P[f"{p}ffn.{j}.output.dense.weight"][:, n:] = 0
    full = m.forward(ids, tt, mask, output_hidden_states=True, keep_cache=False)
    assert rel(sub.prediction_logits, full.prediction_logits) < 1e-12
    for hs, hf in zip(sub.hidden_states, full.hidden_states):
        assert rel(hs, hf) < 1e-12
    if width < 1:  # and the sub-network is really narrower: its own outputs differ from the uncut model
        m2 = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
        assert rel(m2.forward(ids, tt, mask, keep_cache=False).prediction_logits, sub.prediction_logits) > 1e-3


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("depth", [0.5, 0.75])
def test_depth_equals_a_model_of_the_kept_layers(layout, depth):
    m = float64_model(MobileBertForSequenceClassification, LAYOUTS[layout])
    cfg, pre = m.config, m.base_prefix
    kept = depth_layers(cfg.num_hidden_layers, depth)
    small = MobileBertForSequenceClassification(cfg.replace(num_hidden_layers=len(kept)), dtype=np.float64).eval()
    for name in small.params:
        src = name
        if name.startswith(pre + "encoder.layer."):
            j, rest = name[len(pre + "encoder.layer."):].split(".", 1)
            src = f"{pre}encoder.layer.{kept[int(j)]}.{rest}"
        small.params[name][...] = m.params[src]
    ids, tt, mask = padded_batch(cfg, np.random.default_rng(2))
    a = m.forward(ids, tt, mask, depth_mult=depth, output_hidden_states=True, output_attentions=True,
                  keep_cache=False)
    b = small.forward(ids, tt, mask, output_hidden_states=True, output_attentions=True, keep_cache=False)
    assert len(a.hidden_states) == len(kept) + 1 and len(a.attentions) == len(kept)
    assert rel(a.logits, b.logits) == 0.0
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert rel(x, y) == 0.0


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_keeping_every_token_equals_no_dropping(layout):
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(3))
    B, T = ids.shape
    every = np.array([np.random.default_rng(b).permutation(T) for b in range(B)])
    a = m.forward(ids, tt, mask, keep_positions=every, keep_cache=False)
    b = m.forward(ids, tt, mask, keep_cache=False)
    assert rel(a.prediction_logits, b.prediction_logits) < 1e-12
    assert rel(a.seq_relationship_logits, b.seq_relationship_logits) < 1e-12


def token_dropping_reference(m, ids, tt, mask, keep, split):
    """Token dropping spelled out with plain layer calls (the spec's B.4), no plan involved."""
    cfg, P, pre = m.config, m.params, m.base_prefix
    B, T = ids.shape
    X, _ = embeddings_forward(ids, tt, mask, P, pre, cfg)
    full_mask = mask.astype(np.float64)
    X = X.reshape(B, T, -1)
    L = cfg.num_hidden_layers

    def layer(i, x, km):
        b, t, h = x.shape
        y, *_ = layer_forward(x.reshape(b * t, h), km, P, f"{pre}encoder.layer.{i}", cfg, b, t)
        return y.reshape(b, t, -1)

    for i in range(split):
        X = layer(i, X, full_mask)
    pick = lambda a: np.take_along_axis(a, keep[:, :, None], axis=1)
    kept = pick(layer(split, X, full_mask))  # queries are independent: the kept rows of the full layer
    kept_mask = np.take_along_axis(full_mask, keep, axis=1)
    for i in range(split + 1, L - 1):
        kept = layer(i, kept, kept_mask)  # the kept tokens as a shorter sequence
    merged = X.copy()  # dropped tokens carry their state from before the split
    np.put_along_axis(merged, keep[:, :, None], kept, axis=1)
    return layer(L - 1, merged, full_mask)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("split", [0, 1, 2])
def test_token_dropping_equals_the_reference(layout, split):
    m = float64_model(MobileBertModel, LAYOUTS[layout])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(4))
    keep = np.array([[0, 3, 5], [1, 2, 6], [0, 1, 4]])  # row 1 keeps padding (6), row 2 drops a real token
    out = m.forward(ids, tt, mask, keep_positions=keep, split_layer=split, output_hidden_states=True,
                    output_attentions=True, keep_cache=False)
    ref = token_dropping_reference(m, ids, tt, mask, keep, split)
    assert rel(out.last_hidden_state, ref) < 1e-12
    shapes = [h.shape[1] for h in out.hidden_states]
    assert shapes == [7] * (split + 1) + [3] * (3 - split) + [7]
    assert out.attentions[split].shape == (3, 4, 3, 7)


def test_head_mask_of_ones_changes_nothing_and_zeros_remove_a_head():
    m = float64_model(MobileBertModel, LAYOUTS["plain_bert"])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(5))
    base = m.forward(ids, tt, mask, keep_cache=False).last_hidden_state
    ones = m.forward(ids, tt, mask, head_mask=np.ones((4, 4)), keep_cache=False).last_hidden_state
    np.testing.assert_array_equal(base, ones)
    hm = np.ones((4, 4))
    hm[:, 3] = 0  # the last head off everywhere = the 3 leading heads with full FFNs
    masked = m.forward(ids, tt, mask, head_mask=hm, output_attentions=True, keep_cache=False)
    assert np.all(masked.attentions[0][:, 3] == 0)
    for i in range(4):
        m.params[f"{m.base_prefix}encoder.layer.{i}.attention.output.dense.weight"][:, 24:] = 0
    zeroed = m.forward(ids, tt, mask, keep_cache=False).last_hidden_state
    assert rel(masked.last_hidden_state, zeroed) < 1e-12


# ---------------------------------------------------------------------------------- gradients
def check(report):
    assert report.ok(), "\n" + str(report)


def pretraining_inputs(cfg, rng, **extra):
    ids, tt, mask = padded_batch(cfg, rng)
    labels = np.where((rng.random(ids.shape) < 0.5) & (mask > 0), ids, -100)
    labels[0, 1], labels[1, 4] = ids[0, 1], ids[1, 4]
    return dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=labels,
                next_sentence_label=np.array([0, 1, 1]), **extra)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("width, depth", [(0.5, 1.0), (0.75, 0.5), (0.25, 0.75)])
def test_subnetwork_backward(layout, width, depth):
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    inputs = pretraining_inputs(m.config, np.random.default_rng(6), width_mult=width, depth_mult=depth)
    dropped = set(range(m.config.num_hidden_layers)) - set(depth_layers(m.config.num_hidden_layers, depth))
    unused = [n for n in m.params if any(f"encoder.layer.{i}." in n for i in dropped)]  # no gradient at all
    report = gradcheck(m, inputs, max_entries=5, tol=TOL, allow_zero=unused)
    check(report)
    # the cut parts get exactly zero gradient; a dropped layer gets none at all
    m.zero_grad()
    m.forward(**inputs)
    g = m.backward()
    pre, cfg = m.base_prefix, m.config
    n = subnetwork_neurons(cfg.num_attention_heads, cfg.intermediate_size, width)
    kept = depth_layers(cfg.num_hidden_layers, depth)
    assert np.all(g[f"{pre}encoder.layer.{kept[0]}.intermediate.dense.weight"][n:] == 0)
    assert np.any(g[f"{pre}encoder.layer.{kept[0]}.intermediate.dense.weight"][:n] != 0)
    for i in set(range(cfg.num_hidden_layers)) - set(kept):
        assert not np.any(g[f"{pre}encoder.layer.{i}.attention.self.query.weight"])


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_head_mask_backward(layout):
    m = float64_model(MobileBertForSequenceClassification, LAYOUTS[layout].replace(num_labels=3))
    rng = np.random.default_rng(7)
    ids, tt, mask = padded_batch(m.config, rng)
    hm = rng.uniform(0.5, 1.5, (4, 4))
    hm[1, 2] = 0.0  # a head switched off still gets its importance
    inputs = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=np.array([0, 2, 1]),
                  head_mask=hm, width_mult=0.75)
    # the key bias's true gradient is exactly zero (a softmax ignores a shift shared by a row's
    # scores), below what finite differences resolve: checked analytically instead
    names = [n for n in m.params if not n.endswith("key.bias")] + ["head_mask"]
    # a sharply curved objective (loss ~24 with these weights): a smaller step than the default
    # keeps the difference quotients' truncation error (~h^2) below the tolerance
    report = gradcheck(m, inputs, names=names, max_entries=5, tol=TOL, h=2e-6)
    check(report)
    m.zero_grad()
    m.forward(**inputs)
    g = m.backward()
    d = g["head_mask"]
    assert d.shape == (4, 4) and np.all(d[:, 3] == 0) and d[1, 2] != 0  # width 0.75: head 3 never ran
    assert max(np.abs(g[n]).max() for n in m.params if n.endswith("key.bias")) < 1e-12 * np.abs(d).max()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_token_dropping_backward(layout):
    """Padding, a keep set that leaves out some labelled positions, gradients through split and merge."""
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    rng = np.random.default_rng(8)
    keep = np.array([[0, 3, 5, 6], [1, 2, 4, 6], [0, 1, 2, 5]])
    inputs = pretraining_inputs(m.config, rng, keep_positions=keep)
    assert inputs["labels"][1, 4] != -100 and inputs["labels"][0, 1] != -100  # labelled, (0, 1) dropped
    check(gradcheck(m, inputs, max_entries=5, tol=TOL))


def test_token_dropping_backward_with_output_gradients_and_depth():
    """Gradients sent in on hidden states of every length and on the split layer's attentions."""
    cfg = LAYOUTS["released_student"].replace(num_hidden_layers=6)
    m = float64_model(MobileBertModel, cfg)
    rng = np.random.default_rng(9)
    ids, tt, mask = padded_batch(cfg, rng)
    keep = np.array([[0, 2, 6], [4, 1, 0], [2, 0, 5]])
    inputs = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, keep_positions=keep, depth_mult=0.75,
                  split_layer=1, output_hidden_states=True, output_attention_scores=True, output_attentions=True)
    out = m.forward(**inputs, keep_cache=False)  # layers 0, 1, 2, 4 (round(4.5) = 4): all, split, kept, all
    assert [h.shape[1] for h in out.hidden_states] == [7, 7, 3, 3, 7]
    go = {"hidden_states": [rng.standard_normal(h.shape) for h in out.hidden_states],
          "attentions": [rng.standard_normal(a.shape) for a in out.attentions],
          "last_hidden_state": rng.standard_normal(out.last_hidden_state.shape)}
    unused = [n for n in m.params if "layer.3." in n or "layer.5." in n]
    # random output gradients on every tensor make a large, curved objective: a smaller step keeps
    # the difference quotients' truncation error (~h^2) below the tolerance
    check(gradcheck(m, inputs, go, max_entries=5, tol=TOL, allow_zero=unused, h=2e-6))
    with pytest.raises(ValueError, match="hidden_states.*\\]\\[2\\] must have shape \\(3, 3, 32\\)"):
        m.forward(**inputs)
        bad = dict(go, hidden_states=[np.zeros((3, 7, 32))] * len(out.hidden_states))
        m.backward(bad)


# ---------------------------------------------------------------------------------- stopping early
def test_stopping_early_plan_and_errors_through_forward():
    plan = encoder_plan(LAYOUTS["plain_bert"], width_mult=0.5, stop_after_layer=1)
    assert plan.layers == [0, 1] and plan.stop_after_layer == 1 and all(r.heads == 2 for r in plan.runs)
    assert encoder_plan(LAYOUTS["plain_bert"], stop_after_layer=np.int64(3)).layers == [0, 1, 2, 3]
    m = float64_model(MobileBertModel, LAYOUTS["plain_bert"])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(0))
    with pytest.raises(ValueError, match="stop_after_layer does not combine with token dropping"):
        m.forward(ids, tt, mask, stop_after_layer=1, keep_positions=np.array([[0, 1], [0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="stop_after_layer must be None or an integer in \\[0, 3\\].*got 7"):
        m.forward(ids, tt, mask, stop_after_layer=7)
    out = m.forward(ids, tt, mask, stop_after_layer=1, output_hidden_states=True)
    with pytest.raises(ValueError, match="grad_outputs\\['hidden_states'\\] must have 3 entries"):
        m.backward({"hidden_states": [np.ones(h.shape) for h in out.hidden_states] + [np.ones((3, 7, 32))] * 2})


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_stopping_early_is_the_start_of_the_full_forward(layout):
    """Per-layer outputs: the first l + 1 of the full forward's. Heads: those of a model of l + 1
    layers holding the same parameters (they read layer l's output)."""
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    ids, tt, mask = padded_batch(m.config, np.random.default_rng(10))
    wanted = dict(output_hidden_states=True, output_attentions=True, output_attention_scores=True, keep_cache=False)
    full = m.forward(ids, tt, mask, **wanted)
    for l in range(m.config.num_hidden_layers):
        out = m.forward(ids, tt, mask, stop_after_layer=l, **wanted)
        assert (len(out.hidden_states), len(out.attentions), len(out.attention_scores)) == (l + 2, l + 1, l + 1)
        for key in ("hidden_states", "attentions", "attention_scores"):
            for a, b in zip(getattr(out, key), getattr(full, key)):
                assert rel(a, b) <= 1e-12, (key, l)
        assert rel(out.last_hidden_state, full.hidden_states[l + 1]) <= 1e-12
        shallow = MobileBertForPreTraining(m.config.replace(num_hidden_layers=l + 1), dtype=np.float64).eval()
        shallow.load_state_dict({n: m.params[n] for n in shallow.params})
        ref = shallow.forward(ids, tt, mask, keep_cache=False)
        assert rel(out.prediction_logits, ref.prediction_logits) <= 1e-12
        assert rel(out.seq_relationship_logits, ref.seq_relationship_logits) <= 1e-12
        if l < m.config.num_hidden_layers - 1:  # and it is not the full model's output
            assert rel(out.prediction_logits, full.prediction_logits) > 1e-3


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_stopping_early_backward(layout):
    """The loss (heads on layer 1's output) plus gradients sent in on every hidden state and
    score that ran, at width 0.75 with a head mask; layers 2 and 3 get exactly nothing."""
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    rng = np.random.default_rng(11)
    hm = rng.uniform(0.5, 1.5, (4, 4))
    inputs = pretraining_inputs(m.config, rng, stop_after_layer=1, width_mult=0.75, head_mask=hm,
                                output_hidden_states=True, output_attention_scores=True)
    out = m.forward(**inputs, keep_cache=False)
    go = {"hidden_states": [rng.standard_normal(h.shape) for h in out.hidden_states],
          # none on padded keys, whose scores are the dtype's minimum (the objective would overflow)
          "attention_scores": [rng.standard_normal(s.shape) * inputs["attention_mask"][:, None, None, :]
                               for s in out.attention_scores]}
    above = [n for n in m.params if "layer.2." in n or "layer.3." in n]
    report = gradcheck(m, inputs, go, max_entries=5, tol=TOL, allow_zero=above, h=2e-6)
    check(report)
    m.zero_grad()
    m.forward(**inputs)
    g = m.backward(go)
    assert not any(g[n].any() for n in above)
    assert np.all(g["head_mask"][2:] == 0) and np.all(g["head_mask"][:2, :3] != 0)
