"""Micro-benchmark of the model's Numba kernels against their NumPy twins, at 1 and 2 threads.

    python benchmarks/kernels_micro.py                       # paper + tiny shapes, 1 and 2 threads
    python benchmarks/kernels_micro.py --sizes tiny --threads 2 --only norm
    python benchmarks/kernels_micro.py --after-matmul        # each call right after a BLAS product

Shapes: "paper" are those of ``python -m tinymobilebert bench`` (config.mobilebert(), 8 x 128
tokens); "tiny" are the tiny benchmark size's (1024 tokens, widths 32/64/128, attention
[16,4,64,64], the MLM head's labelled rows [154, 1024]); the distillation losses' kernels run at
the same shapes (hidden states [1024, H], attention rows [B*A*T, T], labelled rows [M, V]). Each thread count runs in a fresh
process (the kernel pool's size is fixed when it starts). Times are the *minimum* over many
calls, which is robust to other load on a shared machine; the ratio is twin / Numba.

``--after-matmul`` runs a [N, 512] @ [512, 512] product (untimed) before every timed call, as in a
training step, where OpenBLAS's worker threads keep spinning for a while after each product and
compete with the kernel pool's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def cases(size: str, rng):
    """[(kernel, label, args)] at the shapes of ``size``."""
    from tinymobilebert.kernels.activations import act_code
    from tinymobilebert.kernels.norms import norm_forward_numpy
    from tinymobilebert.kernels.softmax import attention_softmax_numpy

    f32 = np.float32
    if size == "paper":
        N, I, H, M, A, B, T, E, V, n_ce = 1024, 128, 512, 512, 4, 8, 128, 128, 30522, 1024
    else:
        N, I, H, M, A, B, T, E, V, n_ce = 1024, 32, 128, 128, 4, 16, 64, 64, 1024, 154

    def r(*shape):
        return rng.standard_normal(shape, dtype=f32)

    out = []
    for C, ln, what in ((I, False, "NoNorm +b +r"), (H, False, "NoNorm +b +r"), (H, True, "LayerNorm")):
        bias, res = (None, None) if ln else (r(C), r(N, C))
        args = (r(N, C), bias, res, r(C), r(C), 1e-12, ln)
        _, z, mean, rstd = norm_forward_numpy(*args)
        out += [("norm_forward", f"{what} [{N},{C}]", args),
                ("norm_backward", f"{what} [{N},{C}]", (r(N, C), z, args[3], mean, rstd, ln))]
    for act in ("relu", "gelu_new"):
        code = act_code(act)
        out += [("bias_act_forward", f"{act} [{N},{M}]", (r(N, M), r(M), code)),
                ("act_backward", f"{act} [{N},{M}]", (r(N, M), r(N, M), code))]
    scale = 1.0 / np.sqrt(I // A)
    raw = r(B, A, T, T)
    p, _ = attention_softmax_numpy(raw, None, scale, False, 0.0, False)
    mask = (rng.random((B, T)) < 0.9).astype(f32)
    out += [("attention_softmax", f"[{B},{A},{T},{T}]", (raw, None, scale, False, 0.0, False)),
            ("attention_softmax", f"masked [{B},{A},{T},{T}]", (raw, mask, scale, False, 0.0, False)),
            ("attention_softmax_backward", f"[{B},{A},{T},{T}]", (r(B, A, T, T), p, None, scale, False))]
    logits = r(n_ce, V)
    labels = np.where(rng.random(n_ce) < 0.15, rng.integers(1, V, n_ce), -100)
    if size == "tiny":
        labels = rng.integers(1, V, n_ce)  # the labelled rows only
    lse = np.log(np.exp(logits.astype(np.float64)).sum(axis=1))
    out += [("cross_entropy_forward", f"[{n_ce},{V}]", (logits, labels)),
            ("cross_entropy_backward", f"[{n_ce},{V}]", (logits, labels, lse, 1.0 / max(1, (labels >= 0).sum())))]
    out += distill_cases(N, H, A, B, T, V, n_ce, r, rng)
    ids = rng.integers(1, V, (B, T))
    table = r(V, E)
    out += [("trigram_embed", f"ids [{B},{T}] table [{V},{E}]", (ids, table, None)),
            ("trigram_embed_backward", f"dx [{B},{T},{3 * E}]", (r(B, T, 3 * E), ids, None, np.zeros((V, E), f32), 0)),
            ("embed", f"ids [{B},{T}] table [{V},{E}]", (ids, table)),
            ("embed_backward", f"dx [{N},{E}]", (r(N, E), ids.reshape(-1), np.zeros((V, E), f32), 0)),
            ("add_position_type", f"[{B},{T},{H}]", (r(B, T, H), r(512, H), r(2, H), np.zeros((B, T), np.int64))),
            ("add_position_type_backward", f"[{B},{T},{H}]",
             (r(B, T, H), np.zeros((B, T), np.int64), np.zeros((512, H), f32), np.zeros((2, H), f32)))]
    return out


def distill_cases(N, H, A, B, T, V, M, r, rng):
    """The distillation losses' kernels: FMT and mean/variance transfer on (N, H) hidden states,
    attention transfer on (B*A*T, T) scores, MLM distillation on (M, V) labelled rows."""
    from tinymobilebert.kernels.hidden_stats import feature_map_loss_forward_numpy, row_moments_numpy
    from tinymobilebert.kernels.soft_targets import soft_target_ce_forward_numpy

    a, b = r(N, H), r(N, H)
    w = np.full(N, 1.0 / (N * H))
    _, *stats = feature_map_loss_forward_numpy(a, b, 1e-12, w)
    mu, _ = row_moments_numpy(a)
    out = [("feature_map_loss_forward", f"FMT [{N},{H}]", (a, b, 1e-12, w)),
           ("feature_map_loss_backward", f"FMT [{N},{H}]", (a, b, *stats, 2.0 * w)),
           ("row_moments", f"[{N},{H}]", (a,)),
           ("row_moments_backward", f"[{N},{H}]", (a, mu, rng.standard_normal(N), rng.standard_normal(N)))]
    none = np.zeros(0, np.int64)
    for label, (R, S), labels, alpha in ((f"AT [{B * A * T},{T}]", (B * A * T, T), none, 0.0),
                                         (f"MLM distill [{M},{V}]", (M, V), rng.integers(0, V, M), 0.5)):
        s_s, s_t, w = r(R, S), r(R, S), np.full(R, 1.0 / R)
        _, st = soft_target_ce_forward_numpy(s_s, s_t, labels, alpha, 1.0, None, 1, w, False)
        out += [("soft_target_ce_forward", label, (s_s, s_t, labels, alpha, 1.0, None, 1, w, False)),
                ("soft_target_ce_backward", label, (s_s, s_t, labels, alpha, 1.0, None, 1, st, w))]
    return out


def time_min(fn, budget_s: float, before=None, max_reps: int = 400) -> float:
    """Minimum seconds of ``fn()`` over repeated calls (``before()`` runs untimed before each)."""
    fn()
    best, spent, reps = float("inf"), 0.0, 0
    while reps < 5 or (spent < budget_s and reps < max_reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def child(sizes, only, budget, after_matmul) -> list:
    import tinymobilebert.distill  # noqa: F401  (registers the distillation losses' kernels)
    from tinymobilebert.kernels import REGISTRY

    before = None
    if after_matmul:
        a, w = np.ones((1024, 512), np.float32), np.ones((512, 512), np.float32)
        before = lambda: a @ w  # noqa: E731
    rows = []
    for size in sizes:
        for name, label, args in cases(size, np.random.default_rng(0)):
            if only and not any(o in name for o in only):
                continue
            k = REGISTRY[name]
            t_nb = time_min(lambda: k.numba(*args), budget, before)
            t_np = time_min(lambda: k.numpy(*args), budget, before)
            rows.append({"size": size, "kernel": name, "shape": label, "numba": t_nb, "numpy": t_np})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="paper,tiny")
    ap.add_argument("--threads", default="1,2", help="comma list of kernel thread counts, one process each")
    ap.add_argument("--only", default="", help="comma list of substrings of kernel names")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per timing (min of the calls)")
    ap.add_argument("--after-matmul", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes, only = args.sizes.split(","), [o for o in args.only.split(",") if o]
    if args.child:
        print("@@MICRO@@" + json.dumps(child(sizes, only, args.budget, args.after_matmul)))
        return None
    threads = [int(t) for t in args.threads.split(",")]
    per = {}
    for n in threads:
        env = dict(os.environ, TINYMOBILEBERT_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n),
                   OMP_NUM_THREADS=str(n))
        env.pop("TINYMOBILEBERT_NUMPY_KERNELS", None)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--sizes", args.sizes, "--only", args.only,
               "--budget", str(args.budget)] + (["--after-matmul"] if args.after_matmul else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        per[n] = json.loads(out.rsplit("@@MICRO@@", 1)[1])
    head = f"{'size':5s} {'kernel':27s} {'shape':32s}" + "".join(f" {f'numba@{n}':>9s}" for n in threads)
    head += f" {'twin':>9s}" + "".join(f" {f'x@{n}':>6s}" for n in threads)
    print("min ms" + (" (each call after a [1024,512]@[512,512] matmul)" if args.after_matmul else ""))
    print(head)
    for i, row in enumerate(per[threads[0]]):
        nb = [per[n][i]["numba"] for n in threads]
        tw = min(per[n][i]["numpy"] for n in threads)
        line = f"{row['size']:5s} {row['kernel']:27s} {row['shape']:32s}"
        line += "".join(f" {t * 1e3:9.3f}" for t in nb) + f" {tw * 1e3:9.3f}"
        line += "".join(f" {tw / t:6.1f}" for t in nb)
        print(line)
    if args.json:
        from tinymobilebert.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(per, indent=1))
    return per


if __name__ == "__main__":
    main()
