"""Finite-difference gradient checks, with a per-tensor report.

For each checked entry x_i of a tensor, the central difference

    n_i = (f(x + h e_i) - f(x - h e_i)) / 2h

is compared with the analytic gradient a_i. Per tensor the report gives the largest absolute
difference, the worst index, and the relative error

    rel = max_i |a_i - n_i| / max_i max(|a_i|, |n_i|)

(the error measured against the tensor's own gradient scale, so entries that are zero up to
rounding do not dominate). A tensor passes when

    max_i |a_i - n_i| <= tol * scale + noise,      noise = 4 eps max|f| / h

where ``noise`` is the rounding error of the difference quotient itself, computed from the
objective values the check evaluated (about 1e-10 here; when the objective is a sum of many
terms, ``f`` may report the sum of their magnitudes, which bounds its rounding better). It only matters for tensors whose true
gradient is zero, such as the attention key bias (softmax cancels it): no finite difference can
resolve those better than its own rounding. Run in float64: in float32 everything is noise.

Which entries are checked. A tensor's gradient is often mostly zero (an embedding table outside
the looked-up rows, positions past T); entries drawn uniformly would then all be zeros, which
any backward pass, even one that forgot the tensor, gets "right". So the sample is drawn from the
entries whose *analytic* gradient is non-zero, plus a quarter from the zero ones (a backward pass
that leaves out part of a tensor shows up there as numeric != 0), plus one entry of every row in
``rows`` (``gradcheck`` passes every looked-up embedding row: each must get a gradient). A tensor
whose analytic gradient is zero everywhere, or a listed row without any gradient, *fails*,
unless it is named in ``allow_zero`` (a tensor whose true gradient is zero).

``gradcheck(model, inputs, ...)`` checks a model's ``backward`` against its ``forward``; the
dropout generator is rewound before every forward pass, so training-mode checks see the same
masks. ``check_arrays`` is the same machinery for any function of named arrays (used to check
the blocks one at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TensorCheck:
    name: str
    shape: tuple
    checked: int  # entries compared
    max_abs_error: float
    rel_error: float
    worst_index: tuple
    analytic_at_worst: float
    numeric_at_worst: float
    scale: float  # max |gradient| over the checked entries
    noise: float  # rounding level of the difference quotients
    all_zero: bool = False  # the analytic gradient is exactly zero everywhere (and not allowed to be)
    rows_without_gradient: tuple = ()  # rows that were looked up but got no analytic gradient

    def ok(self, tol: float) -> bool:
        if self.all_zero or self.rows_without_gradient:
            return False
        return self.max_abs_error <= tol * self.scale + self.noise

    @property
    def zero_gradient(self) -> bool:
        """True when the gradient is below what finite differences resolve (e.g. the key bias)."""
        return self.scale <= 10 * self.noise


@dataclass
class GradcheckReport:
    checks: list = field(default_factory=list)
    tol: float = 1e-6

    def ok(self, tol: float | None = None) -> bool:
        t = self.tol if tol is None else tol
        return all(c.ok(t) for c in self.checks)

    @property
    def worst(self) -> TensorCheck:
        """The tensor with the largest relative error among those with a resolvable gradient."""
        return max((c for c in self.checks if not c.zero_gradient), key=lambda c: c.rel_error)

    def failures(self, tol: float | None = None) -> list:
        t = self.tol if tol is None else tol
        return [c for c in self.checks if not c.ok(t)]

    def __str__(self):
        lines = [f"{'':7} {'tensor':60} {'shape':>16} {'n':>5} {'max abs err':>12} {'rel err':>10} "
                 f"{'noise':>9}  worst index"]
        for c in self.checks:
            flag = "OK" if c.ok(self.tol) else "NOT OK"
            why = "  ALL-ZERO GRADIENT" if c.all_zero else (
                f"  NO GRADIENT IN ROWS {list(c.rows_without_gradient)}" if c.rows_without_gradient else "")
            lines.append(f"{flag:7} {c.name:60} {str(c.shape):>16} {c.checked:5d} {c.max_abs_error:12.3e} "
                         f"{c.rel_error:10.3e} {c.noise:9.1e}  {c.worst_index}{why}")
        return "\n".join(lines)


def _sample_indices(analytic, max_entries, rng, rows=None):
    """Flat indices to check: one per row of ``rows``, then non-zero entries of ``analytic`` and
    a quarter zero ones (see the module notes). Returns (sorted indices, rows without gradient)."""
    a = analytic.reshape(analytic.shape[0], -1) if analytic.ndim > 1 else analytic.reshape(-1, 1)
    flat = analytic.reshape(-1)
    chosen, empty_rows = set(), []
    for r in (np.unique(rows) if rows is not None else ()):
        nz = np.flatnonzero(a[r])
        if nz.size == 0:
            empty_rows.append(int(r))
            chosen.add(int(r) * a.shape[1])  # checked anyway: the numeric gradient shows what was lost
        else:
            chosen.add(int(r) * a.shape[1] + int(rng.choice(nz)))
    nonzero = np.setdiff1d(np.flatnonzero(flat), list(chosen))
    zero = np.setdiff1d(np.flatnonzero(flat == 0), list(chosen))
    budget = max_entries  # on top of the rows
    n_zero = min(zero.size, budget // 4) if nonzero.size else min(zero.size, budget)
    n_nonzero = min(nonzero.size, budget - n_zero)
    n_zero = min(zero.size, budget - n_nonzero)  # fewer non-zero entries than the budget: more zeros
    for pool, n in ((nonzero, n_nonzero), (zero, n_zero)):
        if n:
            chosen.update(int(i) for i in rng.choice(pool, size=n, replace=False))
    return np.array(sorted(chosen), dtype=np.int64), tuple(empty_rows)


def check_arrays(f, arrays: dict, analytic: dict, *, names=None, max_entries=24, h=1e-5, rng=None,
                 tol=1e-6, rows=None, allow_zero=()) -> GradcheckReport:
    """Compare ``analytic[name]`` with central differences of the scalar ``f()``.

    Parameters
    ----------
    f : callable () -> float, or () -> (float, magnitude)
        Recomputes the objective from the current contents of ``arrays`` (perturbed in place);
        ``magnitude`` (e.g. the sum of the absolute values of the terms summed) sets the noise.
    arrays, analytic : dict name -> ndarray (float64)
    names : which names to check (default: all of ``analytic``)
    max_entries : entries sampled per tensor (all of them for smaller tensors), plus one per row
        in ``rows``
    h : the finite-difference step
    rows : dict name -> row indices (of the first axis) that must each get a checked entry and a
        non-zero gradient (the looked-up rows of an embedding table)
    allow_zero : names whose gradient may be zero everywhere (otherwise that is a failure)
    """
    rng = np.random.default_rng(0) if rng is None else rng
    report = GradcheckReport(tol=tol)
    for name in (names if names is not None else list(analytic)):
        x = arrays[name]
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 arrays; {name} is {x.dtype}")
        a_all = np.asarray(analytic[name])
        if a_all.shape != x.shape:
            raise ValueError(f"analytic[{name!r}] has shape {a_all.shape}, the array {x.shape}")
        flat_idx, empty_rows = _sample_indices(a_all, max_entries, rng, (rows or {}).get(name))
        idx = [np.unravel_index(i, x.shape) for i in flat_idx]
        a = np.empty(len(idx))
        n = np.empty(len(idx))
        fmax = 0.0
        for k, i in enumerate(idx):
            old = x[i]
            x[i] = old + h
            fp, mp = _value_and_magnitude(f())
            x[i] = old - h
            fm, mm = _value_and_magnitude(f())
            x[i] = old
            n[k] = (fp - fm) / (2 * h)
            a[k] = a_all[i]
            fmax = max(fmax, mp, mm)
        err = np.abs(a - n)
        scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
        w = int(err.argmax()) if len(err) else 0
        max_err = float(err.max(initial=0.0))
        report.checks.append(TensorCheck(
            name, tuple(x.shape), len(idx), max_err, max_err / scale if scale > 0 else 0.0,
            tuple(int(j) for j in idx[w]) if idx else (), float(a[w]) if len(a) else 0.0,
            float(n[w]) if len(n) else 0.0, float(scale), 4 * np.finfo(np.float64).eps * fmax / h,
            all_zero=not np.any(a_all) and name not in allow_zero, rows_without_gradient=empty_rows))
    return report


def _value_and_magnitude(r):
    return (float(r[0]), float(r[1])) if isinstance(r, tuple) else (float(r), abs(float(r)))


def objective(out, grad_outputs=None, include_loss=True) -> tuple[float, float]:
    """(out.loss (if included) + sum_k <grad_outputs[k], out.k>, the sum of the terms' magnitudes):
    the scalar ``backward`` differentiates, and the scale of its rounding error."""
    total = float(out.loss) if include_loss and getattr(out, "loss", None) is not None else 0.0
    magnitude = abs(total)
    for key, g in (grad_outputs or {}).items():
        value = out[key]
        pairs = zip(g, value) if isinstance(g, (list, tuple)) else [(g, value)]
        for gi, vi in pairs:
            if gi is not None:
                terms = np.asarray(gi) * vi
                total += float(np.sum(terms))
                magnitude += float(np.sum(np.abs(terms)))
    return total, magnitude


def looked_up_rows(model, inputs: dict) -> dict:
    """{embedding table name: rows the batch looks up at real (unmasked) tokens}: the word ids
    (but ``pad_token_id``, which gets no gradient from lookups), positions 0..T-1 and the token
    types. Each of these rows reaches the loss through a real token, so each must get a gradient."""
    ids = np.asarray(inputs["input_ids"])
    mask = inputs.get("attention_mask")
    real = np.ones(ids.shape, bool) if mask is None else np.asarray(mask) > 0
    types = inputs.get("token_type_ids")
    types = np.zeros(ids.shape, np.int64) if types is None else np.asarray(types)
    p = model.base_prefix + "embeddings."
    words = np.unique(ids[real])
    if model.config.pad_token_id is not None:
        words = words[words != model.config.pad_token_id]
    return {p + "word_embeddings.weight": words, p + "position_embeddings.weight": np.flatnonzero(real.any(axis=0)),
            p + "token_type_embeddings.weight": np.unique(types[real])}


def gradcheck(model, inputs: dict, grad_outputs=None, include_loss=True, *, names=None, max_entries=24,
              h=1e-5, seed=0, tol=1e-6, allow_zero=()) -> GradcheckReport:
    """Check ``model.backward`` against finite differences of ``model.forward(**inputs)``.

    The model must be float64. Every parameter tensor is checked (``names`` to restrict),
    ``max_entries`` entries each, drawn where the gradient is non-zero, plus every looked-up
    embedding row (``looked_up_rows``); a tensor with no gradient at all fails unless named in
    ``allow_zero``. The head mask is checked too when ``inputs`` has one (give it as a float64
    (L, A) array: it is perturbed in place). Returns a ``GradcheckReport``; ``report.ok()`` is
    True when every tensor's relative error is at most ``tol``.
    """
    if model.dtype != np.float64:
        raise TypeError(f"gradcheck needs a float64 model (build it with dtype=np.float64), got {model.dtype}")
    rng_state = model.dropout_rng.bit_generator.state

    def run(keep_cache):
        model.dropout_rng.bit_generator.state = rng_state
        return model.forward(**inputs, keep_cache=keep_cache)

    model.zero_grad()
    run(True)
    analytic = {k: v.copy() for k, v in model.backward(grad_outputs, include_loss=include_loss).items()}
    model.zero_grad()
    arrays = dict(model.params)
    if "head_mask" in analytic:  # checked like a parameter: forward reads the float64 array in place
        arrays["head_mask"] = inputs["head_mask"]
    return check_arrays(lambda: objective(run(False), grad_outputs, include_loss), arrays, analytic,
                        names=names, max_entries=max_entries, h=h, rng=np.random.default_rng(seed), tol=tol,
                        rows=looked_up_rows(model, inputs), allow_zero=allow_zero)


def perturb_parameters(model, rng, scale=0.1) -> None:
    """Give every parameter non-trivial values for a gradient check.

    A freshly initialised model has gamma = 1 and beta = bias = 0, which hides backward passes
    that forget them, and weights so small (std 0.02) that attention is nearly uniform and its
    gradients vanish below finite-difference noise. Here: norms' gammas 1 + N(0, scale), biases
    and betas N(0, scale), dense weights N(0, 1/fan_in) (unit-scale activations, peaked
    attention), embedding tables N(0, 1/2).
    """
    for name, p in model.params.items():
        if name.endswith("LayerNorm.weight"):
            p[...] = 1.0 + rng.normal(0.0, scale, size=p.shape)
        elif name.endswith("bias"):
            p[...] = rng.normal(0.0, scale, size=p.shape)
        elif "embeddings." in name and "transformation" not in name:
            p[...] = rng.normal(0.0, 0.5, size=p.shape)
        else:
            fan_in = p.shape[1] if name != "cls.predictions.dense.weight" else p.shape[0]
            p[...] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=p.shape)
