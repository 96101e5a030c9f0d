"""Activation diagnostics: per-block statistics, non-finite checks, export-range warnings.

Dimensions: B batch, T tokens, N = B*T rows, A heads, d head width, H hidden width.

Everything here reads what a forward pass already keeps: the per-layer caches in
``model._state`` (each block's input, its pre-norm sum z, its pre-activation z, the attention
probabilities) plus the outputs a forward pass can return (hidden states, attention scores,
logits). Nothing is recomputed but a norm or an activation of a cached z, with the model's own
kernels, to give a block's output. The tensors are visited in execution order:

    embeddings   lookup (word or trigram window), sum (word + position + type), output
    layer i      bottleneck.input / bottleneck.attention (sum, output), attention.self
                 (query, key, value, scores, probs), attention.output (sum, output),
                 ffn.j.intermediate (pre-activation, output), ffn.j.output (sum, output),
                 intermediate (pre-activation, output), output (sum, output),
                 output.bottleneck (sum, output = the layer's output)
    head         pooler output, logits

``activation_stats`` gives max |x|, mean, std and the share of non-finite values of each.
``check_finite`` runs a forward pass and raises ``NonFiniteError`` naming the first tensor, in
that order, holding a NaN or an inf. Scanning the kept tensors after the pass gives the same
answer as stopping at the first one would: every tensor depends only on those before it, so the
first non-finite one is where non-finite values started (later ones may only inherit them).
``export_warnings`` applies two rules of thumb for float16 and int8 export (see there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLOAT16_MAX = 65504.0
FLOAT16_NEAR = FLOAT16_MAX / 16  # 4094: a residual add or a gamma of 16 away from overflow
INT8_OUTLIER_RATIO = 32.0  # max|x| / std above this leaves < 127/32 ~ 4 int8 levels per std


class NonFiniteError(FloatingPointError):
    """A NaN or inf where there should be none; ``where``/``block``/``tensor`` locate it."""

    def __init__(self, message, where=None, block=None, tensor=None):
        super().__init__(message)
        self.where, self.block, self.tensor = where, block, tensor


@dataclass
class ActivationStats:
    """Statistics of one tensor. ``max_abs``, ``mean`` and ``std`` are over its finite values."""

    where: str  # "embeddings", "layer 3", "head"
    block: str  # transformers' name inside it, e.g. "ffn.0.intermediate"
    tensor: str  # "sum", "pre-activation", "output", "scores", ...
    shape: tuple
    max_abs: float
    mean: float
    std: float
    nan: int
    posinf: int
    neginf: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf

    @property
    def nonfinite_fraction(self) -> float:
        return self.nonfinite / max(self.size, 1)

    @property
    def name(self) -> str:
        return f"{self.where} / {self.block} ({self.tensor})"


# ------------------------------------------------------------------------------ the tensors


def _norm_output(cache, model, eps):
    """A dense-norm sublayer's output y = Norm(z), from its cached sum z (the model's kernel)."""
    from .kernels.norms import norm_forward

    P = model.params
    y, *_ = norm_forward(cache.z, None, None, P[cache.prefix + ".LayerNorm.weight"],
                         P[cache.prefix + ".LayerNorm.bias"], eps, cache.layer_norm)
    return y


def _act_output(cache):
    from .kernels.activations import bias_act_forward

    return bias_act_forward(cache.z, None, cache.code)[0]


def _short(prefix, layer_prefix):
    return prefix[len(layer_prefix) + 1:] if prefix.startswith(layer_prefix + ".") else prefix


def activations_in_order(model, out=None):
    """Yield (where, block, tensor, array, valid) for every kept activation, in execution order.

    ``model`` must have just run ``forward`` with its caches kept (the default); ``out`` is that
    forward's output (hidden states, attention scores and logits are read from it when present).
    ``valid`` is None or a boolean array broadcasting to ``array``: the entries statistics should
    count (attention scores at masked keys, which hold ``finfo.min``, are left out).
    """
    st = model._state
    if st is None or st.embeddings is None:
        raise RuntimeError("no kept forward pass to inspect: run model.forward(...) with keep_cache=True first")
    cfg = model.config
    emb = st.embeddings
    yield "embeddings", "word_embeddings", "lookup" + (" (trigram window)" if cfg.trigram_input else ""), emb.x0, None
    yield "embeddings", "LayerNorm", "sum", emb.z, None
    hidden = getattr(out, "hidden_states", None) if out is not None else None
    if hidden is not None:
        yield "embeddings", "output", "output", hidden[0], None
    scores = getattr(out, "attention_scores", None) if out is not None else None
    for i, lc in enumerate(st.layers):
        where, lp = f"layer {i}", f"{model.base_prefix}encoder.layer.{i}"
        eps, out_eps = cfg.layer_norm_eps, cfg.output_layer_norm_eps
        if lc.bottleneck is not None:
            for c in (lc.bottleneck.input_cache, lc.bottleneck.attention_cache):
                if c is not None:
                    yield where, _short(c.prefix, lp), "sum", c.z, None
                    yield where, _short(c.prefix, lp), "output", _norm_output(c, model, eps), None
        att = lc.attention
        block = _short(att.prefix, lp)
        for name, x in (("query", att.q), ("key", att.k), ("value", att.v)):
            yield where, block, name, x, None
        valid = None if att.key_mask is None else (att.key_mask[:, None, None, :] > 0)  # (B, 1, 1, T)
        if scores is not None:
            yield where, block, "scores", scores[i], valid
        yield where, block, "probs", att.probs, None
        subs = [("norm", lc.attention_output, eps)]  # (kind, cache, eps) in execution order
        for up, down in lc.ffns:
            subs += [("act", up, None), ("norm", down, eps)]
        subs += [("act", lc.intermediate, None), ("norm", lc.output, out_eps)]
        if lc.output_bottleneck is not None:
            subs.append(("norm", lc.output_bottleneck, eps))
        for kind, c, e in subs:
            block = _short(c.prefix, lp)
            if kind == "norm":
                yield where, block, "sum", c.z, None
                yield where, block, "output", _norm_output(c, model, e), None
            else:
                yield where, block, "pre-activation", c.z, None
                yield where, block, "output", _act_output(c), None
    if out is None:
        return
    for name in ("pooler_output", "prediction_logits", "seq_relationship_logits", "logits"):
        value = getattr(out, name, None)
        if value is not None:
            yield "head", name, "output", np.asarray(value), None


def _stats(where, block, tensor, x, valid) -> ActivationStats:
    x = np.asarray(x)
    nan, pinf, ninf = int(np.isnan(x).sum()), int(np.isposinf(x).sum()), int(np.isneginf(x).sum())
    v = x if valid is None else x[np.broadcast_to(valid, x.shape)]
    v = v[np.isfinite(v)].astype(np.float64)
    if v.size == 0:
        return ActivationStats(where, block, tensor, tuple(x.shape), math.nan, math.nan, math.nan, nan, pinf, ninf)
    return ActivationStats(where, block, tensor, tuple(x.shape), float(np.abs(v).max()), float(v.mean()),
                           float(v.std()), nan, pinf, ninf)


# ------------------------------------------------------------------------------ API


def _diagnostic_forward(model, inputs):
    inputs = dict(inputs)
    inputs.setdefault("output_hidden_states", True)
    inputs.setdefault("output_attention_scores", True)
    inputs["keep_cache"] = True
    return model.forward(**inputs)


def activation_stats(model, **inputs) -> list[ActivationStats]:
    """Run ``model.forward(**inputs)`` and return the statistics of every activation, in order.

    The forward pass keeps its caches (``model.backward()`` may follow) and also returns the
    hidden states and attention scores. Statistics skip non-finite values (counted apart) and
    attention scores at masked keys.
    """
    out = _diagnostic_forward(model, inputs)
    return [_stats(*item) for item in activations_in_order(model, out)]


def first_nonfinite(model, out=None) -> ActivationStats | None:
    """The first activation of the last forward pass (caches kept) holding a NaN or inf, or None."""
    for where, block, tensor, x, _ in activations_in_order(model, out):
        if not np.isfinite(x).all():
            return _stats(where, block, tensor, x, None)
    return None


def nonfinite_parameters(model) -> dict:
    """{parameter name: number of NaN/inf entries} for every parameter that has any."""
    return {name: int(p.size - np.isfinite(p).sum()) for name, p in model.params.items() if not np.isfinite(p).all()}


def nonfinite_gradients(model) -> dict:
    """{parameter name: number of NaN/inf entries of its gradient}, for those that have any."""
    return {name: int(g.size - np.isfinite(g).sum()) for name, g in model.grads.items() if not np.isfinite(g).all()}


def describe_nonfinite(s: ActivationStats) -> str:
    return (f"{s.name}, shape {s.shape}: {s.nan} NaN, {s.posinf} +inf, {s.neginf} -inf of {s.size} values "
            "(the tensors before it were finite)")


def _parameters_note(model) -> str:
    bad = nonfinite_parameters(model)
    if not bad:
        return "every parameter is finite"
    shown = ", ".join(f"{k} ({v})" for k, v in list(bad.items())[:5])
    return f"non-finite parameters: {shown}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def check_finite(model, **inputs):
    """``model.forward(**inputs)``, then raise ``NonFiniteError`` at the first non-finite activation.

    The message names the layer, the block and the tensor (see the module notes for the order
    and why scanning after the pass finds the same tensor as stopping at the first would), and
    lists the parameters holding NaN or inf. Returns the forward pass's output when all is finite.
    """
    out = _diagnostic_forward(model, inputs)
    bad = first_nonfinite(model, out)
    if bad is not None:
        raise NonFiniteError(f"non-finite activation: {describe_nonfinite(bad)}; {_parameters_note(model)}",
                             bad.where, bad.block, bad.tensor)
    loss = getattr(out, "loss", None)
    if loss is not None and not math.isfinite(float(loss)):
        raise NonFiniteError(f"the loss is {float(loss)} although every activation is finite (check the labels); "
                             f"{_parameters_note(model)}", "head", "loss", "loss")
    return out


# ------------------------------------------------------------------------------ training checks


def check_loss(model, out) -> None:
    """Raise ``NonFiniteError`` when ``out.loss`` is NaN or inf, naming the first non-finite
    activation of the forward pass that computed it (its caches must still be kept). A step
    function calls it between forward and backward; the trainer adds the step number."""
    loss = getattr(out, "loss", None)
    if loss is None or math.isfinite(float(loss)):
        return
    where = "every activation is finite (the loss itself overflowed, or the labels are wrong)"
    bad = first_nonfinite(model, out) if model._state is not None else None
    if bad is not None:
        where = f"first non-finite activation: {describe_nonfinite(bad)}"
    raise NonFiniteError(f"loss became {float(loss)}; {where}; {_parameters_note(model)} "
                         "(lower the learning rate or enable clipping)",
                         *((bad.where, bad.block, bad.tensor) if bad is not None else ("head", "loss", "loss")))


def check_gradients(model, step: int) -> None:
    """Raise ``NonFiniteError`` when a gradient holds NaN or inf (one float64 pass over them all)."""
    from .kernels.optim import squared_norm

    if math.isfinite(squared_norm(model.store.grad)):
        return
    bad = nonfinite_gradients(model)
    if not bad:  # the squares overflowed: every gradient is finite, their norm is not
        return
    shown = ", ".join(f"{k} ({v})" for k, v in list(bad.items())[:5])
    raise NonFiniteError(f"non-finite gradients at step {step} with a finite loss: {shown}"
                         + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                         + " (an overflow in the backward pass: lower the learning rate or enable clipping)",
                         "gradients", next(iter(bad)), "gradient")


def check_parameters(model, what: str) -> None:
    """Raise ``NonFiniteError`` when a parameter holds NaN or inf (before ``what``, e.g. a save)."""
    bad = nonfinite_parameters(model)
    if bad:
        raise NonFiniteError(f"not {what}: {_parameters_note(model)}", "parameters", next(iter(bad)), "parameter")


# ------------------------------------------------------------------------------ export


def export_warnings(stats) -> list[tuple[str, ActivationStats, str]]:
    """[(level, stats, message)] for tensors that would break a float16 or int8 export.

    Rules (rules of thumb, stated so they can be argued with):

    * non-finite values: level "error".
    * float16: max|x| > 65504 overflows ("error"); max|x| > 65504 / 16 = 4094 is "near" the
      limit ("warning"): a residual add, a NoNorm gamma of 16 or the next layer's growth would
      overflow.
    * int8 (one symmetric scale per tensor, max|x| / 127): max|x| > 32 std ("warning") leaves
      a standard deviation fewer than ~4 of the 255 levels, so most values round to a handful of
      steps (the outlier problem of quantising BERT-like models). Attention probabilities are
      exempt (they are in [0, 1] by construction, and are usually kept in higher precision).
    """
    found = []
    for s in stats:
        if s.nonfinite:
            found.append(("error", s, f"{s.nan} NaN, {s.posinf} +inf, {s.neginf} -inf"))
            continue
        if not math.isfinite(s.max_abs):
            continue
        if s.max_abs > FLOAT16_MAX:
            found.append(("error", s, f"float16: max|x| = {s.max_abs:.4g} overflows (> {FLOAT16_MAX:.0f})"))
        elif s.max_abs > FLOAT16_NEAR:
            found.append(("warning", s, f"float16: max|x| = {s.max_abs:.4g} is within 16x of the limit "
                                        f"{FLOAT16_MAX:.0f}"))
        if s.tensor != "probs" and s.std > 0 and s.max_abs > INT8_OUTLIER_RATIO * s.std:
            found.append(("warning", s, f"int8: max|x| = {s.max_abs:.4g} is {s.max_abs / s.std:.0f} std "
                                        f"(> {INT8_OUTLIER_RATIO:.0f}): a per-tensor scale leaves the bulk few levels"))
    return found


def format_stats(stats, warnings=None) -> str:
    """A table of ``activation_stats`` with the warnings of ``export_warnings`` below it."""
    warnings = export_warnings(stats) if warnings is None else warnings
    flagged = {id(s): lvl for lvl, s, _ in warnings}
    lines = [f"{'where':10s} {'block':32s} {'tensor':24s} {'shape':>18s} {'max|x|':>10s} {'mean':>10s} "
             f"{'std':>10s} {'non-finite':>10s}"]
    for s in stats:
        mark = {"error": "  <- ERROR", "warning": "  <- warning"}.get(flagged.get(id(s)), "")
        lines.append(f"{s.where:10s} {s.block:32s} {s.tensor:24s} {str(s.shape):>18s} {s.max_abs:10.4g} "
                     f"{s.mean:10.3g} {s.std:10.3g} {s.nonfinite_fraction:10.2%}{mark}")
    for level, s, msg in warnings:
        lines.append(f"{level.upper()}: {s.name}: {msg}")
    return "\n".join(lines)
