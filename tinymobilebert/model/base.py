"""What every model class shares: parameters, state dicts, modes, input checks, and the encoder.

Dimensions: B batch, T tokens, N = B*T, k kept tokens (token dropping), H hidden width, A heads,
L layers.

A model is a config plus a flat dict of parameters keyed by transformers' names (``self.params``,
views into ``self.store``). ``forward`` runs the blocks in order and keeps their caches;
``backward`` runs them in reverse, *accumulating* into ``self.grads`` (call ``zero_grad()``
between steps, as in PyTorch), and frees the caches. Gradients can also be sent in on the
outputs themselves (hidden states, attentions, scores, logits), which is how distillation
losses that read those outputs reach the parameters.

The encoder runs a plan (``model.plan``): the full model, a DynaBERT sub-network (``width_mult``,
``depth_mult``), token dropping (``keep_positions``), the layers up to one only
(``stop_after_layer``), each with an optional ``head_mask``, all through the same loop, forward
and backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..blocks.embeddings import embeddings_backward, embeddings_forward
from ..blocks.heads import pooler_backward, pooler_forward
from ..blocks.layer import layer_backward, layer_forward
from ..config import MobileBertConfig
from ..params import ParameterStore
from .plan import check_keep_positions, encoder_plan, slice_layer
from .shapes import encoder_shapes, initialize

# Keys a transformers state dict may hold that are not parameters here.
_BUFFER_SUFFIXES = ("embeddings.position_ids",)


@dataclass
class LoadReport:
    """What ``load_state_dict(strict=False)`` did not load."""

    missing: list = field(default_factory=list)  # parameters the state dict did not give
    unexpected: list = field(default_factory=list)  # state-dict keys this model has no use for

    def __bool__(self):
        return bool(self.missing or self.unexpected)


@dataclass
class _EncoderState:
    """Everything the encoder's backward pass needs, kept between forward and backward."""

    B: int
    T: int
    embeddings: Any
    layers: list  # one LayerCache per run of the plan
    pooler: Any
    outputs: set  # which outputs the forward pass produced (gradients may arrive on these)
    heads: Any = None  # the head classes' caches
    plan: Any = None  # the EncoderPlan that ran
    kept_rows: Any = None  # (B*k,) flat rows kept by token dropping, or None
    hidden_shapes: list = field(default_factory=list)  # shape of each hidden state (embeddings first)
    attention_shapes: list = field(default_factory=list)  # shape of each run's attentions
    head_mask: Any = None  # (L, A) as given, or None


