"""Heads on top of the encoder: pooler, masked-LM, next-sentence and sequence classification.

Dimensions: B batch, N rows, H hidden width, E embedding width, V vocabulary, L labels.

Pooler (``{prefix}pooler.dense``):  p = tanh(f Wp^T + bp)  if classifier_activation, else p = f,
    f = h[:, 0] (classifier_pooling "cls", transformers), or the mean of h over real tokens
    ("mean": f = sum_t m_t h_t / sum_t m_t with m the attention mask)          (B, H)
MLM head (``cls.predictions``; section 2 of the spec):
    t = LayerNorm(act(h Wt^T + bt))      a true LayerNorm, eps = layer_norm_eps     (N, H)
    logits = t[:, :E] W_word^T + t[:, E:] W_extra + bias                           (N, V)
    W_word is the tied input embedding (V, E); W_extra = cls.predictions.dense.weight (H-E, V)
NSP head (``cls.seq_relationship``):  p Ws^T + bs                                   (B, 2)
Classifier (``classifier``):          dropout(p) Wc^T + bc                          (B, L)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.activations import act_backward, act_code, bias_act_forward
from ..kernels.blas import gemm_accumulate
from ..kernels.norms import norm_backward, norm_forward
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward
from .sublayers import dense_act_backward, dense_act_forward

_TANH = act_code("tanh")


# ---------------------------------------------------------------------------------- pooler
class PoolerCache(NamedTuple):
    name: str | None  # "{prefix}pooler.dense" or None (no dense layer)
    first: np.ndarray  # (B, H) what the dense layer reads
    z: np.ndarray | None
    weights: np.ndarray | None  # (B, T) token weights of mean pooling, None for [CLS] pooling
    T: int


def pooler_forward(h, params, prefix, cfg, attention_mask=None):
    """h (B, T, H), attention_mask (B, T) or None -> pooled (B, H)."""
    B, T, _ = h.shape
    weights = None
    if cfg.classifier_pooling == "mean":
        m = np.ones((B, T), h.dtype) if attention_mask is None else attention_mask.astype(h.dtype)
        weights = m / np.maximum(m.sum(axis=1, keepdims=True), 1)  # (B, T)
        first = np.einsum("bt,bth->bh", weights, h)  # (B, H)
    else:
        first = np.ascontiguousarray(h[:, 0])  # (B, H)
    if not cfg.classifier_activation:
        return first, PoolerCache(None, first, None, weights, T)
    name = prefix + "pooler.dense"
    pooled, z = bias_act_forward(linear_forward(first, params[name + ".weight"]), params[name + ".bias"], _TANH)
    return pooled, PoolerCache(name, first, z, weights, T)


def pooler_backward(dpooled, cache: PoolerCache, params, grads):
    """Returns dh (B, T, H), nonzero at the pooled positions."""
    dfirst = dpooled
    if cache.name is not None:
        dz, db = act_backward(dpooled, cache.z, _TANH)
        grads[cache.name + ".bias"] += db
        dfirst = linear_backward(dz, cache.first, params[cache.name + ".weight"], grads[cache.name + ".weight"])
    B, H = dfirst.shape
    if cache.weights is not None:
        return cache.weights[:, :, None] * dfirst[:, None, :]  # f = sum_t w_t h_t
    dh = np.zeros((B, cache.T, H), dfirst.dtype)
    dh[:, 0] = dfirst
    return dh


# ---------------------------------------------------------------------------------- MLM head
class MLMCache(NamedTuple):
    transform: object  # DenseActCache
    a: np.ndarray  # (N, H) activation output, input of the LayerNorm
    t: np.ndarray  # (N, H) transformed hidden states
    mean: np.ndarray
    rstd: np.ndarray


def mlm_head_forward(h, params, word_embeddings_name, cfg):
    """h (N, H) -> logits (N, V)."""
    E = cfg.embedding_size
    a, c_tr = dense_act_forward(h, params, "cls.predictions.transform", act_code(cfg.hidden_act))
    t, _, mean, rstd = norm_forward(a, None, None, params["cls.predictions.transform.LayerNorm.weight"],
                                    params["cls.predictions.transform.LayerNorm.bias"], cfg.layer_norm_eps, True)
    # The bias first, then both products accumulate onto it (BLAS beta = 1): one pass over the
    # (N, V) logits fewer than adding the bias afterwards (~4% of a small-size inference pass).
    logits = np.empty((t.shape[0], params["cls.predictions.bias"].shape[0]), t.dtype)
    logits[...] = params["cls.predictions.bias"]
    gemm_accumulate(t[:, :E], params[word_embeddings_name].T, logits)  # += tied rows (E, V)
    if cfg.hidden_size > E:
        gemm_accumulate(t[:, E:], params["cls.predictions.dense.weight"], logits)  # += extra columns (H-E, V)
    return logits, MLMCache(c_tr, a, t, mean, rstd)


def mlm_head_backward(dlogits, cache: MLMCache, params, grads, word_embeddings_name, cfg):
    """Returns dh (N, H); accumulates the head's grads and the tied embedding's."""
    E = cfg.embedding_size
    t = cache.t
    grads["cls.predictions.bias"] += dlogits.sum(axis=0)
    dt = np.zeros_like(t)
    gemm_accumulate(dlogits, params[word_embeddings_name], dt[:, :E])  # (N, E)
    gemm_accumulate(dlogits.T, t[:, :E], grads[word_embeddings_name])  # (V, E)
    if cfg.hidden_size > E:
        W_extra = params["cls.predictions.dense.weight"]
        gemm_accumulate(dlogits, W_extra.T, dt[:, E:])  # (N, H-E)
        gemm_accumulate(t[:, E:].T, dlogits, grads["cls.predictions.dense.weight"])  # (H-E, V)
    da, dgamma, dbeta, _ = norm_backward(dt, cache.a, params["cls.predictions.transform.LayerNorm.weight"],
                                         cache.mean, cache.rstd, True)
    grads["cls.predictions.transform.LayerNorm.weight"] += dgamma
    grads["cls.predictions.transform.LayerNorm.bias"] += dbeta
    return dense_act_backward(da, cache.transform, params, grads)


# ---------------------------------------------------------------------------------- small heads
class LinearHeadCache(NamedTuple):
    name: str
    x: np.ndarray
    drop_mask: np.ndarray | None


def linear_head_forward(x, params, name, p_drop=0.0, rng=None):
    """dropout(x) W^T + b. x (B, H) -> (B, L). ``name`` e.g. "cls.seq_relationship"."""
    xd, mask = dropout_forward(x, p_drop, rng)
    return linear_forward(xd, params[name + ".weight"], params[name + ".bias"]), LinearHeadCache(name, xd, mask)


def linear_head_backward(dy, cache: LinearHeadCache, params, grads):
    """Returns dx (B, H)."""
    n = cache.name
    dxd = linear_backward(dy, cache.x, params[n + ".weight"], grads[n + ".weight"], grads[n + ".bias"])
    return dropout_backward(dxd, cache.drop_mask)
