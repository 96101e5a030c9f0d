"""Finite-difference checks of every building block's backward pass, one block at a time.

Each check builds a float64 model with non-trivial parameters (``perturb_parameters``), runs one
block's forward pass, and differentiates the objective  sum_k <R_k, out_k>  (R_k random) with
respect to the block's inputs *and* parameters; ``check_arrays`` compares with central
differences. Dropout is checked in training mode with a generator rebuilt from the same seed
on every call, so every evaluation sees the same mask.
"""

import numpy as np
import pytest

from tinymobilebert import MobileBertModel
from tinymobilebert.blocks.attention import attention_backward, attention_forward
from tinymobilebert.blocks.bottleneck import (bottleneck_input_backward, bottleneck_input_forward,
                                              bottleneck_output_backward, bottleneck_output_forward)
from tinymobilebert.blocks.embeddings import embeddings_backward, embeddings_forward
from tinymobilebert.blocks.heads import (linear_head_backward, linear_head_forward, mlm_head_backward,
                                         mlm_head_forward, pooler_backward, pooler_forward)
from tinymobilebert.blocks.layer import layer_backward, layer_forward
from tinymobilebert.blocks.linear import linear_backward, linear_forward
from tinymobilebert.blocks.sublayers import (dense_act_backward, dense_act_forward, dense_norm_backward,
                                             dense_norm_forward)
from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny
from tinymobilebert.gradcheck import check_arrays, perturb_parameters
from tinymobilebert.kernels.activations import ACT_CODES
from tinymobilebert.losses import (check_labels, cross_entropy_backward_mean, cross_entropy_forward_mean,
                                   mse_backward, mse_forward)
from tinymobilebert.model import MobileBertForPreTraining

TOL = 1e-6
B, T = 2, 5
N = B * T


def make_model(cfg, cls=MobileBertModel, seed=0):
    m = cls(cfg, seed=seed, dtype=np.float64)
    perturb_parameters(m, np.random.default_rng(seed + 1))
    return m


def fresh_grads(params):
    return {k: np.zeros_like(v) for k, v in params.items()}


def assert_check(f, arrays, analytic, names):
    report = check_arrays(f, arrays, analytic, names=names, max_entries=12, tol=TOL)
    assert report.ok(), "\n" + str(report)
    return report


def projection(rng, *shapes):
    return [rng.standard_normal(s) for s in shapes]


def rng_factory(seed):
    """Same dropout masks on every call (None = eval mode)."""
    return (lambda: np.random.default_rng(seed)) if seed is not None else (lambda: None)


# ---------------------------------------------------------------------------------- linear
def test_linear():
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((N, 6)), "W": rng.standard_normal((4, 6)), "b": rng.standard_normal(4)}
    (R,) = projection(rng, (N, 4))
    f = lambda: float(np.sum(R * linear_forward(arrays["x"], arrays["W"], arrays["b"])))
    g = {"W": np.zeros((4, 6)), "b": np.zeros(4)}
    g["x"] = linear_backward(R, arrays["x"], arrays["W"], g["W"], g["b"])
    assert_check(f, arrays, g, ["x", "W", "b"])


# ---------------------------------------------------------------------------------- sublayers
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dropout_seed", [None, 7])
def test_dense_norm(layer_norm, residual, dropout_seed):
    m = make_model(tiny())
    P = m.params
    prefix = "encoder.layer.0.output.bottleneck"  # dense [H, I] + norm [H]
    rng = np.random.default_rng(1)
    arrays = dict(P)
    arrays["x"] = rng.standard_normal((N, m.config.true_hidden_size))
    if residual:
        arrays["res"] = rng.standard_normal((N, m.config.hidden_size))
    new_rng = rng_factory(dropout_seed)

    def fwd():
        return dense_norm_forward(arrays["x"], arrays.get("res"), arrays, prefix, layer_norm, 1e-5, 0.3, new_rng())

    y, cache = fwd()
    (R,) = projection(rng, y.shape)
    grads = fresh_grads(P)
    dx, dres = dense_norm_backward(R, cache, arrays, grads)
    grads["x"] = dx
    names = [n for n in P if n.startswith(prefix)] + ["x"]
    if residual:
        grads["res"] = dres
        names.append("res")
    else:
        assert dres is None
    assert_check(lambda: float(np.sum(R * fwd()[0])), arrays, grads, names)