class MobileBertPreTrainedModel:
    """Base class: parameters, modes, state dicts, the encoder forward and backward passes.

    Parameters
    ----------
    config : MobileBertConfig
    seed : int
        Seeds parameter initialisation and (through a separate stream) dropout.
    dtype : float32 (default) or float64
    """

    is_bare_encoder = False  # MobileBertModel: the encoder's names carry no prefix
    add_pooling_layer = True

    def __init__(self, config: MobileBertConfig, seed: int = 0, dtype=np.float32):
        if not isinstance(config, MobileBertConfig):
            raise TypeError(f"config must be a MobileBertConfig, got {type(config).__name__} "
                            "(use MobileBertConfig.from_dict for a transformers config dict)")
        config.validate()
        self.config = config
        self.base_prefix = self.prefix_for(config)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.store = ParameterStore(self.parameter_shapes(config), self.dtype)
        self.params = self.store.params
        self.grads = self.store.grads
        rng = np.random.default_rng(seed)
        initialize(self.params, config, rng, self.word_embeddings_name)
        self.dropout_rng = np.random.default_rng(rng.integers(2**63))
        self.training = True  # as a freshly built torch module
        self._state = None
        self._slices = {}  # (layer, heads, neurons) -> sliced (params, grads) views, see _run_tensors
        self.tokenizer = None  # saved with the model (vocab.txt) when set
        self.load_report = None  # set by from_pretrained

    # ------------------------------------------------------------------------- structure
    @classmethod
    def prefix_for(cls, config) -> str:
        """Where the encoder's names live: "mobilebert." or "bert." (by ``model_type``), "" when bare."""
        return "" if cls.is_bare_encoder else config.model_type + "."

    @classmethod
    def parameter_shapes(cls, config) -> dict:
        return encoder_shapes(config, cls.prefix_for(config), cls.add_pooling_layer)

    @property
    def word_embeddings_name(self) -> str:
        return self.base_prefix + "embeddings.word_embeddings.weight"

    def num_parameters(self) -> int:
        return self.store.num_parameters

    # ------------------------------------------------------------------------- checkpoints
    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, strict: bool = True, seed: int = 0, **config_changes):
        """Load a transformers model directory (config.json + model.safetensors [+ vocab.txt]).

        MobileBERT and BERT checkpoints of any head class load into any model class: missing
        heads are initialised (seeded by ``seed``) and listed in ``model.load_report``; see
        ``tinymobilebert.checkpoint``. Returns the model in eval mode.
        """
        from ..checkpoint import load_pretrained

        return load_pretrained(cls, path, dtype=dtype, strict=strict, seed=seed, **config_changes)

    def save_pretrained(self, path, tokenizer=None, dtype=None, compact=False) -> None:
        """Write a directory transformers loads: config.json, model.safetensors [, vocab.txt].

        ``compact=True`` keeps an extracted sub-network's fewer heads as they are (a form only
        this package reads); the default pads them back to transformers' layout, zeroed.
        """
        from ..checkpoint import save_pretrained

        save_pretrained(self, path, tokenizer=tokenizer, dtype=dtype, compact=compact)

    def extract_subnetwork(self, width_mult: float = 1.0, depth_mult: float = 1.0):
        """The DynaBERT sub-network (width_mult, depth_mult) as a standalone model of this class:
        copies of the kept layers, heads and neurons, its config rewritten (``dynabert.extract``)."""
        from ..dynabert.extract import extract_subnetwork

        return extract_subnetwork(self, width_mult, depth_mult)

    # ------------------------------------------------------------------------- modes
    def train(self, mode: bool = True):
        """Training mode: dropout on (drawn from ``self.dropout_rng``). Returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode: no dropout. Returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        self.store.zero_grad()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------------- state dicts
    def state_dict(self) -> dict:
        """{transformers name: array copy}; Linear weights are [out, in]."""
        return {name: p.copy() for name, p in self.params.items()}

    def _alias_keys(self) -> dict:
        """State-dict keys that transformers writes for tied tensors: alias -> our name."""
        if not any(n.startswith("cls.predictions.") for n in self.params):
            return {}
        aliases = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
        if self.config.tie_word_embeddings:
            aliases["cls.predictions.decoder.weight"] = self.word_embeddings_name
        return aliases

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> LoadReport:
        """Copy arrays into the parameters (cast to the model's dtype).

        Tied aliases (``cls.predictions.decoder.*``) and buffers (``position_ids``) are accepted
        and skipped. With ``strict`` a missing or unexpected name is an error listing all of
        them; otherwise they are returned in a ``LoadReport``. A wrong shape, or a value that is
        not a real-number array, is always an error. Everything is checked (and converted)
        before the first parameter changes, so a failed load leaves the model as it was.
        """
        aliases = self._alias_keys()
        report = LoadReport()
        problems, converted = [], {}
        for key, value in state_dict.items():
            if key in aliases or key.endswith(_BUFFER_SUFFIXES):
                continue
            if key not in self.params:
                report.unexpected.append(key)
                continue
            value = np.asarray(value)
            if value.shape != self.params[key].shape:
                problems.append(f"{key}: expected {self.params[key].shape}, got {value.shape}")
            elif not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                problems.append(f"{key}: expected real numbers, got dtype {value.dtype}")
            else:
                converted[key] = value.astype(self.dtype, copy=False)
        report.missing = [n for n in self.params if n not in state_dict]
        if problems:
            raise ValueError("load_state_dict: shape mismatch or bad values for " + "; ".join(problems))
        if strict and report:
            raise KeyError(f"load_state_dict: missing keys {report.missing}, unexpected keys {report.unexpected} "
                           "(pass strict=False to load the rest)")
        for key, value in converted.items():  # nothing can fail from here on
            self.params[key][...] = value
        return report

    # ------------------------------------------------------------------------- inputs
    def _check_ids(self, input_ids, token_type_ids, attention_mask):
        cfg = self.config
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.size == 0:
            raise ValueError(f"input_ids must be a non-empty 2-D array [batch, tokens], got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"input_ids must hold integers, got dtype {ids.dtype}")
        B, T = ids.shape
        if T > cfg.max_position_embeddings:
            raise ValueError(f"input_ids has {T} tokens, more than max_position_embeddings={cfg.max_position_embeddings}")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            bad = ids[(ids < 0) | (ids >= cfg.vocab_size)][0]
            raise ValueError(f"input_ids must be in [0, vocab_size={cfg.vocab_size}), found {bad}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if token_type_ids is None:
            tt = np.zeros((B, T), np.int64)
        else:
            tt = np.asarray(token_type_ids)
            if tt.shape != (B, T):
                raise ValueError(f"token_type_ids must have the shape of input_ids {(B, T)}, got {tt.shape}")
            if tt.dtype.kind not in "iu":
                raise TypeError(f"token_type_ids must hold integers, got dtype {tt.dtype}")
            if tt.min() < 0 or tt.max() >= cfg.type_vocab_size:
                raise ValueError(f"token_type_ids must be in [0, type_vocab_size={cfg.type_vocab_size}), "
                                 f"found {tt[(tt < 0) | (tt >= cfg.type_vocab_size)][0]}")
            tt = np.ascontiguousarray(tt, dtype=np.int64)
        mask = None
        if attention_mask is not None:
            m = np.asarray(attention_mask)
            if m.shape != (B, T):
                raise ValueError(f"attention_mask must have the shape of input_ids {(B, T)}, got {m.shape}")
            if m.dtype.kind not in "biuf" or not np.all((m == 0) | (m == 1)):
                raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
            mask = np.ascontiguousarray(m, dtype=np.int64)
        return ids, tt, mask

    # ------------------------------------------------------------------------- encoder
    def _check_head_mask(self, head_mask):
        """transformers' ``head_mask``: (L, A) or (A,) (every layer alike) -> (L, A) in our dtype."""
        if head_mask is None:
            return None
        L, A = self.config.num_hidden_layers, self.config.num_attention_heads
        hm = np.asarray(head_mask)
        if hm.dtype.kind not in "biuf":
            raise TypeError(f"head_mask must hold numbers, got dtype {hm.dtype}")
        if hm.shape == (A,):
            hm = np.broadcast_to(hm, (L, A))
        if hm.shape != (L, A):
            raise ValueError(f"head_mask must have shape (num_hidden_layers, num_attention_heads) = {(L, A)} "
                             f"or ({A},), got {hm.shape}")
        return np.asarray(hm, dtype=self.dtype)

    def _run_tensors(self, run):
        """(params, grads) the run reads: the whole dicts, or views sliced to its heads and neurons."""
        cfg = self.config
        if run.heads == cfg.num_attention_heads and run.neurons == cfg.intermediate_size:
            return self.params, self.grads
        key = (run.layer, run.heads, run.neurons)
        cached = self._slices.get(key)
        if cached is None:
            prefix = f"{self.base_prefix}encoder.layer.{run.layer}"
            names = {n: self.params[n] for n in self._layer_names(run.layer)}
            grads = {n: self.grads[n] for n in names}
            cached = (slice_layer(names, prefix, cfg, run.heads, run.neurons),
                      slice_layer(grads, prefix, cfg, run.heads, run.neurons))
            self._slices[key] = cached
        return cached

    def _layer_names(self, i):
        p = f"{self.base_prefix}encoder.layer.{i}."
        return [n for n in self.params if n.startswith(p)]

    def _encoder_forward(self, input_ids, token_type_ids, attention_mask, output_hidden_states,
                         output_attentions, output_attention_scores, keep_cache=True, *, head_mask=None,
                         width_mult=1.0, depth_mult=1.0, keep_positions=None, split_layer=None,
                         stop_after_layer=None):
        """Embeddings, the plan's layer runs, pooler. Returns (fields for the output, state for backward).

        Without ``keep_cache`` nothing is kept that the outputs do not need, so each layer's
        activations are freed as soon as the next layer has run (inference memory).
        """
        cfg, P, pre = self.config, self.params, self.base_prefix
        ids, tt, mask = self._check_ids(input_ids, token_type_ids, attention_mask)
        B, T = ids.shape
        plan = encoder_plan(cfg, width_mult, depth_mult, keep_positions is not None, split_layer, stop_after_layer)
        hm = self._check_head_mask(head_mask)
        rng = self.dropout_rng if self.training else None
        X, c_emb = embeddings_forward(ids, tt, mask, P, pre, cfg, rng)  # (N, H)
        key_mask = None if mask is None or mask.all() else mask.astype(self.dtype)
        kept_rows = kept_mask = None
        if keep_positions is not None:
            kept = check_keep_positions(keep_positions, B, T)  # (B, k), ascending
            kept_rows = (np.arange(B)[:, None] * T + kept).reshape(-1)  # (B*k,)
            if key_mask is not None:
                kept_mask = np.take_along_axis(key_mask, kept, axis=1)  # (B, k)
                kept_mask = None if kept_mask.all() else kept_mask
        hidden, attns, scores, caches, split_input = [X], [], [], [], None
        for run in plan.runs:
            if run.rows == "all" and X.shape[0] != B * T:  # merge: kept rows back among the dropped ones
                X = _merge_rows(split_input, X, kept_rows)
            if run.rows == "split":
                split_input = X  # (N, H): the dropped rows keep this state
            params, _ = self._run_tensors(run)
            hs = None if hm is None else hm[run.layer, :run.heads]
            X, probs, s, c = layer_forward(
                X, kept_mask if run.rows == "kept" else key_mask, params, f"{pre}encoder.layer.{run.layer}", cfg, B,
                X.shape[0] // B, rng, output_attention_scores, q_rows=kept_rows if run.rows == "split" else None,
                head_scale=hs)  # X (B*T or B*k, H)
            if keep_cache or output_hidden_states:
                hidden.append(X)
            if keep_cache or output_attentions:
                attns.append(probs)
            scores.append(s)
            if keep_cache:
                caches.append(c)
            del c, probs
        if X.shape[0] != B * T:  # a plan ending on kept rows (not one token dropping builds)
            X = _merge_rows(split_input, X, kept_rows)
        last = X.reshape(B, T, -1)  # (B, T, H)
        pooled, c_pool = pooler_forward(last, P, pre, cfg, mask) if self.add_pooling_layer else (None, None)
        fields = {"last_hidden_state": last, "pooler_output": pooled}
        if output_hidden_states:
            fields["hidden_states"] = tuple(h.reshape(B, -1, h.shape[1]) for h in hidden)
        if output_attentions:
            fields["attentions"] = tuple(attns)
        if output_attention_scores:
            fields["attention_scores"] = tuple(scores)
        state = _EncoderState(B, T, c_emb if keep_cache else None, caches, c_pool,
                              {k for k, v in fields.items() if v is not None}, plan=plan, kept_rows=kept_rows,
                              head_mask=hm)
        if keep_cache:
            state.hidden_shapes = [(B, h.shape[0] // B, h.shape[1]) for h in hidden]
            state.attention_shapes = [c.attention.probs.shape for c in caches]
        return fields, state

    def _encoder_backward(self, state: _EncoderState, d_last, d_pooled, d_hidden, d_attn, d_scores):
        """Backward through pooler, the plan's runs (in reverse) and embeddings. d_last (N, H) or
        None, d_pooled (B, H) or None, d_hidden / d_attn / d_scores lists (entries None) of
        gradients on each hidden state (rows as in the forward pass) and each run's attentions.
        Returns the head mask's gradient (L, A) when the forward pass had a head mask, else None."""
        cfg, P = self.config, self.params
        B, T, runs = state.B, state.T, state.plan.runs
        dh = np.zeros((B * T, cfg.hidden_size), self.dtype) if d_last is None else d_last
        if d_pooled is not None and state.pooler is not None:
            dh = dh + pooler_backward(d_pooled, state.pooler, P, self.grads).reshape(B * T, -1)
        d_split = None  # the gradient of the split run's input through the rows it dropped
        if runs[-1].rows != "all":  # the forward pass merged after its last run
            dh, d_split = _unmerge_rows(dh, state.kept_rows)
        if d_hidden[len(runs)] is not None:
            dh = dh + d_hidden[len(runs)]
        d_head_mask = None if state.head_mask is None else np.zeros(state.head_mask.shape, self.dtype)
        for r in reversed(range(len(runs))):
            run = runs[r]
            params, grads = self._run_tensors(run)
            dhs = None if d_head_mask is None else d_head_mask[run.layer, :run.heads]
            dh = layer_backward(dh, state.layers[r], params, grads, d_attn[r], d_scores[r], dhs)
            if run.rows == "split":
                dh += d_split  # the dropped rows' gradient, from the merge
                d_split = None
            if run.rows == "all" and r > 0 and runs[r - 1].rows != "all":  # this run's input was a merge
                dh, d_split = _unmerge_rows(dh, state.kept_rows)
            if d_hidden[r] is not None:
                dh = dh + d_hidden[r]
        embeddings_backward(dh, state.embeddings, P, self.grads, cfg)
        return d_head_mask

    # ------------------------------------------------------------------------- backward API
    def _grad_output(self, grad_outputs, key, shape):
        """A user-supplied output gradient, checked and cast, or None."""
        g = grad_outputs.get(key)
        if g is None:
            return None
        if key not in self._state.outputs:
            raise ValueError(f"backward: grad_outputs[{key!r}] given, but the forward pass did not return {key} "
                             f"(ask for it in forward)")
        g = np.asarray(g, dtype=self.dtype)
        if g.shape != tuple(shape):
            raise ValueError(f"backward: grad_outputs[{key!r}] must have shape {tuple(shape)}, got {g.shape}")
        return g

    def _grad_output_list(self, grad_outputs, key, shapes):
        """Per-tensor gradients for a tuple output (hidden states, attentions): one entry per
        tensor, each of the shape that tensor had (``shapes``), None where there is none."""
        n = len(shapes)
        gs = grad_outputs.get(key)
        if gs is None:
            return [None] * n
        if key not in self._state.outputs:
            raise ValueError(f"backward: grad_outputs[{key!r}] given, but the forward pass did not return {key} "
                             f"(pass output_{key}=True to forward)")
        if len(gs) != n:
            raise ValueError(f"backward: grad_outputs[{key!r}] must have {n} entries (None where no gradient), "
                             f"got {len(gs)}")
        out = []
        for i, (g, shape) in enumerate(zip(gs, shapes)):
            if g is None:
                out.append(None)
                continue
            g = np.asarray(g, dtype=self.dtype)
            if g.shape != tuple(shape):
                raise ValueError(f"backward: grad_outputs[{key!r}][{i}] must have shape {tuple(shape)}, got {g.shape}")
            out.append(g)
        return out

    def _start_backward(self, grad_outputs, allowed):
        if self._state is None:
            raise RuntimeError("backward: no forward pass to differentiate (call forward first; "
                               "each forward pass can be differentiated once)")
        grad_outputs = dict(grad_outputs or {})
        unknown = set(grad_outputs) - set(allowed)
        if unknown:
            raise KeyError(f"backward: unknown grad_outputs keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return grad_outputs

    def _backward_encoder_outputs(self, grad_outputs, d_last, d_pooled):
        """Add the user's gradients on encoder outputs, then run the encoder backward."""
        st, cfg = self._state, self.config
        B, T, H = st.B, st.T, cfg.hidden_size
        g_last = self._grad_output(grad_outputs, "last_hidden_state", (B, T, H))
        if g_last is not None:
            g_last = g_last.reshape(B * T, H)
            d_last = g_last.copy() if d_last is None else d_last + g_last
        g_pool = self._grad_output(grad_outputs, "pooler_output", (B, H))
        if g_pool is not None:
            d_pooled = g_pool if d_pooled is None else d_pooled + g_pool
        d_hidden = [None if g is None else g.reshape(-1, H)
                    for g in self._grad_output_list(grad_outputs, "hidden_states", st.hidden_shapes)]
        d_attn = self._grad_output_list(grad_outputs, "attentions", st.attention_shapes)
        d_scores = self._grad_output_list(grad_outputs, "attention_scores", st.attention_shapes)
        d_head_mask = self._encoder_backward(st, d_last, d_pooled, d_hidden, d_attn, d_scores)
        self._state = None
        if d_head_mask is None:
            return self.grads
        return {**self.grads, "head_mask": d_head_mask}

    ENCODER_GRAD_KEYS = ("last_hidden_state", "pooler_output", "hidden_states", "attentions", "attention_scores")


def _merge_rows(full, kept, kept_rows):
    """Token dropping's merge: ``full`` (N, H) with the rows ``kept_rows`` replaced by ``kept`` (B*k, H)."""
    merged = full.copy()
    merged[kept_rows] = kept
    return merged


def _unmerge_rows(d_merged, kept_rows):
    """Backward of ``_merge_rows``: (d kept (B*k, H), d full (N, H), zero at the kept rows)."""
    d_kept = d_merged[kept_rows]
    d_full = d_merged.copy()
    d_full[kept_rows] = 0
    return d_kept, d_full
