"""DynaBERT importance and rewiring.

What is proven here, for the released student (stacked FFNs, key-query-shared bottleneck), TINY
(bottleneck attention), the IB-BERT teacher and plain BERT:
- head importance is the accumulated |d loss / d head_mask|, per batch by default and, with
  ``accumulate_gradients``, the original's |running sum| (checked against separate passes);
- neuron importance is |sum W1 dW1 + b1 db1| + |sum W2 dW2| per neuron, for every FFN of a layer;
- rewiring leaves the full-width function unchanged (float64, <= 1e-12 relative), and the width
  0.5 sub-network afterwards is exactly the top-ranked heads and neurons of the original model;
- importance computed after rewiring comes out sorted (the permutation moved the scores with it).
"""

import numpy as np
import pytest

from tinymobilebert import MobileBertForSequenceClassification
from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny
from tinymobilebert.dynabert.importance import compute_importance, ffn_prefixes, plot_head_importance
from tinymobilebert.dynabert.rewire import importance_order, rewire
from tinymobilebert.gradcheck import perturb_parameters
from tinymobilebert.model.plan import subnetwork_heads, subnetwork_neurons

LAYOUTS = {
    "released_student": tiny(num_hidden_layers=3, num_feedforward_networks=3),
    "tiny_bottleneck_attention": tiny(num_hidden_layers=3, use_bottleneck_attention=True,
                                      key_query_shared_bottleneck=False),
    "ib_bert_teacher": ib_bert_tiny(num_hidden_layers=3),
    "plain_bert": bert_tiny(num_hidden_layers=3),
}


def build(cfg, seed=0):
    m = MobileBertForSequenceClassification(cfg.replace(num_labels=3), seed=seed, dtype=np.float64).eval()
    perturb_parameters(m, np.random.default_rng(seed + 100))
    return m


