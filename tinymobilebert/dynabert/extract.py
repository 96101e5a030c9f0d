"""Standalone export: a DynaBERT sub-network as an ordinary model of its own size.

Dimensions: L stored layers, L' = round(L d) kept layers, A heads, A' = max(1, round(A w)) kept
heads, d head width, I block width, M FFN width, M' = int(A'/A M) kept neurons.

``extract_subnetwork(model, w, d)`` is the encoder plan made permanent (``model.plan``): the
layers ``depth_layers(L, d)`` renumbered 0..L'-1, and in each the leading A' heads (Q/K/V rows
[:A' d], the attention output's columns [:, :A' d]) and the leading M' neurons of every FFN
(intermediate rows, output columns). Everything else (embeddings, norms, bottlenecks, pooler,
heads) is copied whole. The result is a model of the same class whose config says so:

    num_hidden_layers = L', num_attention_heads = A', intermediate_size = M',
    attention_head_size = d       (only when A' < A: the heads keep their width)

It computes exactly what ``model.forward(..., width_mult=w, depth_mult=d)`` computes (tested to
rounding in float64), and runs faster: its tensors are contiguous and it carries no unused rows.

Saving it: ``save_pretrained(path, compact=True)`` writes this compact form, which only this
package reads (transformers derives the head width from true_hidden_size / heads, so no
transformers config describes A' heads of width d). The default ``save_pretrained(path)``
writes a directory transformers loads: fewer layers and a narrower FFN are plain config
changes, and the heads are written at their full count A = I / d with the cut ones zeroed,
which computes the same function (a zero head attends uniformly to zero values and its output
columns are zero). See ``checkpoint.save_pretrained``.
"""

from __future__ import annotations

import numpy as np

from ..model.plan import encoder_plan, slice_layer


def subnetwork_config(cfg, width_mult: float = 1.0, depth_mult: float = 1.0):
    """The config of the sub-network (w, d) of ``cfg``: fewer layers, heads and neurons."""
    plan = encoder_plan(cfg, width_mult, depth_mult)
    run = plan.runs[0]
    fewer_heads = run.heads != cfg.num_attention_heads
    return cfg.replace(num_hidden_layers=len(plan.runs), num_attention_heads=run.heads, intermediate_size=run.neurons,
                       attention_head_size=cfg.head_size if fewer_heads else cfg.attention_head_size)


def extract_subnetwork(model, width_mult: float = 1.0, depth_mult: float = 1.0):
    """A new model of ``type(model)`` holding copies of the sub-network (w, d)'s tensors.

    Parameters
    ----------
    model : any model class of this package (BERT or MobileBERT layout)
    width_mult, depth_mult : float in (0, 1]
        As in ``forward`` (DynaBERT's rules, ``model.plan``).

    Returns
    -------
    The extracted model, in the source's mode (train/eval) and dtype, with its tokenizer.
    """
    cfg, pre = model.config, model.base_prefix
    plan = encoder_plan(cfg, width_mult, depth_mult)
    sub = type(model)(subnetwork_config(cfg, width_mult, depth_mult), seed=0, dtype=model.dtype)
    layer_prefix = pre + "encoder.layer."
    for j, run in enumerate(plan.runs):
        src = f"{layer_prefix}{run.layer}"
        views = slice_layer(model.params, src, cfg, run.heads, run.neurons)  # leading slices, no copies
        for name, value in views.items():
            sub.params[f"{layer_prefix}{j}{name[len(src):]}"][...] = value
    for name, value in model.params.items():
        if not name.startswith(layer_prefix):
            sub.params[name][...] = value
    sub.tokenizer = model.tokenizer
    sub.train(model.training)
    return sub


def pad_heads_for_transformers(cfg, tensors: dict, prefix: str):
    """(config, tensors) with a compact sub-network's heads back at full count, the cut ones zero.

    ``cfg`` has A' heads of width d with A' d < I (``attention_head_size`` set); transformers
    can only build I / d heads of width d. Q/K/V weights and biases get zero rows and the
    attention output zero columns up to I. Raises ValueError when I is not a multiple of d or
    A' d > I (no transformers layout computes that function).
    """
    I, d, A = cfg.true_hidden_size, cfg.head_size, cfg.num_attention_heads
    if I % d or A * d > I:
        raise ValueError(
            f"save_pretrained: this model has {A} attention heads of width {d} in a block of width {I}; "
            f"transformers derives the head width as {I} / num_attention_heads, and {I} is not a whole number "
            f"of heads of width {d} at least {A} (true_hidden_size % attention_head_size != 0 or too many heads), "
            "so no transformers directory computes this function. Save it with save_pretrained(path, compact=True) "
            "(readable by tinymobilebert's from_pretrained only)")
    out = dict(tensors)
    D = A * d
    for name, t in tensors.items():
        if not name.startswith(prefix + "encoder.layer."):
            continue
        if ".attention.self." in name:  # (D, in) or (D,) -> (I, in) or (I,), zero rows for the cut heads
            padded = np.zeros((I,) + t.shape[1:], t.dtype)
            padded[:D] = t
            out[name] = padded
        elif name.endswith(".attention.output.dense.weight"):  # (I, D) -> (I, I), zero columns
            padded = np.zeros((t.shape[0], I), t.dtype)
            padded[:, :D] = t
            out[name] = padded
    return cfg.replace(num_attention_heads=I // d, attention_head_size=None), out
