"""MobileBERT's embeddings: factorised word embedding, trigram input, position and type.

Dimensions: B batch, T tokens, N = B*T, V vocabulary, E embedding width, H hidden width.

    e  = W_word[ids]                                  (B, T, E)
    x0 = concat(e_next, e, e_prev)    if trigram      (B, T, 3E)   kernels.embedding
    h  = x0 W_t^T + b_t               if trigram or E != H  (embedding_transformation)
    h += W_pos[t] + W_type[type_ids]                  (N, H)
    y  = dropout(Norm(h))                             (N, H)

Names (under ``{prefix}embeddings.``): word_embeddings, position_embeddings,
token_type_embeddings, embedding_transformation (only when used), LayerNorm.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.embedding import (add_position_type, add_position_type_backward, embed, embed_backward,
                                 trigram_embed, trigram_embed_backward)
from ..kernels.norms import norm_backward, norm_forward
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


class EmbeddingsCache(NamedTuple):
    prefix: str
    input_ids: np.ndarray  # (B, T)
    token_type_ids: np.ndarray  # (B, T)
    keep: np.ndarray | None  # (B, T) padding-aware trigram window, or None
    x0: np.ndarray  # (N, 3E) or (N, E): input of the transformation
    z: np.ndarray  # (N, H) input of the norm
    mean: np.ndarray
    rstd: np.ndarray
    drop_mask: np.ndarray | None
    layer_norm: bool


def embeddings_forward(input_ids, token_type_ids, attention_mask, params, prefix, cfg, rng=None):
    """Token ids (B, T) -> embedding output (N, H). ``prefix`` is "" or "mobilebert."."""
    p = prefix + "embeddings."
    B, T = input_ids.shape
    table = params[p + "word_embeddings.weight"]
    keep = attention_mask if (cfg.trigram_padding_aware and attention_mask is not None) else None
    if cfg.trigram_input:
        x0 = trigram_embed(input_ids, table, keep).reshape(B * T, -1)  # (N, 3E)
    else:
        x0 = embed(input_ids, table).reshape(B * T, -1)  # (N, E)
    if cfg.uses_embedding_transformation:
        h = linear_forward(x0, params[p + "embedding_transformation.weight"],
                           params[p + "embedding_transformation.bias"])  # (N, H)
    else:
        h = x0.copy()
    add_position_type(h.reshape(B, T, -1), params[p + "position_embeddings.weight"],
                      params[p + "token_type_embeddings.weight"], token_type_ids)
    ln = cfg.normalization_type == "layer_norm"
    y, z, mean, rstd = norm_forward(h, None, None, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"],
                                    cfg.embedding_layer_norm_eps, ln)
    y, mask = dropout_forward(y, cfg.hidden_dropout_prob, rng)
    return y, EmbeddingsCache(prefix, input_ids, token_type_ids, keep, x0, z, mean, rstd, mask, ln)


def embeddings_backward(dy, cache: EmbeddingsCache, params, grads, cfg):
    """Accumulates the embedding grads from dy (N, H). Nothing flows further back."""
    p = cache.prefix + "embeddings."
    B, T = cache.input_ids.shape
    dy = dropout_backward(dy, cache.drop_mask)
    dz, dgamma, dbeta, _ = norm_backward(dy, cache.z, params[p + "LayerNorm.weight"], cache.mean, cache.rstd,
                                         cache.layer_norm)
    grads[p + "LayerNorm.weight"] += dgamma
    grads[p + "LayerNorm.bias"] += dbeta
    add_position_type_backward(dz.reshape(B, T, -1), cache.token_type_ids,
                               grads[p + "position_embeddings.weight"], grads[p + "token_type_embeddings.weight"])
    if cfg.uses_embedding_transformation:
        dx0 = linear_backward(dz, cache.x0, params[p + "embedding_transformation.weight"],
                              grads[p + "embedding_transformation.weight"], grads[p + "embedding_transformation.bias"])
    else:
        dx0 = dz
    skip = -1 if cfg.pad_token_id is None else cfg.pad_token_id  # nn.Embedding(padding_idx=...)
    dtable = grads[p + "word_embeddings.weight"]
    if cfg.trigram_input:
        trigram_embed_backward(dx0.reshape(B, T, -1), cache.input_ids, cache.keep, dtable, skip)
    else:
        embed_backward(dx0, cache.input_ids.reshape(-1), dtable, skip)
