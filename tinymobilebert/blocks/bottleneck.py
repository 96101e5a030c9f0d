"""The bottleneck around a MobileBERT block: into the block's width I, and back out to H.

Dimensions: N rows, H inter-block width (hidden_size), I intra-block width (true_hidden_size).

Input side (transformers' ``bottleneck``), from the block input X (N, H):

    L = Norm(X Wi^T + bi)                              (N, I)  residual of the attention output

and what the attention reads, by config (section 3 of the paper; spec section 2):

    use_bottleneck_attention (TINY)      Q, K, V <- L
    key_query_shared_bottleneck          Q, K <- S = Norm(X Wa^T + ba) (N, I);  V <- X
    neither (the IB-BERT teacher)        Q, K, V <- X     (I > H: an *inverted* bottleneck)

Output side (``output.bottleneck``), from the block's last FFN output Y (N, I):

    X' = Norm(dropout(Y Wo^T + bo) + X)                (N, H)

Without ``use_bottleneck`` (plain BERT) neither side exists: Q, K, V and the residual are X.
"""

from __future__ import annotations

from typing import NamedTuple

from .sublayers import DenseNormCache, dense_norm_backward, dense_norm_forward


class BottleneckInputCache(NamedTuple):
    mode: str  # "bottleneck_attention", "shared_kq", "raw"
    input_cache: DenseNormCache
    attention_cache: DenseNormCache | None


def attention_input_mode(cfg) -> str:
    """Which tensors Q, K, V read: "bottleneck_attention", "shared_kq" or "raw"."""
    if cfg.use_bottleneck_attention:
        return "bottleneck_attention"
    if cfg.key_query_shared_bottleneck:
        return "shared_kq"
    return "raw"


def bottleneck_input_forward(X, params, prefix, cfg, layer_norm):
    """Returns ((q_in, k_in, v_in, residual), cache) for block input X (N, H)."""
    mode = attention_input_mode(cfg)
    L, c_in = dense_norm_forward(X, None, params, prefix + ".bottleneck.input", layer_norm, cfg.layer_norm_eps)
    c_att = None
    if mode == "bottleneck_attention":
        q_in = k_in = v_in = L
    elif mode == "shared_kq":
        S, c_att = dense_norm_forward(X, None, params, prefix + ".bottleneck.attention", layer_norm,
                                      cfg.layer_norm_eps)
        q_in = k_in = S
        v_in = X
    else:
        q_in = k_in = v_in = X
    return (q_in, k_in, v_in, L), BottleneckInputCache(mode, c_in, c_att)


def bottleneck_input_backward(dq_in, dk_in, dv_in, dresidual, cache: BottleneckInputCache, params, grads):
    """Returns dX (N, H), from the gradients of the four tensors the forward pass returned."""
    if cache.mode == "bottleneck_attention":
        dL = dresidual + dq_in
        dL += dk_in
        dL += dv_in
        dX, _ = dense_norm_backward(dL, cache.input_cache, params, grads)
        return dX
    dX, _ = dense_norm_backward(dresidual, cache.input_cache, params, grads)
    if cache.mode == "shared_kq":
        dS = dq_in + dk_in  # Q and K read the same tensor: its gradient is the sum
        dX_att, _ = dense_norm_backward(dS, cache.attention_cache, params, grads)
        dX += dX_att
        dX += dv_in
        return dX
    dX += dq_in
    dX += dk_in
    dX += dv_in
    return dX


def bottleneck_output_forward(Y, X, params, prefix, cfg, layer_norm, rng):
    """X' = Norm(dropout(Y Wo^T + bo) + X). Y (N, I), X (N, H) -> (N, H)."""
    return dense_norm_forward(Y, X, params, prefix + ".output.bottleneck", layer_norm, cfg.layer_norm_eps,
                              cfg.hidden_dropout_prob, rng)


def bottleneck_output_backward(dout, cache: DenseNormCache, params, grads):
    """Returns (dY (N, I), dX (N, H) from the residual path)."""
    return dense_norm_backward(dout, cache, params, grads)
