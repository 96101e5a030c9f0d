"""Masked multi-head self-attention (transformers' ``attention.self``).

Dimensions: B batch, T key tokens, Tq query tokens (T unless token dropping sends only the
kept tokens' queries), A heads, d head width, I = A*d (true_hidden_size, or the kept heads'
width when a sub-network runs fewer heads), Cq / Cv the widths of the query/key input and of
the value input.

    Q = q_in Wq^T + bq                                               (B*Tq, I)
    K = k_in Wk^T + bk,  V = v_in Wv^T + bv                          (B*T, I) each
    split heads                                                      (B, A, Tq or T, d)
    r = Q K^T                                                        (B, A, Tq, T)
    s = mask(r / sqrt(d)),  P = softmax(s)                           kernels.softmax
    Pd = dropout(P) * head_scale                                     (what transformers returns)
    C = Pd V, heads concatenated                                     (B*Tq, I)

``head_scale`` (A,) is one layer's row of transformers' ``head_mask``: it multiplies each head's
probabilities after dropout (Michel et al.'s head importance is the gradient with respect to it).

Backward (inputs may be the same tensor, e.g. Q and K both read the shared bottleneck; the
caller adds their gradients):

    dPd = dC V^T,  dV = Pd^T dC,  d head_scale_a = sum(dPd_a * dropout(P)_a)
    dP = dropout'(dPd * head_scale),  dr = softmax'(dP) / sqrt(d)
    dQ = dr K,     dK = dr^T Q

Gradients can also arrive on the outputs a distillation loss reads: ``d_probs`` on Pd (the
returned attentions) and ``d_scores`` on s (the masked, scaled scores).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.softmax import attention_softmax, attention_softmax_backward
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


class AttentionCache(NamedTuple):
    prefix: str
    q_in: np.ndarray
    k_in: np.ndarray
    v_in: np.ndarray
    q: np.ndarray  # (B, A, T, d)
    k: np.ndarray
    v: np.ndarray
    probs: np.ndarray  # (B, A, Tq, T) before dropout
    dropped: np.ndarray  # after dropout (is probs when no dropout)
    drop_mask: np.ndarray | None
    key_mask: np.ndarray | None
    scale: float
    replace: bool
    head_scale: np.ndarray | None  # (A,) or None


def _split_heads(x, B, A):
    """(B*T, I) -> (B, A, T, d)."""
    return x.reshape(B, x.shape[0] // B, A, -1).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, A, T, d) -> (N, I)."""
    B, A, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B * T, A * d)


def attention_forward(q_in, k_in, v_in, key_mask, params, prefix, B, T, A, *,
                      masked_score=None, p_drop=0.0, rng=None, keep_scores=False, head_scale=None):
    """Multi-head attention. Returns (context (B*Tq, I), probs (B, A, Tq, T), scores or None, cache).

    q_in : (B*Tq, Cq); k_in : (B*T, Cq); v_in : (B*T, Cv); Tq = T except when only some tokens'
    queries run (token dropping). key_mask : (B, T) 0/1 in the compute dtype, or None.
    masked_score : None adds finfo.min to masked scores (transformers); a number replaces them.
    head_scale : (A,) multiplies each head's probabilities after dropout, or None.
    """
    if k_in.shape[0] != B * T or v_in.shape[0] != B * T or q_in.shape[0] % B:
        raise ValueError(f"attention: k_in/v_in need B*T = {B * T} rows and q_in a multiple of B = {B}, "
                         f"got {k_in.shape[0]}, {v_in.shape[0]}, {q_in.shape[0]}")
    q = _split_heads(linear_forward(q_in, params[prefix + ".query.weight"], params[prefix + ".query.bias"]), B, A)
    k = _split_heads(linear_forward(k_in, params[prefix + ".key.weight"], params[prefix + ".key.bias"]), B, A)
    v = _split_heads(linear_forward(v_in, params[prefix + ".value.weight"], params[prefix + ".value.bias"]), B, A)
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d)
    replace = masked_score is not None
    raw = q @ k.transpose(0, 1, 3, 2)  # (B, A, Tq, T)
    probs, scores = attention_softmax(raw, key_mask, scale, replace,
                                      0.0 if masked_score is None else masked_score, keep_scores)
    dropped, mask = dropout_forward(probs, p_drop, rng)
    weighted = dropped if head_scale is None else dropped * head_scale[:, None, None]  # (B, A, Tq, T)
    context = _merge_heads(weighted @ v)  # (B*Tq, I)
    cache = AttentionCache(prefix, q_in, k_in, v_in, q, k, v, probs, dropped, mask, key_mask, scale, replace,
                           head_scale)
    return context, weighted, scores, cache


def attention_backward(dcontext, cache: AttentionCache, params, grads, d_probs=None, d_scores=None,
                       d_head_scale=None):
    """Returns (dq_in, dk_in, dv_in); accumulates the query/key/value grads, and the head scale's
    into ``d_head_scale`` (A,) when the forward pass had one and an array is given.

    dcontext (B*Tq, I); d_probs, d_scores (B, A, Tq, T) or None: gradients on the returned
    attentions (after dropout and head scale) and on the masked, scaled scores.
    """
    p = cache.prefix
    B, A = cache.q.shape[:2]
    dctx = _split_heads(dcontext, B, A)  # (B, A, Tq, d)
    d_weighted = dctx @ cache.v.transpose(0, 1, 3, 2)  # (B, A, Tq, T)
    if d_probs is not None:
        d_weighted = d_weighted + d_probs
    hs = cache.head_scale
    weighted = cache.dropped if hs is None else cache.dropped * hs[:, None, None]
    dv = weighted.transpose(0, 1, 3, 2) @ dctx  # (B, A, T, d)
    if hs is None:
        d_dropped = d_weighted
    else:  # weighted = dropped * hs:  d hs_a = <d_weighted_a, dropped_a>
        if d_head_scale is not None:
            d_head_scale += np.einsum("bhij,bhij->h", d_weighted, cache.dropped)  # (A,)
        d_dropped = d_weighted * hs[:, None, None]
    dprobs = dropout_backward(d_dropped, cache.drop_mask)
    draw = attention_softmax_backward(dprobs, cache.probs, cache.key_mask, cache.scale, cache.replace)
    if d_scores is not None:
        ds = d_scores * d_scores.dtype.type(cache.scale)
        if cache.replace and cache.key_mask is not None:
            ds = ds * (cache.key_mask[:, None, None, :] > 0)  # replaced scores do not depend on r
        draw += ds
    dq = _merge_heads(draw @ cache.k)  # (B*Tq, I)
    dk = _merge_heads(draw.transpose(0, 1, 3, 2) @ cache.q)  # (B*T, I)
    dv = _merge_heads(dv)  # (B*T, I)
    out = []
    for name, dy, x in (("query", dq, cache.q_in), ("key", dk, cache.k_in), ("value", dv, cache.v_in)):
        w, b = f"{p}.{name}.weight", f"{p}.{name}.bias"
        out.append(linear_backward(dy, x, params[w], grads[w], grads[b]))
    return tuple(out)
