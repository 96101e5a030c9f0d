"""The benchmark's token-dropping row: a training step with token dropping (keep 0.5, default split) vs plain.

Dimensions: B batch, T tokens, k = T/2 kept tokens.

Both steps run in one worker process, alternating (plain, dropping, plain, ...), on the same
batch and model, so load on a shared machine falls on both alike. The dropping step includes
what dropping adds to a step: selecting the kept positions (``TokenImportance.select``) and
learning importance from the step's per-token losses (``update``). The target (informational):
the dropping step at most 0.8x the plain one. ``benchmarks/token_dropping.py`` measures the
rest: where the time goes, and the cost to reach the plain run's loss.
"""

from __future__ import annotations

import gc
import time

from .measure import _cpu_s, make_batch, size_config, summarize

KEEP = 0.5
TARGET_RATIO = 0.8


def worker_token_dropping(spec) -> dict:
    """Times of ``spec['repeats']`` plain and dropping training steps, alternating, after warm-up."""
    from ..model import MobileBertForPreTraining
    from ..optim import AdamW
    from ..token_dropping import TokenImportance

    cfg, B, T = size_config(spec["size"])
    ids, labels, nsp = make_batch(cfg, B, T)
    model = MobileBertForPreTraining(cfg, seed=0).train()
    opt = AdamW(model.store, lr=1e-4)
    importance = TokenImportance(cfg.vocab_size, protected_ids=[], never_keep_ids=[0])  # random ids: no specials

    def step(drop: bool):
        kw = {"keep_positions": importance.select(ids, keep=KEEP)} if drop else {}
        out = model.forward(ids, labels=labels, next_sentence_label=nsp, mlm_positions="labelled", **kw)
        model.backward()
        opt.step()
        opt.zero_grad()
        if drop:
            importance.update(labels[labels != -100], out.mlm_token_losses)
        return out.loss

    for _ in range(spec["warmup"]):
        step(False)
        step(True)
    times = {False: [], True: []}
    cpu = {False: 0.0, True: 0.0}
    for _ in range(spec["repeats"]):
        for drop in (False, True):
            gc.collect()
            c0, t0 = _cpu_s(), time.perf_counter()
            check = step(drop)
            times[drop].append(time.perf_counter() - t0)
            cpu[drop] += _cpu_s() - c0
    out = {}
    for drop, name in ((False, "plain"), (True, "dropping")):
        out[name] = {**summarize(times[drop]), "cpu_per_call": cpu[drop] / spec["repeats"]}
    out["ratio"] = out["dropping"]["median"] / out["plain"]["median"]
    out["ratio_cpu"] = out["dropping"]["cpu_per_call"] / out["plain"]["cpu_per_call"]
    out["check"] = float(check)
    out["keep"], out["layers"] = KEEP, cfg.num_hidden_layers
    return out


def merge_token_dropping(a: dict, b: dict) -> dict:
    """Two rounds of ``worker_token_dropping`` as one: samples pooled, ratios recomputed."""
    if "error" in a or "error" in b:
        return a if "error" in a else b
    out = dict(b)
    for name in ("plain", "dropping"):
        merged = summarize(a[name]["samples"] + b[name]["samples"])
        merged["cpu_per_call"] = (a[name]["cpu_per_call"] * a[name]["n"] + b[name]["cpu_per_call"] * b[name]["n"]) / (
            a[name]["n"] + b[name]["n"])
        out[name] = merged
    out["ratio"] = out["dropping"]["median"] / out["plain"]["median"]
    out["ratio_cpu"] = out["dropping"]["cpu_per_call"] / out["plain"]["cpu_per_call"]
    return out


def format_token_dropping(res) -> list:
    """The report's lines for the token-dropping rows (empty when not measured)."""
    rows = res.get("token_dropping")
    if not rows:
        return []
    lines = ["", f"Token dropping: training step with keep {KEEP} and the default split (L/2 - 1) vs plain, ours, "
             "alternating in one process; ms median [min-max]; CPU = process CPU seconds per step",
             f"{'size':6s} {'layers':>6s} {'plain':>22s} {'dropping':>22s} {'ratio':>7s} {'ratio CPU':>9s}"]
    for size, e in rows.items():
        if "error" in e:
            lines.append(f"{size:6s} {e['error']}")
            continue
        cell = lambda t: f"{t['median'] * 1e3:.1f} [{t['min'] * 1e3:.0f}-{t['max'] * 1e3:.0f}]"  # noqa: E731
        mark = "  pass" if e["ratio"] <= TARGET_RATIO else "  MISS"
        lines.append(f"{size:6s} {e['layers']:6d} {cell(e['plain']):>22s} {cell(e['dropping']):>22s} "
                     f"{e['ratio']:6.2f}x {e['ratio_cpu']:8.2f}x{mark}")
    return lines


def token_dropping_targets(res) -> list:
    """(name, value, limit) for the ratios targets list."""
    return [(f"{size} token-dropping train step <= {TARGET_RATIO}x plain", e.get("ratio"), TARGET_RATIO)
            for size, e in res.get("token_dropping", {}).items()]