@pytest.mark.parametrize("act", sorted(ACT_CODES))
def test_dense_act(act):
    m = make_model(tiny())
    prefix = "encoder.layer.0.intermediate"
    rng = np.random.default_rng(2)
    arrays = dict(m.params)
    arrays["x"] = rng.standard_normal((N, m.config.true_hidden_size))
    code = ACT_CODES[act]
    y, cache = dense_act_forward(arrays["x"], arrays, prefix, code)
    (R,) = projection(rng, y.shape)
    grads = fresh_grads(m.params)
    grads["x"] = dense_act_backward(R, cache, arrays, grads)
    f = lambda: float(np.sum(R * dense_act_forward(arrays["x"], arrays, prefix, code)[0]))
    assert_check(f, arrays, grads, [prefix + ".dense.weight", prefix + ".dense.bias", "x"])


# ---------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("mask_kind", ["none", "padded"])
@pytest.mark.parametrize("masked_score", [None, -6.0])
@pytest.mark.parametrize("dropout_seed", [None, 3])
def test_attention(mask_kind, masked_score, dropout_seed):
    """Q and K read the same tensor (the += path); gradients also arrive on probs and scores."""
    m = make_model(tiny())
    cfg = m.config
    prefix = "encoder.layer.1.attention.self"
    rng = np.random.default_rng(3)
    arrays = dict(m.params)
    arrays["s"] = rng.standard_normal((N, cfg.attention_input_size))
    arrays["v_in"] = rng.standard_normal((N, cfg.value_input_size))
    key_mask = None
    if mask_kind == "padded":
        key_mask = np.ones((B, T))
        key_mask[0, 3:] = 0
        key_mask[1, 1:] = 0  # one real key left
        # (a sequence with no real token at all is pinned in test_kernels: in "add" mode its
        # scores round to finfo.min, so finite differences see a constant there)
    new_rng = rng_factory(dropout_seed)

    def fwd():
        return attention_forward(arrays["s"], arrays["s"], arrays["v_in"], key_mask, arrays, prefix, B, T,
                                 cfg.num_attention_heads, masked_score=masked_score, p_drop=0.2, rng=new_rng(),
                                 keep_scores=True)

    ctx, probs, scores, cache = fwd()
    Rc, Rp, Rs = projection(rng, ctx.shape, probs.shape, scores.shape)
    if key_mask is not None:  # masked scores are finfo.min in "add" mode: read only the real keys
        Rs *= key_mask[:, None, None, :]
    grads = fresh_grads(m.params)
    dq, dk, dv = attention_backward(Rc, cache, arrays, grads, d_probs=Rp, d_scores=Rs)
    grads["s"] = dq + dk
    grads["v_in"] = dv

    def f():
        c, p, s, _ = fwd()
        return float(np.sum(Rc * c) + np.sum(Rp * p) + np.sum(Rs * s))

    assert_check(f, arrays, grads, [n for n in m.params if n.startswith(prefix)] + ["s", "v_in"])


