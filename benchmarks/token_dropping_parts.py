"""Parts of benchmarks/token_dropping.py: a profiler for the parts of a training step, and the report.

Dimensions: R layer runs of the encoder.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict

import numpy as np

from tinymobilebert.atomic import write_text_atomic
from tinymobilebert.model import base, models
from tinymobilebert.model.plan import encoder_plan

# the functions a training step calls, by module, and the part of the step each belongs to
_PATCHED = {
    base: {"embeddings_forward": "embeddings", "embeddings_backward": "embeddings", "pooler_forward": "pooler + NSP",
           "pooler_backward": "pooler + NSP", "_merge_rows": "split/merge copies", "_unmerge_rows": "split/merge copies"},
    models: {"mlm_head_forward": "MLM head + loss", "mlm_head_backward": "MLM head + loss",
             "cross_entropy_forward_mean": "MLM head + loss", "cross_entropy_backward_mean": "MLM head + loss",
             "cross_entropy_per_row": "MLM head + loss", "_scatter_rows": "MLM head + loss",
             "linear_head_forward": "pooler + NSP", "linear_head_backward": "pooler + NSP"},
}
LAYER_PARTS = ("layers before the split", "split layer", "middle layers", "last layer")
ORDER = LAYER_PARTS + ("embeddings", "MLM head + loss", "pooler + NSP", "optimizer", "selection + importance",
                       "split/merge copies", "other (Python, zero_grad, checks)")


def _now():
    return time.process_time(), time.perf_counter()


class StepProfiler:
    """CPU (process) and wall seconds of each part of a training step, plain or with token dropping.

    Used as a context manager (it patches the functions in ``_PATCHED`` and the layer calls in
    the model's module, and restores them on exit); ``begin(kind, ...)`` / ``end()`` bracket one
    step. Layer runs are labelled by their place in the token-dropping plan (before the split,
    the split layer, the middle layers, the last), for plain steps too: the plain step's share
    of "split layer" + "middle layers" is the share dropping can shrink.
    """

    def __init__(self, model):
        plan = encoder_plan(model.config, token_dropping=True)
        self.labels = []
        for j, run in enumerate(plan.runs):
            last = j == len(plan.runs) - 1
            self.labels.append("last layer" if last else {"all": "layers before the split", "split": "split layer",
                                                           "kept": "middle layers"}[run.rows])
        self.steps = defaultdict(list)  # kind -> [(cpu, wall, {part: cpu})]
        self._saved = []

    def __enter__(self):
        for module, names in _PATCHED.items():
            for name, part in names.items():
                self._patch(module, name, lambda *a, _part=part, **k: _part)
        R = len(self.labels)
        self._patch(base, "layer_forward", lambda *a, **k: self.labels[self._fwd()])
        self._patch(base, "layer_backward", lambda *a, **k: self.labels[R - 1 - self._bwd()])
        return self

    def __exit__(self, *exc):
        for module, name, fn in reversed(self._saved):
            setattr(module, name, fn)
        self._saved = []

    def _patch(self, module, name, part_of):
        fn = getattr(module, name)
        self._saved.append((module, name, fn))

        def timed(*args, **kwargs):
            part = part_of(*args, **kwargs)
            t = self.start()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop(part, t)

        setattr(module, name, timed)

    def _fwd(self):
        self._n_fwd += 1
        return self._n_fwd - 1

    def _bwd(self):
        self._n_bwd += 1
        return self._n_bwd - 1

    def start(self):
        return _now()

    def stop(self, part, t0):
        c, w = _now()
        self._parts[part][0] += c - t0[0]
        self._parts[part][1] += w - t0[1]

    def begin(self, kind, *_):
        self._kind, self._n_fwd, self._n_bwd = kind, 0, 0
        self._parts = defaultdict(lambda: [0.0, 0.0])
        self._t0 = _now()

    def end(self):
        c, w = _now()
        cpu, wall = c - self._t0[0], w - self._t0[1]
        parts = {p: v[0] for p, v in self._parts.items()}
        parts["other (Python, zero_grad, checks)"] = cpu - sum(parts.values())
        self.steps[self._kind].append((cpu, wall, parts))

    def summary(self) -> dict:
        out = {}
        for kind, rows in self.steps.items():
            cpu = [r[0] for r in rows]
            out[kind] = {"cpu_median_s": statistics.median(cpu), "wall_median_s": statistics.median([r[1] for r in rows]),
                         "cpu_samples": cpu, "parts_cpu_mean_s": {p: float(np.mean([r[2].get(p, 0.0) for r in rows]))
                                                                  for p in ORDER}}
        p, d = out["plain"], out["dropping"]
        out["ratio_cpu"] = d["cpu_median_s"] / p["cpu_median_s"]
        out["ratio_wall"] = d["wall_median_s"] / p["wall_median_s"]
        total = sum(p["parts_cpu_mean_s"].values())
        out["plain_shares"] = {k: v / total for k, v in p["parts_cpu_mean_s"].items()}
        out["shrinkable_share"] = out["plain_shares"]["split layer"] + out["plain_shares"]["middle layers"]
        return out


# ------------------------------------------------------------------------------ FLOPs
def step_flops(cfg, B, T, k=None, mlm_fraction=0.15) -> dict:
    """Training-step FLOPs (3x the forward's matrix products, ``tinymobilebert.costs``'s
    convention) by the parts of ``StepProfiler``, plain (k None) or keeping k of T tokens from
    the default split on. At the split layer the kept rows' queries, residual and FFNs run on k
    rows, what K and V read on all T, the scores on k x T."""
    from tinymobilebert.costs import layer_macs_per_token

    E, H, I, V, L = cfg.embedding_size, cfg.hidden_size, cfg.true_hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    full = T * sum(layer_macs_per_token(cfg, T).values())  # per sequence
    out = {"embeddings": T * ((3 * E if cfg.trigram_input else E) * H if cfg.uses_embedding_transformation else 0),
           "MLM head + loss": mlm_fraction * T * (H * H + H * V)}
    split = max(L // 2 - 1, 0)
    for j in range(L):
        part = "last layer" if j == L - 1 else ("layers before the split" if j < split else
                                                ("split layer" if j == split else "middle layers"))
        if k is None or j < split or j == L - 1:
            macs = full
        elif j > split:
            macs = k * sum(layer_macs_per_token(cfg, k).values())
        else:
            p = layer_macs_per_token(cfg, T)
            every = p["value"] + p["query+key"] / 2  # K and V read every row
            every += p.get("bottleneck.attention", 0) + (p.get("bottleneck.input", 0) if cfg.use_bottleneck_attention
                                                         else 0)
            macs = T * every + k * (sum(p.values()) - every - p["scores+context"]) + k * 2 * T * I
        out[part] = out.get(part, 0.0) + macs
    return {name: 3 * 2 * B * v for name, v in out.items()}


def _paper_sizes():
    from tinymobilebert.config import bert_base, mobilebert

    return [("BERT-base (token dropping's paper)", bert_base(), 512), ("MobileBERT (released)", mobilebert(), 128)]


# ------------------------------------------------------------------------------ the report
def time_to(evals, target, clock="cpu_s"):
    """Training seconds at which a held-out curve first reaches ``target`` (linear between
    evaluations), or None if it never does."""
    prev = None
    for e in evals:
        if e["mlm_loss"] <= target:
            if prev is None:
                return e[clock]
            f = (prev["mlm_loss"] - target) / (prev["mlm_loss"] - e["mlm_loss"])
            return prev[clock] + f * (e[clock] - prev[clock])
        prev = e
    return None


def summarize_pair(plain, drop) -> dict:
    target = plain["evals"][-1]["mlm_loss"]
    t_plain, t_drop = time_to(plain["evals"], target), time_to(drop["evals"], target)
    return {"target": target, "plain_cpu_s": t_plain, "dropping_cpu_s": t_drop,
            "saving": None if t_drop is None else 1 - t_drop / t_plain,
            "plain_steps": plain["steps"], "dropping_steps": drop["steps"],
            "step_ratio": drop["step_cpu_median_s"] / plain["step_cpu_median_s"],
            "loss_at_plain_steps": next((e["mlm_loss"] for e in drop["evals"] if e["step"] >= plain["steps"]), None)}


def savings_by_length(plain, drop, every: int) -> dict:
    """{step h: saving} as if the plain run had stopped at every multiple h of ``every`` steps: the
    target is the plain run's held-out loss at h, and both runs' first CPU seconds to reach it
    (``time_to``; the plain run's curve up to h) give the saving. The dropping run trained until
    the plain run's *final* loss, so it covers every earlier target."""
    out = {}
    for e in plain["evals"]:
        if e["step"] == 0 or e["step"] % every:
            continue
        t_plain = time_to([x for x in plain["evals"] if x["step"] <= e["step"]], e["mlm_loss"])
        t_drop = time_to(drop["evals"], e["mlm_loss"])
        out[e["step"]] = None if t_drop is None else 1 - t_drop / t_plain
    return out


def loss_gap_by_window(plain, drop, every: int, key: str = "mlm_loss") -> dict:
    """{window end h: [dropping run's held-out ``key`` - plain run's loss]} over the steps in
    (h - every, h] where both runs evaluated. ``key``: "mlm_loss" (the dropping run evaluated
    plain, as its saved model is used) or "dropping_mlm_loss" (evaluated with dropping, as it
    trains)."""
    p = {e["step"]: e["mlm_loss"] for e in plain["evals"]}
    out = defaultdict(list)
    for e in drop["evals"]:
        s = e["step"]
        if s > 0 and s in p and key in e:
            out[-(-s // every) * every].append(e[key] - p[s])
    return dict(out)


def _pairs(loss):
    runs = {(r["size"], r["model"], r["seed"], r["keep"] is not None): r for r in loss["runs"]}
    for (size, model, seed, dropped), r in sorted(runs.items()):
        if not dropped and (size, model, seed, True) in runs:
            yield size, model, seed, r, runs[(size, model, seed, True)]


LENGTH_STEP = 600  # the run lengths of the saving-by-length table: multiples of this many steps


def _horizons(groups, every):
    """Every multiple of ``every`` up to the longest plain run among ``groups``' pairs."""
    longest = max(r["plain_steps"] for rows in groups.values() for _, r in rows)
    return list(range(every, longest + 1, every))


def _mean_sd(xs, fmt):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    sd_fmt = fmt.replace("+", "")  # a spread has no sign
    return fmt.format(np.mean(xs)) + (f" ± {sd_fmt.format(np.std(xs, ddof=1))}" if len(xs) > 1 else "")


def render(saved: dict, out_dir: str) -> str:
    """Write token_dropping.md (+ PNGs) into ``out_dir`` from the saved results; return the Markdown."""
    lines = ["# Token dropping vs plain pretraining: measured", "",
             "Written by `python benchmarks/token_dropping.py` (see its docstring for the protocol). Times are "
             "**process CPU seconds** (`time.process_time`), wall-clock beside them where shown.", ""]
    step = saved.get("step")
    if step:
        m = step["machine"]
        lines += ["## (a) Training step: dropping at keep 0.5, default split, over plain", "",
                  f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, **{m['threads']} thread(s)**, numpy "
                  f"{m['numpy']}; load average at the end {tuple(round(x, 2) for x in m['loadavg'])}. Plain and dropping "
                  "steps alternate in one process; medians over the repeats.", "",
                  "| model | size | params | layers (split) | plain ms | dropping ms | ratio CPU | ratio wall | "
                  "split + middle layers' share of the plain step | all layers' share |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in step["runs"]:
            sh = r["plain_shares"]
            layers = sum(sh[p] for p in LAYER_PARTS)
            lines.append(f"| {r['model']} | {r['size']} | {r['parameters'] / 1e6:.2f}M | {r['layers']} "
                         f"({max(r['layers'] // 2 - 1, 0)}) | {r['plain']['cpu_median_s'] * 1e3:.1f} | "
                         f"{r['dropping']['cpu_median_s'] * 1e3:.1f} | **{r['ratio_cpu']:.3f}** | {r['ratio_wall']:.3f} | "
                         f"{r['shrinkable_share']:.1%} | {layers:.1%} |")
        lines += ["", "The same shares counted in FLOPs (matrix products only, `tinymobilebert.costs`; the CPU "
                  "ratio above against the FLOP ratio):", "",
                  "| model | size | split + middle layers' FLOP share | all layers' FLOP share | MLM head FLOP share | "
                  "FLOP ratio dropping / plain | CPU ratio |", "|---|---|---|---|---|---|---|"]
        for r in step["runs"]:
            fp, fd = r["flops_plain"], r["flops_dropping"]
            tot = sum(fp.values())
            lines.append(f"| {r['model']} | {r['size']} | {(fp['split layer'] + fp['middle layers']) / tot:.1%} | "
                         f"{sum(fp[p] for p in LAYER_PARTS) / tot:.1%} | {fp['MLM head + loss'] / tot:.1%} | "
                         f"{sum(fd.values()) / tot:.3f} | {r['ratio_cpu']:.3f} |")
        lines += ["", "For scale, the same FLOP count (computed, not measured) at the papers' sizes, keep 0.5, default split:", "",
                  "| model | tokens | MLM head FLOP share | FLOP ratio dropping / plain |", "|---|---|---|---|"]
        for name, cfg, T in _paper_sizes():
            fp, fd = step_flops(cfg, 8, T), step_flops(cfg, 8, T, T // 2)
            tot = sum(fp.values())
            lines.append(f"| {name} | {T} | {fp['MLM head + loss'] / tot:.1%} | {sum(fd.values()) / tot:.3f} |")
        lines += ["", "Where the time goes: each part's CPU time as a share of the plain step's, plain -> with "
                  "dropping (a row's right-hand numbers add up to the CPU ratio):", "",
                  "| model | size | " + " | ".join(ORDER) + " |", "|---|---|" + "---|" * len(ORDER)]
        for r in step["runs"]:
            p, d = r["plain"]["parts_cpu_mean_s"], r["dropping"]["parts_cpu_mean_s"]
            total = sum(p.values())
            cells = [f"{p[k] / total:.1%} -> {d[k] / total:.1%}" for k in ORDER]
            lines.append(f"| {r['model']} | {r['size']} | " + " | ".join(cells) + " |")
        _plot_step(step, os.path.join(out_dir, "token_dropping_step.png"))
        lines += ["", "![step breakdown](token_dropping_step.png)", ""]
    loss = saved.get("loss")
    if loss:
        m, s = loss["machine"], loss["settings"]
        lines += ["## (b) Cost to reach the plain run's final held-out MLM loss", "",
                  f"Machine: {m['cpu']}, **{m['threads']} thread(s)**, shared with other jobs (hence CPU seconds). "
                  f"Plain: {', '.join(f'{k} {v}' for k, v in s['steps'].items())} steps; dropping (keep {s['keep']}): until its held-out loss (evaluated "
                  f"without dropping) reaches the plain run's final one, at most {s['max_factor']}x the steps. "
                  f"Batch {s['batch']} x {s['length']}, MLM only, lr {s['lr']} (warm-up {s['warmup']}, then constant), "
                  f"AdamW eps {s['eps']}, {s['evals']} held-out evaluations over a plain run. Saving = 1 - dropping CPU s / "
                  "plain CPU s to the target (negative: dropping took longer; '-': not reached).", "",
                  "| model | size | seeds | target (plain final held-out) | plain CPU s | dropping CPU s | saving per seed | "
                  "saving mean | step CPU ratio | dropping's held-out at the plain run's steps |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        groups = defaultdict(list)
        for size, model, seed, plain, drop in _pairs(loss):
            groups[(model, size)].append((seed, summarize_pair(plain, drop)))
        for (model, size), rows in sorted(groups.items()):
            sv = [r["saving"] for _, r in rows]
            per = ", ".join("-" if x is None else f"{x:+.0%}" for x in sv)
            lines.append(f"| {model} | {size} | {len(rows)} | {_mean_sd([r['target'] for _, r in rows], '{:.3f}')} | "
                         f"{_mean_sd([r['plain_cpu_s'] for _, r in rows], '{:.0f}')} | "
                         f"{_mean_sd([r['dropping_cpu_s'] for _, r in rows], '{:.0f}')} | {per} | "
                         f"**{_mean_sd(sv, '{:+.1%}')}** | {_mean_sd([r['step_ratio'] for _, r in rows], '{:.3f}')} | "
                         f"{_mean_sd([r['loss_at_plain_steps'] for _, r in rows], '{:.3f}')} |")
        every = LENGTH_STEP
        lines += ["", f"The same saving as if the plain run had stopped earlier, every {every} steps (target: the plain "
                  "run's held-out loss at that step; the same runs as above; mean ± sample sd over seeds, '-' where a "
                  "dropping run never reached it):", "",
                  "| model | size | " + " | ".join(f"{h} steps" for h in _horizons(groups, every)) + " |",
                  "|---|---|" + "---|" * len(_horizons(groups, every))]
        by_len = defaultdict(lambda: defaultdict(list))
        for size, model, seed, plain, drop in _pairs(loss):
            for h, v in savings_by_length(plain, drop, every).items():
                by_len[(model, size)][h].append(v)
        for (model, size), cols in sorted(by_len.items()):
            cells = [_mean_sd(cols[h], "{:+.1%}") if h in cols else "" for h in _horizons(groups, every)]
            lines.append(f"| {model} | {size} | " + " | ".join(cells) + " |")
        lines += ["", f"The dropping run's held-out loss minus the plain run's at the same step, per {every}-step "
                  "window (mean over the window's evaluations and the seeds; both runs evaluate at the same steps; "
                  "positive: dropping behind per step), with the dropping run evaluated plain (as its saved model "
                  "is used; the saving above counts this one) and with dropping (as it trains). A gap near 0 means "
                  "a step with dropping learns as much as a plain one, and the saving nears 1 - the step CPU ratio; "
                  "the difference between the two rows is what running every token through the middle layers, "
                  "which the dropping run's training never does, costs its model:", "",
                  "| model | size | evaluated | " + " | ".join(f"{h - every}-{h}" for h in _horizons(groups, every))
                  + " |", "|---|---|---|" + "---|" * len(_horizons(groups, every))]
        gap = defaultdict(lambda: defaultdict(list))
        for size, model, seed, plain, drop in _pairs(loss):
            for key, how in (("mlm_loss", "plain"), ("dropping_mlm_loss", "with dropping")):
                for h, v in loss_gap_by_window(plain, drop, every, key).items():
                    gap[(model, size, how)][h] += v
        for (model, size, how), cols in sorted(gap.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "plain")):
            cells = [f"{np.mean(cols[h]):+.4f}" if cols.get(h) else "" for h in _horizons(groups, every)]
            lines.append(f"| {model} | {size} | {how} | " + " | ".join(cells) + " |")
        _plot_loss(loss, os.path.join(out_dir, "token_dropping_loss.png"))
        lines += ["", "![held-out loss vs CPU seconds](token_dropping_loss.png)", ""]
    notes = os.path.join(out_dir, "token_dropping_notes.md")  # the reading of the numbers, written by hand
    if os.path.isfile(notes):
        with open(notes) as f:
            lines += ["## What the numbers say", "", f.read().strip(), ""]
    text = "\n".join(lines) + "\n"
    write_text_atomic(os.path.join(out_dir, "token_dropping.md"), text)
    return text


def _plot_step(step, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = step["runs"]
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(runs) + 2.4))
    colors = plt.cm.tab20(np.linspace(0, 1, len(ORDER)))
    ticks = []
    for i, r in enumerate(runs):
        total = sum(r["plain"]["parts_cpu_mean_s"].values())
        for j, kind in enumerate(("plain", "dropping")):
            y, left = 2.6 * i + j, 0.0
            parts = r[kind]["parts_cpu_mean_s"]
            for c, part in zip(colors, ORDER):
                w = parts[part] / total
                ax.barh(y, w, left=left, color=c, label=part if (i, j) == (0, 0) else None)
                left += w
            ticks.append((y, f"{r['model']} {r['size']} {kind} ({r['plain']['cpu_median_s'] * 1e3:.0f} ms plain)"
                          if kind == "plain" else f"dropping: {left:.2f}"))
    ax.set_yticks([t[0] for t in ticks])
    ax.set_yticklabels([t[1] for t in ticks], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.8, color="k", lw=0.8, ls="--")
    ax.set_xlim(0, 1.45)
    ax.set_xlabel("CPU time per training step, by part, as a share of the plain step (dashed: the 0.8 target)")
    ax.legend(fontsize=7, ncol=1, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_loss(loss, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["model"], r["size"]) for r in loss["runs"]})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.8), squeeze=False)
    for ax, (model, size) in zip(axes[0], keys):
        for size_, model_, seed, plain, drop in _pairs(loss):
            if (model_, size_) != (model, size):
                continue
            for rec, color, name in ((plain, "tab:blue", "plain"), (drop, "tab:orange", f"dropping {drop['keep']}")):
                ev = rec["evals"][1:]
                ax.plot([e["cpu_s"] for e in ev], [e["mlm_loss"] for e in ev], color=color, lw=1,
                        label=name if seed == 0 else None)
            ax.axhline(plain["evals"][-1]["mlm_loss"], color="tab:blue", lw=0.5, ls=":")
        ax.set_title(f"{model} {size}", fontsize=10)
        ax.set_xlabel("training CPU seconds (1 thread)")
        ax.set_ylabel("held-out MLM loss (no dropping)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