def batches(cfg, n=3, B=4, T=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mask = np.ones((B, T), np.int64)
        mask[0, 4:] = 0
        out.append(dict(input_ids=rng.integers(1, cfg.vocab_size, (B, T)), attention_mask=mask,
                        labels=rng.integers(0, 3, B)))
    return out


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def per_batch_gradients(m, data):
    """[(head-mask gradient (L, A), {name: gradient})] of each batch on its own."""
    L, A = m.config.num_hidden_layers, m.config.num_attention_heads
    out = []
    for b in data:
        m.zero_grad()
        m.forward(**b, head_mask=np.ones((L, A)))
        g = m.backward()
        out.append((g["head_mask"].copy(), {k: v.copy() for k, v in m.grads.items()}))
    return out


def taylor(params, grads, cfg, prefix):
    """Neuron scores of every FFN of one layer, spelled out: (F, M)."""
    rows = []
    for up, down in ffn_prefixes(cfg, prefix):
        W1, b1, W2 = params[up + ".weight"], params[up + ".bias"], params[down + ".weight"]
        dW1, db1, dW2 = grads[up + ".weight"], grads[up + ".bias"], grads[down + ".weight"]
        rows.append(np.abs((W1 * dW1).sum(1) + b1 * db1) + np.abs((W2 * dW2).sum(0)))
    return np.array(rows)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_importance_is_the_accumulated_gradient_score(layout):
    m = build(LAYOUTS[layout])
    cfg, data = m.config, batches(LAYOUTS[layout])
    parts = per_batch_gradients(m, data)
    L = cfg.num_hidden_layers
    layers = [f"{m.base_prefix}encoder.layer.{i}" for i in range(L)]
    clean = compute_importance(m, data)
    assert clean.heads.shape == (L, cfg.num_attention_heads)
    assert clean.neurons.shape == (L, cfg.num_feedforward_networks, cfg.intermediate_size)
    np.testing.assert_allclose(clean.heads, sum(np.abs(h) for h, _ in parts), rtol=1e-12)
    expect = sum(np.stack([taylor(m.params, g, cfg, p) for p in layers]) for _, g in parts)
    np.testing.assert_allclose(clean.neurons, expect, rtol=1e-10, atol=1e-14)
    # the original: gradients never zeroed, each batch adds |the running sum|
    faithful = compute_importance(m, data, accumulate_gradients=True)
    running_h, running_g, heads, neurons = 0, None, 0, 0
    for h, g in parts:
        running_h = running_h + h
        running_g = g if running_g is None else {k: running_g[k] + g[k] for k in g}
        heads = heads + np.abs(running_h)
        neurons = neurons + np.stack([taylor(m.params, running_g, cfg, p) for p in layers])
    np.testing.assert_allclose(faithful.heads, heads, rtol=1e-12)
    np.testing.assert_allclose(faithful.neurons, neurons, rtol=1e-10, atol=1e-14)
    assert rel(faithful.heads, clean.heads) > 1e-3  # the two really differ over several batches
    assert not m.training and not m.store.grad.any()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rewiring_keeps_the_function_and_puts_the_top_ranked_first(layout):
    m = build(LAYOUTS[layout])
    cfg, pre, data = m.config, m.base_prefix, batches(LAYOUTS[layout], seed=1)
    imp = compute_importance(m, data)
    test = dict(batches(LAYOUTS[layout], n=1, seed=2)[0])
    test.pop("labels")
    before = m.forward(**test, output_hidden_states=True, keep_cache=False)
    original = {k: v.copy() for k, v in m.params.items()}
    orders = rewire(m, imp.heads, imp.neurons)
    after = m.forward(**test, output_hidden_states=True, keep_cache=False)
    assert rel(after.logits, before.logits) <= 1e-12
    for a, b in zip(after.hidden_states, before.hidden_states):
        assert rel(a, b) <= 1e-12
    np.testing.assert_array_equal(orders["heads"], importance_order(imp.heads))
    # width 0.5 after rewiring == the original with only the top-ranked heads and neurons left
    A, M = cfg.num_attention_heads, cfg.intermediate_size
    h, n = subnetwork_heads(A, 0.5), subnetwork_neurons(A, M, 0.5)
    sub = m.forward(**test, width_mult=0.5, output_hidden_states=True, keep_cache=False)
    for k, v in original.items():
        m.params[k][...] = v
    head_mask = np.zeros((cfg.num_hidden_layers, A))
    for i in range(cfg.num_hidden_layers):
        head_mask[i, orders["heads"][i, :h]] = 1.0  # a masked head adds nothing (its output is 0)
        for f, (_, down) in enumerate(ffn_prefixes(cfg, f"{pre}encoder.layer.{i}")):
            cut = orders["neurons"][i, f, n:]
            m.params[down + ".weight"][:, cut] = 0.0  # a cut neuron adds nothing
    ref = m.forward(**test, head_mask=head_mask, output_hidden_states=True, keep_cache=False)
    assert rel(sub.logits, ref.logits) <= 1e-12
    for a, b in zip(sub.hidden_states, ref.hidden_states):
        assert rel(a, b) <= 1e-12


def test_importance_after_rewiring_is_sorted():
    m = build(LAYOUTS["released_student"])
    data = batches(m.config, seed=3)
    rewire(m, *compute_importance(m, data).to_arrays().values())
    again = compute_importance(m, data)
    assert np.all(np.diff(again.heads, axis=1) <= 1e-12 * again.heads.max())
    assert np.all(np.diff(again.neurons, axis=2) <= 1e-9 * again.neurons.max())


def test_ties_keep_their_order_and_bad_shapes_are_refused():
    np.testing.assert_array_equal(importance_order([[1.0, 2.0, 2.0, 0.5]]), [[1, 2, 0, 3]])
    m = build(LAYOUTS["plain_bert"])
    with pytest.raises(ValueError, match=r"head_importance must have shape \(3, 4\)"):
        rewire(m, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"neuron_importance must have shape \(3, 1, 48\)"):
        rewire(m, None, np.ones((3, 48)))
    with pytest.raises(ValueError, match="non-finite"):
        rewire(m, np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="must hold labels"):
        compute_importance(m, [dict(input_ids=np.ones((2, 3), np.int64))])


def test_head_importance_heat_map(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_head_importance(np.random.default_rng(0).random((3, 4)), str(tmp_path / "heads.png"))
    assert (tmp_path / "heads.png").stat().st_size > 1000 and path.endswith("heads.png")
