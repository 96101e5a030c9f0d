"""Parameter names (transformers' state-dict keys), shapes and initialisation.

Dimensions: V vocabulary, E embedding width, H hidden width, I block width (true_hidden_size),
D = A*d the heads' width (all_head_size; I unless a sub-network keeps fewer heads of the same
width d), M FFN width (intermediate_size), P positions, L labels. Linear weights are [out, in].

The names and shapes are exactly transformers' for every layout it can run. The one layout it
cannot run, IB-BERT (bottleneck without either attention flag), gets Q/K weights of shape
[I, H], since Q and K read the raw block input (transformers would build [I, I] and fail).
"""

from __future__ import annotations

import numpy as np

from ..config import MobileBertConfig


def encoder_shapes(cfg: MobileBertConfig, prefix: str = "", add_pooling_layer: bool = True) -> dict:
    """Name -> shape for the embeddings, the layers and (optionally) the pooler."""
    V, E, H, I, M = cfg.vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.true_hidden_size, cfg.intermediate_size
    D = cfg.all_head_size
    e = prefix + "embeddings."
    s = {
        e + "word_embeddings.weight": (V, E),
        e + "position_embeddings.weight": (cfg.max_position_embeddings, H),
        e + "token_type_embeddings.weight": (cfg.type_vocab_size, H),
    }
    if cfg.uses_embedding_transformation:
        s[e + "embedding_transformation.weight"] = (H, 3 * E if cfg.trigram_input else E)
        s[e + "embedding_transformation.bias"] = (H,)
    s[e + "LayerNorm.weight"] = (H,)
    s[e + "LayerNorm.bias"] = (H,)

    def dense_norm(p, n_out, n_in):
        s.update({p + ".dense.weight": (n_out, n_in), p + ".dense.bias": (n_out,),
                  p + ".LayerNorm.weight": (n_out,), p + ".LayerNorm.bias": (n_out,)})

    for i in range(cfg.num_hidden_layers):
        p = f"{prefix}encoder.layer.{i}."
        a = p + "attention."
        s.update({a + "self.query.weight": (D, cfg.attention_input_size), a + "self.query.bias": (D,),
                  a + "self.key.weight": (D, cfg.attention_input_size), a + "self.key.bias": (D,),
                  a + "self.value.weight": (D, cfg.value_input_size), a + "self.value.bias": (D,)})
        dense_norm(a + "output", I, D)
        s.update({p + "intermediate.dense.weight": (M, I), p + "intermediate.dense.bias": (M,)})
        dense_norm(p + "output", I, M)
        if cfg.use_bottleneck:
            dense_norm(p + "output.bottleneck", H, I)
            dense_norm(p + "bottleneck.input", I, H)
            if cfg.key_query_shared_bottleneck:  # built as in transformers, even when TINY's flag wins
                dense_norm(p + "bottleneck.attention", I, H)
        for j in range(cfg.num_feedforward_networks - 1):
            f = f"{p}ffn.{j}."
            s.update({f + "intermediate.dense.weight": (M, I), f + "intermediate.dense.bias": (M,)})
            dense_norm(f + "output", I, M)
    if add_pooling_layer and cfg.classifier_activation:
        s[prefix + "pooler.dense.weight"] = (H, H)
        s[prefix + "pooler.dense.bias"] = (H,)
    return s


def mlm_head_shapes(cfg: MobileBertConfig) -> dict:
    """Names and shapes of ``cls.predictions`` (the tied decoder weight is not a separate tensor)."""
    H, E, V = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size
    s = {"cls.predictions.transform.dense.weight": (H, H), "cls.predictions.transform.dense.bias": (H,),
         "cls.predictions.transform.LayerNorm.weight": (H,), "cls.predictions.transform.LayerNorm.bias": (H,)}
    if H > E:
        s["cls.predictions.dense.weight"] = (H - E, V)
    if not cfg.tie_word_embeddings:
        s["cls.predictions.decoder.weight"] = (V, E)
    s["cls.predictions.bias"] = (V,)
    return s


def initialize(params: dict, cfg: MobileBertConfig, rng: np.random.Generator, word_embeddings_name: str) -> None:
    """transformers' ``_init_weights``: weights ~ N(0, initializer_range), biases 0, norms (1, 0),
    the padding row of the word embedding 0. Writes into the arrays in place."""
    std = cfg.initializer_range
    for name, p in params.items():
        if name.endswith("LayerNorm.weight"):
            p[...] = 1
        elif name.endswith("bias") or name.endswith("LayerNorm.bias"):
            p[...] = 0
        else:
            p[...] = rng.normal(0.0, std, size=p.shape)
    if cfg.pad_token_id is not None:
        params[word_embeddings_name][cfg.pad_token_id] = 0
