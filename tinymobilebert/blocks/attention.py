"""Masked multi-head self-attention (transformers' ``attention.self``).

Dimensions: B batch, T tokens, N = B*T rows, A heads, d head width, I = A*d (true_hidden_size),
Cq / Cv the widths of the query/key input and of the value input.

    Q = q_in Wq^T + bq,  K = k_in Wk^T + bk,  V = v_in Wv^T + bv      (N, I) each
    split heads                                                      (B, A, T, d)
    r = Q K^T                                                        (B, A, T, T)
    s = mask(r / sqrt(d)),  P = softmax(s)                           kernels.softmax
    Pd = dropout(P)                                                  (what transformers returns)
    C = Pd V, heads concatenated                                     (N, I)

Backward (inputs may be the same tensor, e.g. Q and K both read the shared bottleneck; the
caller adds their gradients):

    dPd = dC V^T,  dV = Pd^T dC,  dP = dropout'(dPd),  dr = softmax'(dP) / sqrt(d)
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
    probs: np.ndarray  # (B, A, T, T) before dropout
    dropped: np.ndarray  # after dropout (is probs when no dropout)
    drop_mask: np.ndarray | None
    key_mask: np.ndarray | None
    scale: float
    replace: bool


def _split_heads(x, B, T, A):
    """(N, I) -> (B, A, T, d)."""
    return x.reshape(B, T, A, -1).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, A, T, d) -> (N, I)."""
    B, A, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B * T, A * d)


def attention_forward(q_in, k_in, v_in, key_mask, params, prefix, B, T, A, *,
                      masked_score=None, p_drop=0.0, rng=None, keep_scores=False):
    """Multi-head attention. Returns (context (N, I), probs (B, A, T, T), scores or None, cache).

    q_in, k_in : (N, Cq); v_in : (N, Cv); key_mask : (B, T) 0/1 in the compute dtype, or None.
    masked_score : None adds finfo.min to masked scores (transformers); a number replaces them.
    """
    q = _split_heads(linear_forward(q_in, params[prefix + ".query.weight"], params[prefix + ".query.bias"]), B, T, A)
    k = _split_heads(linear_forward(k_in, params[prefix + ".key.weight"], params[prefix + ".key.bias"]), B, T, A)
    v = _split_heads(linear_forward(v_in, params[prefix + ".value.weight"], params[prefix + ".value.bias"]), B, T, A)
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d)
    replace = masked_score is not None
    raw = q @ k.transpose(0, 1, 3, 2)  # (B, A, T, T)
    probs, scores = attention_softmax(raw, key_mask, scale, replace,
                                      0.0 if masked_score is None else masked_score, keep_scores)
    dropped, mask = dropout_forward(probs, p_drop, rng)
    context = _merge_heads(dropped @ v)  # (N, I)
    cache = AttentionCache(prefix, q_in, k_in, v_in, q, k, v, probs, dropped, mask, key_mask, scale, replace)
    return context, dropped, scores, cache


def attention_backward(dcontext, cache: AttentionCache, params, grads, d_probs=None, d_scores=None):
    """Returns (dq_in, dk_in, dv_in); accumulates the query/key/value grads.

    dcontext (N, I); d_probs, d_scores (B, A, T, T) or None: gradients on the returned
    attentions (after dropout) and on the masked, scaled scores.
    """
    p = cache.prefix
    B, A, T, d = cache.q.shape
    dctx = _split_heads(dcontext, B, T, A)  # (B, A, T, d)
    d_dropped = dctx @ cache.v.transpose(0, 1, 3, 2)  # (B, A, T, T)
    if d_probs is not None:
        d_dropped = d_dropped + d_probs
    dv = cache.dropped.transpose(0, 1, 3, 2) @ dctx  # (B, A, T, d)
    dprobs = dropout_backward(d_dropped, cache.drop_mask)
    draw = attention_softmax_backward(dprobs, cache.probs, cache.key_mask, cache.scale, cache.replace)
    if d_scores is not None:
        ds = d_scores * d_scores.dtype.type(cache.scale)
        if cache.replace and cache.key_mask is not None:
            ds = ds * (cache.key_mask[:, None, None, :] > 0)  # replaced scores do not depend on r
        draw += ds
    dq = _merge_heads(draw @ cache.k)  # (N, I)
    dk = _merge_heads(draw.transpose(0, 1, 3, 2) @ cache.q)
    dv = _merge_heads(dv)
    out = []
    for name, dy, x in (("query", dq, cache.q_in), ("key", dk, cache.k_in), ("value", dv, cache.v_in)):
        w, b = f"{p}.{name}.weight", f"{p}.{name}.bias"
        out.append(linear_backward(dy, x, params[w], grads[w], grads[b]))
    return tuple(out)
