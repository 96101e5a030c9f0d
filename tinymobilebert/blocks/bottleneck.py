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

Token dropping's split layer runs the queries of the kept rows only (``q_rows``, Nq flat row
indices) against keys and values from every row. Then Q and the residual are those rows' part
of what they would be; what K and V read is computed on every row (only what the queries and
the residual alone need is computed on the kept rows only):

    q_in = qk[q_rows],  k_in = qk,  v_in = (as above),  residual = L on q_rows     (Nq or N, .)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .sublayers import DenseNormCache, dense_norm_backward, dense_norm_forward


class BottleneckInputCache(NamedTuple):
    mode: str  # "bottleneck_attention", "shared_kq", "raw"
    input_cache: DenseNormCache | None  # None without use_bottleneck
    attention_cache: DenseNormCache | None
    q_rows: np.ndarray | None  # (Nq,) rows whose queries run, None for all


def attention_input_mode(cfg) -> str:
    """Which tensors Q, K, V read: "bottleneck_attention", "shared_kq" or "raw"."""
    if cfg.use_bottleneck_attention:
        return "bottleneck_attention"
    if cfg.key_query_shared_bottleneck:
        return "shared_kq"
    return "raw"


def rows_of(x, rows):
    """x[rows] (a gather), or x itself when ``rows`` is None (all rows)."""
    return x if rows is None else x[rows]


def add_rows(dst, src, rows):
    """dst[rows] += src (rows are distinct), or dst += src when ``rows`` is None. Returns dst."""
    if rows is None:
        dst += src
    else:
        dst[rows] += src
    return dst


def bottleneck_input_forward(X, params, prefix, cfg, layer_norm, q_rows=None):
    """Returns ((q_in, k_in, v_in, residual), cache) for block input X (N, H).

    q_rows : (Nq,) distinct row indices whose queries run (token dropping), or None for all.
    q_in and the residual then have Nq rows, k_in and v_in N.
    """
    mode = attention_input_mode(cfg)
    if not cfg.use_bottleneck:  # plain BERT: everything reads X
        Xq = rows_of(X, q_rows)
        return (Xq, X, X, Xq), BottleneckInputCache("raw", None, None, q_rows)
    c_att = None
    if mode == "bottleneck_attention":  # K, V read L on every row
        L, c_in = dense_norm_forward(X, None, params, prefix + ".bottleneck.input", layer_norm, cfg.layer_norm_eps)
        Lq = rows_of(L, q_rows)
        return (Lq, L, L, Lq), BottleneckInputCache(mode, c_in, None, q_rows)
    Xq = rows_of(X, q_rows)
    R, c_in = dense_norm_forward(Xq, None, params, prefix + ".bottleneck.input", layer_norm, cfg.layer_norm_eps)
    if mode == "shared_kq":
        S, c_att = dense_norm_forward(X, None, params, prefix + ".bottleneck.attention", layer_norm,
                                      cfg.layer_norm_eps)
        q_in, k_in, v_in = rows_of(S, q_rows), S, X
    else:  # the IB-BERT teacher: Q, K, V read the raw block input
        q_in, k_in, v_in = Xq, X, X
    return (q_in, k_in, v_in, R), BottleneckInputCache(mode, c_in, c_att, q_rows)


def bottleneck_input_backward(dq_in, dk_in, dv_in, dresidual, cache: BottleneckInputCache, params, grads):
    """Returns dX (N, H), from the gradients of the four tensors the forward pass returned."""
    q = cache.q_rows
    if cache.input_cache is None:  # plain BERT: X fed all four
        dX = dk_in + dv_in
        add_rows(dX, dq_in, q)
        return add_rows(dX, dresidual, q)
    if cache.mode == "bottleneck_attention":
        dL = dk_in + dv_in
        add_rows(dL, dq_in, q)
        add_rows(dL, dresidual, q)
        dX, _ = dense_norm_backward(dL, cache.input_cache, params, grads)
        return dX
    dXq, _ = dense_norm_backward(dresidual, cache.input_cache, params, grads)  # (Nq, H), a fresh array
    if cache.mode == "shared_kq":
        # Q and K read the same tensor: its gradient is the sum
        dS = dq_in + dk_in if q is None else add_rows(dk_in.copy(), dq_in, q)
        dX, _ = dense_norm_backward(dS, cache.attention_cache, params, grads)
        dX += dv_in
    else:
        dX = dk_in + dv_in
        dXq += dq_in
    return add_rows(dX, dXq, q)


def bottleneck_output_forward(Y, X, params, prefix, cfg, layer_norm, rng):
    """X' = Norm(dropout(Y Wo^T + bo) + X). Y (N, I), X (N, H) -> (N, H)."""
    return dense_norm_forward(Y, X, params, prefix + ".output.bottleneck", layer_norm, cfg.layer_norm_eps,
                              cfg.hidden_dropout_prob, rng)


def bottleneck_output_backward(dout, cache: DenseNormCache, params, grads):
    """Returns (dY (N, I), dX (N, H) from the residual path)."""
    return dense_norm_backward(dout, cache, params, grads)
