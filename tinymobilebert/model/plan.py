"""The encoder as a plan: which stored layers run, how wide, and on which rows.

Dimensions: B batch, T tokens, k kept tokens per sequence, L stored layers, A heads, d head
width, M FFN width (intermediate_size).

The encoder loop (``model.base``) runs a list of ``LayerRun``s; it has no other mode. The plain
model is one run per stored layer, every head, every neuron, every row. Each way of running
less is a different plan, not a different loop:

* **DynaBERT width** ``w``: every run keeps the first ``heads(w) = max(1, round(A w))`` heads
  and the first ``int(heads(w) / A * M)`` neurons of every FFN (for MobileBERT: each stacked
  FFN and the layer's own). This is DynaBERT's ``round_to_nearest`` (``DynaLinear`` in its
  ``modeling_bert.py``), with Python's ``round`` (halves to even) as there. Embeddings, norms,
  the inter-block width and the bottlenecks are never cut. After rewiring (``dynabert``) the
  leading heads and neurons are the most important ones.
* **DynaBERT depth** ``d``: runs for the stored layers ``floor(i / d)``, ``i < round(L d)``
  (the original ``BertEncoder``'s rule; L = 12, d = 0.75 keeps 0,1,2,4,5,6,8,9,10).
* **Token dropping** (Hou et al. 2022): from the split run on, only the kept rows are updated.
  The split run's queries are the kept rows and its keys and values every row; the runs after
  it, up to the last, read and write the kept rows only; before the last run the kept rows are
  put back in their positions, the dropped rows carrying their state from before the split.
* **Stopping early** (``stop_after_layer`` l): only the runs of stored layers 0 .. l, the rest of
  the plan cut off; the heads then read layer l's output. Progressive knowledge transfer uses it
  (``distill.steps``): stage l's loss reads layers 0 .. l only, so the layers above would run,
  and be differentiated, for nothing. Not combined with DynaBERT depth (which stored layer would
  "l" be?) nor with token dropping (its last run, on every token, would be cut off).

Width is applied through parameter *views* (``slice_layer``): a run at width w reads the leading
rows or columns of the stored tensors in place, so nothing is copied per call, and gradients
accumulate into the matching part of the full gradient buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROWS = ("all", "split", "kept")


@dataclass(frozen=True)
class LayerRun:
    """One executed layer.

    layer : which stored layer's parameters run (``encoder.layer.{layer}``)
    heads : how many leading attention heads run
    neurons : how many leading neurons of every FFN run
    rows : "all" (every row in and out), "split" (every row in, the kept rows' queries run, kept
        rows out) or "kept" (kept rows in and out)
    """

    layer: int
    heads: int
    neurons: int
    rows: str = "all"


@dataclass(frozen=True)
class EncoderPlan:
    runs: tuple  # of LayerRun, in execution order
    width_mult: float = 1.0
    depth_mult: float = 1.0
    stop_after_layer: int | None = None  # the last stored layer run, when the plan stops early

    @property
    def layers(self) -> list:
        """The stored layers that run, in order."""
        return [r.layer for r in self.runs]

    @property
    def drops_tokens(self) -> bool:
        return any(r.rows != "all" for r in self.runs)


def _check_mult(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in (0, 1], got {value!r}")
    value = float(value)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def subnetwork_heads(num_heads: int, width_mult: float) -> int:
    """Heads kept at width ``w``: max(1, round(A w)) (Python's round, as DynaBERT)."""
    return max(1, round(num_heads * _check_mult("width_mult", width_mult)))


def subnetwork_neurons(num_heads: int, intermediate_size: int, width_mult: float) -> int:
    """FFN neurons kept at width ``w``: int(heads(w) / A * M), the same fraction as the heads."""
    return max(1, int(subnetwork_heads(num_heads, width_mult) / num_heads * intermediate_size))


def depth_layers(num_layers: int, depth_mult: float) -> list:
    """Stored layers kept at depth ``d``: [floor(i / d) for i < round(L d)] (DynaBERT's rule)."""
    d = _check_mult("depth_mult", depth_mult)
    n = round(num_layers * d)
    if n < 1:
        raise ValueError(f"depth_mult={depth_mult} keeps no layer of {num_layers} (round(L * d) = 0)")
    return [math.floor(i / d) for i in range(n)]


def default_split_layer(num_runs: int) -> int:
    """Token dropping's split run: L/2 - 1 (layer 5 of BERT-base's 12), as the original."""
    return max(num_runs // 2 - 1, 0)


def check_stop_after_layer(stop_after_layer, num_layers: int, depth_mult=1.0, token_dropping=False) -> int | None:
    """``stop_after_layer`` validated: None, or an integer in [0, L - 1] (see the module notes)."""
    if stop_after_layer is None:
        return None
    s = stop_after_layer
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < num_layers:
        raise ValueError(f"stop_after_layer must be None or an integer in [0, {num_layers - 1}] (the last stored "
                         f"layer to run), got {stop_after_layer!r}")
    if depth_mult != 1.0:
        raise ValueError(f"stop_after_layer does not combine with depth_mult < 1 (got depth_mult={depth_mult}): "
                         "give one or the other")
    if token_dropping:
        raise ValueError("stop_after_layer does not combine with token dropping (keep_positions): the last layer, "
                         "which runs on every token, would be cut off")
    return int(s)


def encoder_plan(cfg, width_mult=1.0, depth_mult=1.0, token_dropping=False, split_layer=None,
                 stop_after_layer=None) -> EncoderPlan:
    """The runs for a sub-network (width, depth) with or without token dropping, or stopping early.

    ``split_layer`` counts executed layers (with ``depth_mult`` 1 it is the stored layer index);
    it must leave at least the last layer after it: 0 <= split_layer <= n - 2.
    ``stop_after_layer`` (0 <= l <= L - 1) keeps the runs of stored layers 0 .. l only.
    """
    A, M = cfg.num_attention_heads, cfg.intermediate_size
    heads, neurons = subnetwork_heads(A, width_mult), subnetwork_neurons(A, M, width_mult)
    layers = depth_layers(cfg.num_hidden_layers, depth_mult)
    stop = check_stop_after_layer(stop_after_layer, cfg.num_hidden_layers, float(depth_mult), token_dropping)
    if stop is not None:
        layers = layers[:stop + 1]  # depth 1: the stored layers 0 .. stop
    n = len(layers)
    rows = ["all"] * n
    if token_dropping:
        if n < 2:
            raise ValueError("token dropping needs at least 2 executed layers (the last one runs on every token)")
        s = default_split_layer(n) if split_layer is None else split_layer
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= n - 2:
            raise ValueError(f"split_layer must be an integer in [0, {n - 2}] (the layers after it up to the "
                             f"last run on the kept tokens), got {split_layer!r}")
        rows[s] = "split"
        rows[s + 1:n - 1] = ["kept"] * (n - 2 - s)
    elif split_layer is not None:
        raise ValueError("split_layer is given but no tokens are dropped (give keep_positions)")
    runs = tuple(LayerRun(i, heads, neurons, r) for i, r in zip(layers, rows))
    return EncoderPlan(runs, float(width_mult), float(depth_mult), stop)


def check_keep_positions(keep_positions, B: int, T: int) -> np.ndarray:
    """Validate token dropping's kept positions; returns them sorted per row, (B, k) int64.

    Any order is accepted; the kept rows then run in positional order (ascending), which is
    what makes the merge a plain scatter and the outputs independent of the order given.
    """
    idx = np.asarray(keep_positions)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"keep_positions must hold integer positions, got dtype {idx.dtype}")
    if idx.ndim != 2 or idx.shape[0] != B:
        raise ValueError(f"keep_positions must have shape (batch={B}, k), got {idx.shape}")
    k = idx.shape[1]
    if not 1 <= k <= T:
        raise ValueError(f"keep_positions must keep between 1 and T={T} tokens per sequence, got k={k}")
    if idx.min() < 0 or idx.max() >= T:
        bad = idx[(idx < 0) | (idx >= T)][0]
        raise ValueError(f"keep_positions must be in [0, T={T}), found {bad}")
    idx = np.sort(idx.astype(np.int64), axis=1)
    dup = np.flatnonzero((idx[:, 1:] == idx[:, :-1]).any(axis=1))
    if dup.size:
        raise ValueError(f"keep_positions has a position twice in row {dup[0]}: {idx[dup[0]].tolist()}")
    return idx


def slice_layer(tensors: dict, prefix: str, cfg, heads: int, neurons: int) -> dict:
    """The views of one layer's tensors that a run of ``heads`` heads and ``neurons`` neurons reads.

    ``tensors`` maps names to arrays (parameters or their gradients); the result maps the same
    names of the layer ``prefix`` ("...encoder.layer.3") to leading slices (views, no copies):

        attention.self.{query,key,value}.weight / .bias     rows [:heads * d]
        attention.output.dense.weight                       columns [:, :heads * d]
        [ffn.j.]intermediate.dense.weight / .bias           rows [:neurons]
        [ffn.j.]output.dense.weight                         columns [:, :neurons]

    and every other tensor of the layer whole.
    """
    width = heads * cfg.head_size
    p = prefix + "."
    ffn_outputs = {f"{p}output.dense.weight"} | {f"{p}ffn.{j}.output.dense.weight"
                                                  for j in range(cfg.num_feedforward_networks - 1)}
    out = {}
    for name, t in tensors.items():
        if not name.startswith(p):
            continue
        if name.startswith(p + "attention.self."):
            out[name] = t[:width]
        elif name == p + "attention.output.dense.weight":
            out[name] = t[:, :width]
        elif name.endswith("intermediate.dense.weight") or name.endswith("intermediate.dense.bias"):
            out[name] = t[:neurons]
        elif name in ffn_outputs:
            out[name] = t[:, :neurons]
        else:
            out[name] = t
    return out
