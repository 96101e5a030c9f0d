"""Network rewiring: put every layer's most important heads and neurons first.

Dimensions: L layers, A heads, d head width, D = A d, F FFNs per layer, M neurons per FFN,
I block width, C the input width of Q/K/V.

A width-w sub-network runs the *leading* heads and neurons (``model.plan``), so DynaBERT sorts
them by importance once, before training (``reorder_neuron_head`` in its ``run_glue.py``). For
layer l with head order ``h`` (most important first) and, per FFN, neuron order ``n``:

    attention.self.{query,key,value}.weight (D, C), .bias (D,)   rows in head blocks, h
    attention.output.dense.weight (I, D)                         columns in head blocks, h
    [ffn.j.]intermediate.dense.weight (M, I), .bias (M,)         rows, n
    [ffn.j.]output.dense.weight (I, M)                           columns, n

Heads are independent given their rows of Q, K, V and their columns of the output projection, and
neurons given their row of W1, b1 and their column of W2, so the permuted model computes the same
function at full width (tested to rounding in float64). Only per-head and per-neuron tensors move:
the attention output's bias and norm, MobileBERT's bottlenecks (the key-query-shared one included)
and TINY's bottleneck attention input are shared by all heads and stay as they are.

Ties are broken by position (a stable sort), so rewiring is deterministic; the original's
``torch.sort`` leaves tie order unspecified.
"""

from __future__ import annotations

import numpy as np

from .importance import ffn_prefixes


def importance_order(scores) -> np.ndarray:
    """Indices sorting ``scores`` (..., K) most important first, ties by position."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=-1, kind="stable")


def _check(name, value, shape):
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"rewire: {name} must have shape {shape}, got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"rewire: {name} holds non-finite values")
    return value


def rewire(model, head_importance=None, neuron_importance=None) -> dict:
    """Permute ``model``'s heads and FFN neurons in place, most important first.

    Parameters
    ----------
    model : any model class (BERT or MobileBERT layout)
    head_importance : (L, A) array, or None to leave heads in place
    neuron_importance : (L, F, M) array (``Importance.neurons``), or None to leave neurons

    Returns
    -------
    {"heads": (L, A) int, "neurons": (L, F, M) int}: the orders applied (new position k holds
    old head / neuron ``order[..., k]``); absent keys were not permuted.
    """
    cfg, P, pre = model.config, model.params, model.base_prefix
    L, A, F, M, d = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_feedforward_networks,
                     cfg.intermediate_size, cfg.head_size)
    orders = {}
    if head_importance is not None:
        orders["heads"] = importance_order(_check("head_importance", head_importance, (L, A)))
    if neuron_importance is not None:
        orders["neurons"] = importance_order(_check("neuron_importance", neuron_importance, (L, F, M)))
    for i in range(L):
        p = f"{pre}encoder.layer.{i}."
        if "heads" in orders:
            rows = (orders["heads"][i][:, None] * d + np.arange(d)).reshape(-1)  # (D,) head blocks in new order
            for name in ("query", "key", "value"):
                for kind in ("weight", "bias"):
                    t = P[f"{p}attention.self.{name}.{kind}"]
                    t[...] = t[rows]  # (D, C) / (D,)
            t = P[p + "attention.output.dense.weight"]
            t[...] = t[:, rows]  # (I, D)
        if "neurons" in orders:
            for f, (up, down) in enumerate(ffn_prefixes(cfg, p[:-1])):
                n = orders["neurons"][i, f]
                for kind in ("weight", "bias"):
                    t = P[f"{up}.{kind}"]
                    t[...] = t[n]  # (M, I) / (M,)
                t = P[down + ".weight"]
                t[...] = t[:, n]  # (I, M)
    return orders