# ---------------------------------------------------------------------------------- bottleneck
LAYOUTS = {
    "student_kqs": tiny(),
    "tiny_bottleneck_attention": tiny(use_bottleneck_attention=True, key_query_shared_bottleneck=False),
    "teacher_inverted": ib_bert_tiny(),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bottleneck_input(layout):
    m = make_model(LAYOUTS[layout])
    cfg = m.config
    ln = cfg.normalization_type == "layer_norm"
    rng = np.random.default_rng(4)
    arrays = dict(m.params)
    arrays["X"] = rng.standard_normal((N, cfg.hidden_size))
    fwd = lambda: bottleneck_input_forward(arrays["X"], arrays, "encoder.layer.0", cfg, ln)
    outs, cache = fwd()
    Rs = projection(rng, *[o.shape for o in outs])
    grads = fresh_grads(m.params)
    grads["X"] = bottleneck_input_backward(*Rs, cache, arrays, grads)
    f = lambda: float(sum(np.sum(r * o) for r, o in zip(Rs, fwd()[0])))
    assert_check(f, arrays, grads, [n for n in m.params if ".bottleneck." in n and "layer.0." in n
                                    and "output.bottleneck" not in n] + ["X"])


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bottleneck_output(layout):
    m = make_model(LAYOUTS[layout])
    cfg = m.config
    ln = cfg.normalization_type == "layer_norm"
    rng = np.random.default_rng(5)
    arrays = dict(m.params)
    arrays["Y"] = rng.standard_normal((N, cfg.true_hidden_size))
    arrays["X"] = rng.standard_normal((N, cfg.hidden_size))
    new_rng = rng_factory(11)
    fwd = lambda: bottleneck_output_forward(arrays["Y"], arrays["X"], arrays, "encoder.layer.0", cfg.replace(
        hidden_dropout_prob=0.25), ln, new_rng())
    out, cache = fwd()
    (R,) = projection(rng, out.shape)
    grads = fresh_grads(m.params)
    grads["Y"], grads["X"] = bottleneck_output_backward(R, cache, arrays, grads)
    assert_check(lambda: float(np.sum(R * fwd()[0])), arrays, grads,
                 [n for n in m.params if "layer.0.output.bottleneck" in n] + ["Y", "X"])


# ---------------------------------------------------------------------------------- whole layer
LAYER_LAYOUTS = dict(LAYOUTS, plain_bert=bert_tiny(), student_4ffn_layernorm_gelu=tiny(
    num_feedforward_networks=4, normalization_type="layer_norm", hidden_act="gelu"))


@pytest.mark.parametrize("layout", sorted(LAYER_LAYOUTS))
@pytest.mark.parametrize("training", [False, True])
def test_layer(layout, training):
    cfg = LAYER_LAYOUTS[layout].replace(hidden_dropout_prob=0.1 if training else 0.0)
    m = make_model(cfg)
    rng = np.random.default_rng(6)
    arrays = dict(m.params)
    arrays["X"] = rng.standard_normal((N, cfg.hidden_size))
    key_mask = np.ones((B, T))
    key_mask[1, 3:] = 0
    new_rng = rng_factory(5 if training else None)
    fwd = lambda: layer_forward(arrays["X"], key_mask, arrays, "encoder.layer.0", cfg, B, T, new_rng(), True)
    out, probs, scores, cache = fwd()
    R, Rp, Rs = projection(rng, out.shape, probs.shape, scores.shape)
    Rs *= key_mask[:, None, None, :]  # masked scores are finfo.min: read only the real keys
    grads = fresh_grads(m.params)
    grads["X"] = layer_backward(R, cache, arrays, grads, Rp, Rs)

    def f():
        o, p, s, _ = fwd()
        return float(np.sum(R * o) + np.sum(Rp * p) + np.sum(Rs * s))

    assert_check(f, arrays, grads, [n for n in m.params if n.startswith("encoder.layer.0.")] + ["X"])


# ---------------------------------------------------------------------------------- embeddings
EMB_LAYOUTS = {
    "trigram": tiny(pad_token_id=None),
    "trigram_padding_aware": tiny(pad_token_id=None, trigram_padding_aware=True),
    "no_trigram_transformation": tiny(pad_token_id=None, trigram_input=False),  # E != H: still projected
    "plain_bert": bert_tiny(pad_token_id=None),
}


@pytest.mark.parametrize("layout", sorted(EMB_LAYOUTS))
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_embeddings(layout, dropout):
    cfg = EMB_LAYOUTS[layout].replace(hidden_dropout_prob=dropout)
    m = make_model(cfg)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 6, (B, T))  # few ids: rows repeat, the scatter-add collides
    tt = rng.integers(0, 2, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[0, 3:] = 0
    new_rng = rng_factory(9 if dropout else None)
    arrays = dict(m.params)
    fwd = lambda: embeddings_forward(ids, tt, mask, arrays, "", cfg, new_rng())
    y, cache = fwd()
    (R,) = projection(rng, y.shape)
    grads = fresh_grads(m.params)
    embeddings_backward(R, cache, arrays, grads, cfg)
    assert_check(lambda: float(np.sum(R * fwd()[0])), arrays, grads, [n for n in m.params if n.startswith("embeddings.")])


def test_padding_row_gets_no_lookup_gradient():
    """As nn.Embedding(padding_idx=pad_token_id): the [PAD] row is frozen for lookups."""
    cfg = tiny(pad_token_id=1)
    m = make_model(cfg)
    ids = np.array([[2, 1, 1, 3, 1]])
    y, cache = embeddings_forward(ids, np.zeros_like(ids), None, m.params, "", cfg)
    grads = fresh_grads(m.params)
    embeddings_backward(np.ones_like(y), cache, m.params, grads, cfg)
    dW = grads["embeddings.word_embeddings.weight"]
    assert np.all(dW[1] == 0) and np.any(dW[2] != 0) and np.any(dW[3] != 0)


# ---------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("activation", [False, True])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooler(activation, pooling):
    cfg = tiny(classifier_activation=activation, classifier_pooling=pooling)
    m = make_model(cfg)
    rng = np.random.default_rng(8)
    arrays = dict(m.params)
    arrays["h"] = rng.standard_normal((B, T, cfg.hidden_size))
    mask = np.ones((B, T), np.int64)
    mask[1, 2:] = 0
    pooled, cache = pooler_forward(arrays["h"], arrays, "", cfg, mask)
    (R,) = projection(rng, pooled.shape)
    grads = fresh_grads(m.params)
    grads["h"] = pooler_backward(R, cache, arrays, grads)
    f = lambda: float(np.sum(R * pooler_forward(arrays["h"], arrays, "", cfg, mask)[0]))
    assert_check(f, arrays, grads, [n for n in m.params if n.startswith("pooler.")] + ["h"])


@pytest.mark.parametrize("cfg", [tiny(), tiny(hidden_act="gelu_new"), bert_tiny(), tiny(tie_word_embeddings=False)],
                         ids=["student", "gelu_new", "plain_bert_no_extra_columns", "untied"])
def test_mlm_head(cfg):
    m = make_model(cfg, cls=MobileBertForPreTraining)
    rng = np.random.default_rng(9)
    arrays = dict(m.params)
    arrays["h"] = rng.standard_normal((N, cfg.hidden_size))
    dec = m.decoder_name
    logits, cache = mlm_head_forward(arrays["h"], arrays, dec, cfg)
    (R,) = projection(rng, logits.shape)
    grads = fresh_grads(m.params)
    grads["h"] = mlm_head_backward(R, cache, arrays, grads, dec, cfg)
    f = lambda: float(np.sum(R * mlm_head_forward(arrays["h"], arrays, dec, cfg)[0]))
    assert_check(f, arrays, grads, [n for n in m.params if n.startswith("cls.predictions")] + [dec, "h"])


@pytest.mark.parametrize("dropout_seed", [None, 4])
def test_linear_head(dropout_seed):
    m = make_model(tiny(), cls=MobileBertForPreTraining)
    rng = np.random.default_rng(10)
    arrays = dict(m.params)
    arrays["p"] = rng.standard_normal((B, m.config.hidden_size))
    new_rng = rng_factory(dropout_seed)
    fwd = lambda: linear_head_forward(arrays["p"], arrays, "cls.seq_relationship", 0.3, new_rng())
    y, cache = fwd()
    (R,) = projection(rng, y.shape)
    grads = fresh_grads(m.params)
    grads["p"] = linear_head_backward(R, cache, arrays, grads)
    assert_check(lambda: float(np.sum(R * fwd()[0])), arrays, grads,
                 ["cls.seq_relationship.weight", "cls.seq_relationship.bias", "p"])


# ---------------------------------------------------------------------------------- losses
def test_cross_entropy_mean():
    rng = np.random.default_rng(11)
    arrays = {"x": rng.standard_normal((7, 5)) * 3}
    y = check_labels(np.array([0, 4, -100, 2, 2, -100, 1]), 5, "labels")
    loss, cache = cross_entropy_forward_mean(arrays["x"], y)
    grads = {"x": cross_entropy_backward_mean(1.0, cache)}
    assert_check(lambda: cross_entropy_forward_mean(arrays["x"], y)[0], arrays, grads, ["x"])


def test_cross_entropy_all_ignored_is_zero():
    loss, cache = cross_entropy_forward_mean(np.ones((3, 4)), np.full(3, -100))
    assert loss == 0.0 and not np.any(cross_entropy_backward_mean(1.0, cache))


def test_mse():
    rng = np.random.default_rng(12)
    arrays = {"x": rng.standard_normal((6, 1))}
    target = rng.standard_normal(6)
    _, cache = mse_forward(arrays["x"], target)
    grads = {"x": mse_backward(1.0, cache, np.float64)}
    assert_check(lambda: mse_forward(arrays["x"], target)[0], arrays, grads, ["x"])


def test_check_labels_errors():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        check_labels(np.array([0, 5]), 5, "labels")
    with pytest.raises(TypeError, match="must hold integers"):
        check_labels(np.array([0.5]), 5, "labels")
    with pytest.raises(ValueError, match="shape"):
        check_labels(np.array([0, 1]), 5, "labels", (3,))
