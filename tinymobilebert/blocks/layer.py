"""One transformer block: MobileBERT's bottleneck block, IB-BERT's, or plain BERT's.

Dimensions: B batch, T tokens, N = B*T, H inter-block width, I intra-block width (I = H without
bottleneck), A heads, F stacked FFNs, M FFN width (intermediate_size).

    (Q, K, V inputs), R = bottleneck_input(X)                  blocks.bottleneck   (R: N, I)
    C  = attention(Q, K, V)                                    blocks.attention    (N, I)
    A0 = Norm(dropout(C Wo^T + bo) + R)                        attention.output    (N, I)
    A_{j+1} = Norm(act(A_j W1^T + b1) W2^T + b2 + A_j)         ffn.j, j < F-1 (stacked FFNs)
    Z  = act(A W^T + b)                                        intermediate        (N, M)
    Y  = Norm(dropout(Z Wd^T + bd) + A)                        output              (N, I)
    X' = Norm(dropout(Y Wb^T + bb) + X)                        output.bottleneck   (N, H)

Without a bottleneck R = X, Q = K = V = X and the block ends at Y (standard post-LN BERT, with
dropout before each residual add). With one, the attention output and the FFN outputs have no
dropout, as in transformers and the original code.

What a layer sees is chosen by its caller (``model.plan``), never by copying this code: a
sub-network (DynaBERT) hands it parameter views sliced to the kept heads and neurons, and token
dropping's split layer hands it ``q_rows``, the rows whose queries run; every tensor after the
attention then has those Nq rows, keys and values keep all N, and the output residual is X[q_rows].
"""

from __future__ import annotations

from typing import NamedTuple

from ..kernels.activations import act_code
from .attention import AttentionCache, attention_backward, attention_forward
from .bottleneck import (BottleneckInputCache, add_rows, bottleneck_input_backward, bottleneck_input_forward,
                         bottleneck_output_backward, bottleneck_output_forward, rows_of)
from .sublayers import (DenseActCache, DenseNormCache, dense_act_backward, dense_act_forward,
                        dense_norm_backward, dense_norm_forward)


class LayerCache(NamedTuple):
    bottleneck: BottleneckInputCache
    attention: AttentionCache
    attention_output: DenseNormCache
    ffns: list  # [(DenseActCache, DenseNormCache)] for the stacked FFNs
    intermediate: DenseActCache
    output: DenseNormCache
    output_bottleneck: DenseNormCache | None


def layer_forward(X, key_mask, params, prefix, cfg, B, T, rng=None, keep_scores=False, *, q_rows=None,
                  head_scale=None):
    """One block. X (N, H) -> (X' (Nq, H), attentions (B, A, Tq, T), scores or None, cache).

    ``prefix`` is e.g. "mobilebert.encoder.layer.3"; ``rng`` None means eval (no dropout).
    ``q_rows`` (Nq,) = (B*Tq,) rows whose queries run (None: all, Nq = N); ``head_scale`` (A,)
    multiplies each head's attention probabilities (a row of transformers' ``head_mask``). The
    head count is read from the query weight's rows, so sliced parameters run fewer heads.
    """
    ln = cfg.normalization_type == "layer_norm"
    eps = cfg.layer_norm_eps
    code = act_code(cfg.hidden_act)
    hidden_drop = cfg.hidden_dropout_prob
    heads = params[prefix + ".attention.self.query.weight"].shape[0] // cfg.head_size
    (q_in, k_in, v_in, R), c_bott = bottleneck_input_forward(X, params, prefix, cfg, ln, q_rows)
    C, probs, scores, c_att = attention_forward(
        q_in, k_in, v_in, key_mask, params, prefix + ".attention.self", B, T, heads,
        masked_score=cfg.masked_attention_score, p_drop=cfg.attention_probs_dropout_prob, rng=rng,
        keep_scores=keep_scores, head_scale=head_scale)
    A, c_ao = dense_norm_forward(C, R, params, prefix + ".attention.output", ln, eps,
                                 0.0 if cfg.use_bottleneck else hidden_drop, rng)
    c_ffns = []
    for j in range(cfg.num_feedforward_networks - 1):
        Zj, c_up = dense_act_forward(A, params, f"{prefix}.ffn.{j}.intermediate", code)
        A, c_down = dense_norm_forward(Zj, A, params, f"{prefix}.ffn.{j}.output", ln, eps)
        c_ffns.append((c_up, c_down))
    Z, c_int = dense_act_forward(A, params, prefix + ".intermediate", code)
    Y, c_out = dense_norm_forward(Z, A, params, prefix + ".output", ln, cfg.output_layer_norm_eps,
                                  0.0 if cfg.use_bottleneck else hidden_drop, rng)
    c_ob = None
    if cfg.use_bottleneck:
        Y, c_ob = bottleneck_output_forward(Y, rows_of(X, q_rows), params, prefix, cfg, ln, rng)
    return Y, probs, scores, LayerCache(c_bott, c_att, c_ao, c_ffns, c_int, c_out, c_ob)


def layer_backward(dout, cache: LayerCache, params, grads, d_probs=None, d_scores=None, d_head_scale=None):
    """Returns dX (N, H) from dout (Nq, H); accumulates every parameter gradient of the block, and
    the head scale's into ``d_head_scale`` (A,) when given."""
    dX_res = None
    if cache.output_bottleneck is not None:
        dout, dX_res = bottleneck_output_backward(dout, cache.output_bottleneck, params, grads)
    # the residual gradients returned by dense_norm_backward are fresh arrays: add into them
    dZ, dA = dense_norm_backward(dout, cache.output, params, grads)
    dA += dense_act_backward(dZ, cache.intermediate, params, grads)
    for c_up, c_down in reversed(cache.ffns):
        dZj, dA = dense_norm_backward(dA, c_down, params, grads)
        dA += dense_act_backward(dZj, c_up, params, grads)
    dC, dR = dense_norm_backward(dA, cache.attention_output, params, grads)
    dq, dk, dv = attention_backward(dC, cache.attention, params, grads, d_probs, d_scores, d_head_scale)
    dX = bottleneck_input_backward(dq, dk, dv, dR, cache.bottleneck, params, grads)
    if dX_res is not None:
        add_rows(dX, dX_res, cache.bottleneck.q_rows)
    return dX
