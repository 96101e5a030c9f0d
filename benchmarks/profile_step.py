"""Where the time goes in one tinymobilebert training step (forward, backward, AdamW, zero_grad),
or in one inference forward pass (``--mode infer``: eval mode, logits at every position, no cache).

    python benchmarks/profile_step.py [--size paper] [--mode train|infer] [--steps 3] [--cprofile]

Dimensions: B batch, T tokens, N = B*T rows, H hidden width, V vocabulary.

Measures only; no library file is changed. For the run, the block functions are wrapped with
timers in the module namespaces that call them (and ``Kernel.__call__`` for every kernel), and
each wrapper records its time *excluding* the wrapped calls inside it, so the rows add up to the
step:

* ``matmul <layer>``: ``linear_forward`` / ``linear_backward`` (the BLAS products, the bias add
  and the bias-gradient row sum), split by the weight's transformers name, with GFLOP/s;
* ``attention core``: what ``attention_forward/backward`` do besides their dense layers and
  kernels: Q K^T, P V and their gradients (batched matmuls) and the head split/merge copies;
* ``MLM decoder``: what the MLM head does besides its transform: the [N, H] x [H, V] logits
  product, its two gradient products, the bias add/sum;
* ``kernel <name>``: each Numba kernel; ``dropout``; ``optimizer`` (AdamW, kernel included)
  and ``zero_grad``; ``glue``: the Python and the residual-gradient adds between them.

A second measurement at B=1, T=8 (same model) gives the floor of per-call overhead: forward +
backward there is almost all Python and dispatch.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import resource
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinymobilebert  # noqa: E402
from tinymobilebert.benchmark.measure import make_batch, size_config, wait_until_quiet  # noqa: E402
from tinymobilebert.blocks import attention, dropout, embeddings, heads, layer, linear  # noqa: E402
from tinymobilebert.kernels import _jit  # noqa: E402
from tinymobilebert.model import MobileBertForPreTraining  # noqa: E402
from tinymobilebert.optim import AdamW  # noqa: E402

from tinymobilebert import losses  # noqa: E402


class Timers:
    """Exclusive time and FLOPs per category, from nested wrapped calls."""

    def __init__(self):
        self.excl = defaultdict(float)
        self.calls = defaultdict(int)
        self.flops = defaultdict(float)
        self.stack = []  # [category, time spent in wrapped children]

    def run(self, category, fn, *args, flops=0.0, **kwargs):
        self.stack.append([category, 0.0])
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            _, child = self.stack.pop()
            self.excl[category] += dt - child
            self.calls[category] += 1
            self.flops[category] += flops
            if self.stack:
                self.stack[-1][1] += dt

    def reset(self):
        self.excl.clear()
        self.calls.clear()
        self.flops.clear()


def layer_type(name: str) -> str:
    """'mobilebert.encoder.layer.7.ffn.2.intermediate.dense.weight' -> 'ffn.intermediate.dense'."""
    name = re.sub(r"^mobilebert\.encoder\.layer\.\d+\.", "", name)
    name = re.sub(r"\.\d+\.", ".", name)
    return name.removesuffix(".weight")


def instrument(model, timers):
    """Wrap the block functions wherever a tinymobilebert module refers to them. Returns undo()."""
    names = {id(w): layer_type(n) for n, w in model.params.items()}
    undo = []

    def replace(fn, wrapper):
        for mod in [m for k, m in sys.modules.items() if k.startswith("tinymobilebert") and m is not None]:
            for attr, val in list(vars(mod).items()):
                if val is fn:
                    setattr(mod, attr, wrapper)
                    undo.append((mod, attr, fn))

    fwd, bwd = linear.linear_forward, linear.linear_backward

    def lin_fwd(x, W, *a, **k):
        return timers.run(f"matmul {names.get(id(W), '?')} (fwd)", fwd, x, W, *a,
                          flops=2.0 * x.shape[0] * W.size, **k)

    def lin_bwd(dy, x, W, *a, **k):
        need_dx = k.get("need_dx", a[2] if len(a) > 2 else True)
        return timers.run(f"matmul {names.get(id(W), '?')} (bwd)", bwd, dy, x, W, *a,
                          flops=(4.0 if need_dx else 2.0) * x.shape[0] * W.size, **k)

    replace(fwd, lin_fwd)
    replace(bwd, lin_bwd)
    cfg = model.config
    for fn, cat in ((attention.attention_forward, "attention core: QK^T, PV, head reshapes (fwd)"),
                    (attention.attention_backward, "attention core: QK^T, PV, head reshapes (bwd)"),
                    (heads.mlm_head_forward, "MLM decoder [N,H]x[H,V] + bias (fwd)"),
                    (heads.mlm_head_backward, "MLM decoder [N,H]x[H,V] + bias (bwd)"),
                    (dropout.dropout_forward, "dropout (fwd)"), (dropout.dropout_backward, "dropout (bwd)"),
                    (layer.layer_forward, "glue: layer (residual adds, Python)"),
                    (layer.layer_backward, "glue: layer (residual adds, Python)"),
                    (embeddings.embeddings_forward, "glue: embeddings"), (embeddings.embeddings_backward, "glue: embeddings"),
                    (heads.pooler_forward, "glue: pooler / NSP"), (heads.pooler_backward, "glue: pooler / NSP"),
                    (heads.linear_head_forward, "glue: pooler / NSP"), (heads.linear_head_backward, "glue: pooler / NSP"),
                    (losses.cross_entropy_forward_mean, "glue: losses"), (losses.cross_entropy_backward_mean, "glue: losses")):
        replace(fn, (lambda f, c: lambda *a, **k: timers.run(c, f, *a, flops=_flops(c, a, cfg), **k))(fn, cat))
    original_call = _jit.Kernel.__call__
    _jit.Kernel.__call__ = lambda self, *a, **k: timers.run(f"kernel {self.name}", original_call, self, *a, **k)

    def restore():
        _jit.Kernel.__call__ = original_call
        for mod, attr, fn in undo:
            setattr(mod, attr, fn)

    return restore


def _flops(category, args, cfg):
    """FLOPs of the products a wrapped block does itself (attention core, MLM decoder)."""
    if category.startswith("attention core"):
        if category.endswith("(fwd)"):  # attention_forward(q_in, k_in, v_in, key_mask, params, prefix, B, T, A)
            N, T = args[0].shape[0], args[7]
            return 2 * 2.0 * N * T * cfg.true_hidden_size  # Q K^T and P V
        B, A, T, d = args[1].q.shape  # attention_backward(dcontext, cache, ...)
        return 4 * 2.0 * B * A * T * T * d  # dP, dV, dQ, dK
    if category.startswith("MLM decoder"):
        N = args[0].shape[0]
        return (2.0 if category.endswith("(fwd)") else 4.0) * N * cfg.hidden_size * cfg.vocab_size
    return 0.0


def run_steps(model, opt, batch, timers, steps, faults=None):
    """Run ``steps`` training steps (inference passes when ``opt`` is None, as the benchmark
    times them); returns their wall times. ``faults`` (a dict) collects the minor page faults
    and the system CPU seconds (mostly the kernel serving those faults)."""
    ids, labels, nsp = batch
    totals = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        t0 = time.perf_counter()
        if opt is None:
            timers.run("glue: model forward", model.forward, ids, keep_cache=False)
        else:
            timers.run("glue: model forward", model.forward, ids, labels=labels, next_sentence_label=nsp)
            timers.run("glue: model backward", model.backward)
            timers.run("optimizer (AdamW step)", opt.step)
            timers.run("zero_grad (clear the flat grad buffer)", opt.zero_grad)
        totals.append(time.perf_counter() - t0)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if faults is not None:
        faults["minor_faults"] = (ru1.ru_minflt - ru0.ru_minflt) / steps
        faults["sys_s"] = (ru1.ru_stime - ru0.ru_stime) / steps
        faults["user_s"] = (ru1.ru_utime - ru0.ru_utime) / steps
    return totals


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="paper")
    ap.add_argument("--mode", choices=("train", "infer"), default="train",
                    help="a training step, or an inference forward pass (eval mode, no cache)")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (after one warm-up step)")
    ap.add_argument("--cprofile", action="store_true", help="also print cProfile's top 25 by tottime")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="first wait up to S seconds for the machine's CPU pressure to fall below 10%%")
    args = ap.parse_args(argv)
    if args.wait_quiet:
        print(f"waited for a quiet CPU: {wait_until_quiet(args.wait_quiet)}")
    cfg, B, T = size_config(args.size)
    model = MobileBertForPreTraining(cfg, seed=0, dtype=np.float32)
    if args.mode == "train":
        opt = AdamW(model.store, lr=1e-4)
    else:
        opt = None
        model.eval()
    batch = make_batch(cfg, B, T)
    timers = Timers()
    restore = instrument(model, timers)
    try:
        run_steps(model, opt, batch, timers, 1)  # warm-up: load kernels, first-touch buffers
        timers.reset()
        faults = {}
        totals = run_steps(model, opt, batch, timers, args.steps, faults)
        floor = Timers()
        restore()
        small = make_batch(cfg, 1, 8)
        for _ in range(3):
            t0 = time.perf_counter()
            if opt is None:
                model.forward(small[0], keep_cache=False)
            else:
                model.forward(small[0], labels=small[1], next_sentence_label=small[2])
                model.backward()
            floor.excl["fwd+bwd"] = time.perf_counter() - t0
        model.zero_grad()
    finally:
        restore()
    step = float(np.median(totals))
    n = args.steps
    print(f"tinymobilebert {tinymobilebert.__version__}, {args.mode}, size {args.size} (B={B}, T={T}), float32, "
          f"{_jit.num_threads()} kernel threads; step median {step * 1e3:.0f} ms over {n} steps "
          f"[{min(totals) * 1e3:.0f}-{max(totals) * 1e3:.0f}]; per-step averages below")
    print(f"{'where':58s} {'ms':>8s} {'%':>6s} {'calls':>6s} {'GFLOP/s':>8s}")
    rows = sorted(timers.excl.items(), key=lambda kv: -kv[1])
    for cat, t in rows:
        gf = timers.flops[cat] / t / 1e9 if timers.flops[cat] and t > 0 else None
        print(f"{cat:58s} {t / n * 1e3:8.1f} {t / n / step:6.1%} {timers.calls[cat] // n:6d} "
              f"{'' if gf is None else f'{gf:8.1f}'}")
    groups = defaultdict(float)
    for cat, t in rows:
        groups[cat.split(" ")[0].rstrip(":")] += t / n
    print("groups: " + ", ".join(f"{g} {t * 1e3:.0f} ms ({t / step:.0%})" for g, t in sorted(groups.items(), key=lambda kv: -kv[1])))
    print(f"sum of rows {sum(timers.excl.values()) / n * 1e3:.0f} ms vs step {step * 1e3:.0f} ms (timer overhead and "
          f"the loop); overhead floor: {'forward' if opt is None else 'forward + backward'} at B=1, T=8: "
          f"{floor.excl['fwd+bwd'] * 1e3:.1f} ms")
    print(f"per step: {faults['minor_faults']:.0f} minor page faults ({faults['minor_faults'] * 4 / 1024:.0f} MB of "
          f"first-touched 4 KB pages), CPU {faults['user_s'] * 1e3:.0f} ms user + {faults['sys_s'] * 1e3:.0f} ms system")
    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        run_steps(model, opt, batch, Timers(), 1)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
