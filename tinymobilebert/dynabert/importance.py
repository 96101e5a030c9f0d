"""How much the task loss leans on each attention head and each FFN neuron (DynaBERT's rewiring scores).

Dimensions: L layers, A heads, F FFNs per layer (MobileBERT's stacked FFNs and the layer's own;
1 for BERT), M neurons per FFN, I block width.

Head importance (Michel et al. 2019, arXiv 1905.10650), accumulated over the batches of a data set:

    heads[l, a] = sum over batches |d loss / d head_mask[l, a]|     at head_mask = 1

Neuron importance, a first-order Taylor estimate of the loss change when neuron i of an FFN
(W1 (M, I), b1 (M,) in, W2 (I, M) out) is removed:

    neurons[l, f, i] = sum over batches |sum_j W1[i, j] dW1[i, j] + b1[i] db1[i]| + |sum_k W2[k, i] dW2[k, i]|

Both follow ``compute_neuron_head_importance`` in DynaBERT's ``run_glue.py``: the model in eval
mode (no dropout), the ground-truth task loss (cross-entropy, or MSE for regression), the dev set
in the original. One thing differs by default: the original never zeroes gradients inside its
loop, so each batch adds |the gradients summed over all batches so far| rather than |its own|,
which makes the scores depend on the batching. ``accumulate_gradients=False`` (the default) uses
each batch's own gradient; ``True`` reproduces the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Importance:
    heads: np.ndarray  # (L, A) float64
    neurons: np.ndarray  # (L, F, M) float64; FFN f < F-1 is the stacked ffn.{f}, f = F-1 the layer's own
    batches: int = 0
    accumulate_gradients: bool = False

    def to_arrays(self) -> dict:
        return {"heads": self.heads, "neurons": self.neurons}


def ffn_prefixes(cfg, layer_prefix: str) -> list:
    """[(intermediate prefix, output prefix)] of a layer's FFNs, in ``Importance.neurons`` order:
    the stacked ``ffn.{j}`` (MobileBERT), then the layer's own ``intermediate``/``output``."""
    p = layer_prefix + "."
    out = [(f"{p}ffn.{j}.intermediate.dense", f"{p}ffn.{j}.output.dense")
           for j in range(cfg.num_feedforward_networks - 1)]
    out.append((f"{p}intermediate.dense", f"{p}output.dense"))
    return out


def neuron_taylor_scores(params, grads, intermediate: str, output: str) -> np.ndarray:
    """|sum_j W1 dW1 + b1 db1| + |sum_k W2 dW2| per neuron of one FFN -> (M,) float64."""
    W1, b1 = params[intermediate + ".weight"], params[intermediate + ".bias"]  # (M, I), (M,)
    dW1, db1 = grads[intermediate + ".weight"], grads[intermediate + ".bias"]
    W2, dW2 = params[output + ".weight"], grads[output + ".weight"]  # (I, M)
    up = np.einsum("mi,mi->m", W1, dW1, dtype=np.float64) + b1.astype(np.float64) * db1
    down = np.einsum("im,im->m", W2, dW2, dtype=np.float64)
    return np.abs(up) + np.abs(down)  # (M,)


def compute_importance(model, batches, accumulate_gradients: bool = False) -> Importance:
    """Head and neuron importance of ``model`` over ``batches``.

    Parameters
    ----------
    model : a model with a task loss (e.g. ``MobileBertForSequenceClassification``), full size
    batches : iterable of batch dicts (``input_ids``, ``attention_mask``, ``labels``, ...)
    accumulate_gradients : bool
        False (default): each batch contributes |its own gradient|. True: gradients are never
        zeroed between batches, as in the released DynaBERT code (see the module notes).

    Returns
    -------
    Importance with ``heads`` (L, A) and ``neurons`` (L, F, M). The model is left in eval mode
    with its gradients zeroed.
    """
    cfg, pre = model.config, model.base_prefix
    L, A, F, M = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_feedforward_networks, cfg.intermediate_size
    heads = np.zeros((L, A))
    neurons = np.zeros((L, F, M))
    head_grad_sum = np.zeros((L, A))  # the head mask's gradient summed over batches (accumulate_gradients)
    head_mask = np.ones((L, A), model.dtype)
    ffns = [ffn_prefixes(cfg, f"{pre}encoder.layer.{i}") for i in range(L)]
    model.eval()
    model.zero_grad()
    n = 0
    for batch in batches:
        if not accumulate_gradients:
            model.zero_grad()
        out = model.forward(**batch, head_mask=head_mask)
        if out.loss is None:
            raise ValueError("compute_importance: the batches must hold labels (importance is the gradient of the "
                             "task loss)")
        g = model.backward()
        if accumulate_gradients:
            head_grad_sum += g["head_mask"]
            heads += np.abs(head_grad_sum)
        else:
            heads += np.abs(g["head_mask"])
        for i in range(L):
            for f, (up, down) in enumerate(ffns[i]):
                neurons[i, f] += neuron_taylor_scores(model.params, model.grads, up, down)
        n += 1
    if n == 0:
        raise ValueError("compute_importance: batches produced no batch")
    model.zero_grad()
    return Importance(heads, neurons, n, accumulate_gradients)


def plot_head_importance(heads, out_png: str, title: str | None = None) -> str:
    """A heat map of head importance (layers x heads), each layer's rank written in its cells.

    Needs matplotlib (an optional dependency). Returns ``out_png``.
    """
    from ..atomic import save_figure

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plot_head_importance needs matplotlib (pip install matplotlib)") from e
    heads = np.asarray(heads, dtype=np.float64)
    L, A = heads.shape
    scaled = heads / np.maximum(heads.max(axis=1, keepdims=True), 1e-300)  # per layer: the ranking is per layer
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + 0.6 * A), max(3.0, 1.2 + 0.4 * L)))
    im = ax.imshow(scaled, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ranks = np.argsort(np.argsort(-heads, axis=1, kind="stable"), axis=1)
    for i in range(L):
        for a in range(A):
            ax.text(a, i, str(ranks[i, a] + 1), ha="center", va="center", fontsize=8,
                    color="white" if scaled[i, a] < 0.6 else "black")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(A))
    ax.set_yticks(range(L))
    ax.set_title(title or "head importance\n(relative to the layer's largest; numbers: rank)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    try:
        save_figure(fig, out_png, dpi=110)
    finally:
        plt.close(fig)
    return out_png
