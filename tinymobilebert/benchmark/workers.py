"""Benchmark workers: each measurement runs in a fresh subprocess (own peak memory, own JIT state)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..threads import THREAD_ENV_VARS
from .measure import MLM_FRACTION, make_batch, peak_rss_mb, rss_mb, size_config, time_adaptive, time_calls


# ------------------------------------------------------------------------------ workers
# Each worker runs in a fresh subprocess (see ``run_worker``) and returns a JSON-able dict.


def _ours_runner(cfg, B, T, mode):
    """(model, make_step): ``make_step()`` builds the optimizer (training) and returns the step."""
    from ..model import MobileBertForPreTraining
    from ..optim import AdamW

    ids, labels, nsp = make_batch(cfg, B, T)
    model = MobileBertForPreTraining(cfg, seed=0, dtype=np.float32)

    def make_step():
        if mode == "infer":
            model.eval()
            return lambda: float(model.forward(ids, keep_cache=False).prediction_logits[0, 0, 0])
        opt = AdamW(model.store, lr=1e-4)
        model.train()

        def step():  # the MLM head at the labelled positions: the same loss and gradients, as the trainer runs
            out = model.forward(ids, labels=labels, next_sentence_label=nsp, mlm_positions="labelled")
            model.backward()
            opt.step()
            opt.zero_grad()
            return out.loss

        return step

    return model, make_step


def hf_config(cfg):
    """transformers' MobileBertConfig with our config's values (eager attention)."""
    import transformers

    known = set(transformers.MobileBertConfig().to_dict())
    values = {k: v for k, v in cfg.to_dict().items() if k in known}
    return transformers.MobileBertConfig(**values, attn_implementation="eager")


def _torch_runner(cfg, B, T, mode):
    """As ``_ours_runner``, for transformers' model and torch.optim.AdamW (foreach)."""
    import torch
    import transformers

    ids, labels, nsp = (torch.from_numpy(a) for a in make_batch(cfg, B, T))
    torch.manual_seed(0)
    model = transformers.MobileBertForPreTraining(hf_config(cfg))

    def make_step():
        if mode == "infer":
            model.eval()

            def infer():
                with torch.inference_mode():
                    return model(input_ids=ids).prediction_logits[0, 0, 0].item()

            return infer
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
        model.train()

        def step():
            out = model(input_ids=ids, labels=labels, next_sentence_label=nsp)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            return out.loss.item()

        return step

    return model, make_step


def worker_step(spec) -> dict:
    """One (implementation, size, mode): times, and resident memory at three points.

    Before the baseline, one step of the ``micro`` size runs and is thrown away, so one-time
    costs (loading the compiled kernels, torch's lazy initialisation) are not counted as the
    step's memory. ``rss_model_mb`` is then read with the measured model built (no optimizer
    state yet); ``peak_rss_mb`` is the process's peak at the end.
    """
    from ..kernels import use_numpy_twins

    impl, mode = spec["impl"], spec["mode"]
    if impl == "pytorch":
        import torch

        torch.set_num_threads(spec["threads"])
        runner, extra = _torch_runner, {"torch_threads": torch.get_num_threads()}
    else:
        runner, extra = _ours_runner, {}
    auto = spec["threads"] == "auto" and impl != "pytorch"
    with use_numpy_twins(impl == "numpy-twins"):
        micro, make = runner(*size_config("micro"), mode)
        make()()
        del micro, make
        gc.collect()
        rss_import = rss_mb()
        model, make = runner(*size_config(spec["size"]), mode)
        gc.collect()
        rss_model = rss_mb()
        step = make()
        if auto:  # choose the thread count by timing steps, as the Trainer does (tinymobilebert.threads)
            step, tuner = _tuned(step, spec["warmup"])
            times = time_calls(step, 0, spec["repeats"])
            extra.update(threads_chosen=tuner.threads, thread_events=tuner.events)
        else:
            times = time_calls(step, spec["warmup"], spec["repeats"])
        check = float(step())
    if impl == "pytorch":
        extra["attn_implementation"] = model.config._attn_implementation
    peak = max(peak_rss_mb(), rss_mb())  # the kernel updates ru_maxrss lazily: it may lag statm
    return {"time": times, "rss_warm_mb": rss_import, "rss_model_mb": rss_model, "peak_rss_mb": peak,
            "peak_over_model_mb": peak - rss_model, "check": check, **extra}


def _tuned(step, warmup):
    """(step wrapped in a ``ThreadTuner``, the tuner), after its warm-up and first probe (untimed)."""
    from ..threads import ThreadTuner

    tuner = ThreadTuner(warmup_steps=warmup)

    def tuned():
        tuner.before_step()
        result = step()
        tuner.after_step()
        return result

    for _ in range(warmup + tuner.probe_steps * len(tuner.candidates)):
        tuned()
    return tuned, tuner


def worker_peak(spec) -> dict:
    """Float32 matmul GFLOP/s of NumPy (and torch, if asked): best over sizes and repeats."""
    rng = np.random.default_rng(0)
    out = {}
    for n in spec["sizes"]:
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        t = time_calls(lambda: a @ b, 1, spec["repeats"])["min"]
        out[f"numpy_{n}"] = 2.0 * n**3 / t / 1e9
    if spec.get("torch"):
        import torch

        torch.set_num_threads(spec["threads"])
        for n in spec["sizes"]:
            a, b = torch.rand(n, n), torch.rand(n, n)
            t = time_calls(lambda: a @ b, 1, spec["repeats"])["min"]
            out[f"torch_{n}"] = 2.0 * n**3 / t / 1e9
    return out


# Registered kernels whose fast path is not a Numba kernel: measured, but no ">= 2x twin" target.
NOT_NUMBA = {"gemm_accumulate": "BLAS gemm with beta = 1 through ctypes"}


def _kernel_cases(cfg, B, T, rng):
    """[(kernel name, pass, shape label, args)] at the shapes of config ``cfg`` and batch (B, T)."""
    from ..kernels.activations import act_code
    from ..kernels.norms import norm_forward_numpy
    from ..kernels.softmax import attention_softmax_numpy
    from ..model import MobileBertForPreTraining
    from ..params import ParameterStore

    f32 = np.float32
    N, H, I, M, E, V, A = (B * T, cfg.hidden_size, cfg.true_hidden_size, cfg.intermediate_size,
                           cfg.embedding_size, cfg.vocab_size, cfg.num_attention_heads)

    def r(*shape):
        return rng.standard_normal(shape, dtype=f32)

    ids = rng.integers(1, V, (B, T))
    types = np.zeros((B, T), np.int64)
    labels = np.where(rng.random(N) < MLM_FRACTION, rng.integers(1, V, N), -100)
    cases = []
    for C, ln, what in ((I, False, "NoNorm +bias +res"), (H, False, "NoNorm +bias +res"), (H, True, "LayerNorm")):
        bias, res = (None, None) if ln else (r(C), r(N, C))  # as in the MLM head / the blocks
        args = (r(N, C), bias, res, r(C), r(C), 1e-12, ln)
        _, z, mean, rstd = norm_forward_numpy(*args)
        cases += [("norm_forward", "fwd", f"{what} [{N},{C}]", args),
                  ("norm_backward", "bwd", f"{what} [{N},{C}]", (r(N, C), z, args[3], mean, rstd, ln))]
    code = act_code(cfg.hidden_act)
    cases += [("bias_act_forward", "fwd", f"{cfg.hidden_act} [{N},{M}]", (r(N, M), r(M), code)),
              ("act_backward", "bwd", f"{cfg.hidden_act} [{N},{M}]", (r(N, M), r(N, M), code))]
    scale = 1.0 / np.sqrt(I // A)
    raw = r(B, A, T, T)
    p, _ = attention_softmax_numpy(raw, None, scale, False, 0.0, False)
    cases += [("attention_softmax", "fwd", f"[{B},{A},{T},{T}]", (raw, None, scale, False, 0.0, False)),
              ("attention_softmax_backward", "bwd", f"[{B},{A},{T},{T}]", (r(B, A, T, T), p, None, scale, False))]
    pdrop = cfg.attention_probs_dropout_prob or 0.1
    keep = (rng.random((B, A, T, T)) >= pdrop).astype(np.uint8)
    cases += [("dropout_apply", "fwd", f"attention probs [{B},{A},{T},{T}]",
               (p, rng.random((B, A, T, T), dtype=f32), pdrop, 1 / (1 - pdrop))),
              ("dropout_grad", "bwd", f"attention probs [{B},{A},{T},{T}]", (r(B, A, T, T), keep, 1 / (1 - pdrop)))]
    logits = r(N, V)
    lse = np.log(np.exp(logits.astype(np.float64)).sum(axis=1))
    cases += [("cross_entropy_forward", "fwd", f"[{N},{V}]", (logits, labels)),
              ("cross_entropy_backward", "bwd", f"[{N},{V}]", (logits, labels, lse, 1.0 / max(1, (labels >= 0).sum())))]
    table = r(V, E)
    cases += [("trigram_embed", "fwd", f"ids [{B},{T}], table [{V},{E}]", (ids, table, None)),
              ("trigram_embed_backward", "bwd", f"dx [{B},{T},{3 * E}] -> [{V},{E}]",
               (r(B, T, 3 * E), ids, None, np.zeros((V, E), f32), 0)),
              ("embed", "fwd", f"ids [{B},{T}], table [{V},{E}]", (ids, table)),
              ("embed_backward", "bwd", f"dx [{N},{E}] -> [{V},{E}]", (r(N, E), ids.reshape(-1), np.zeros((V, E), f32), 0))]
    P = cfg.max_position_embeddings
    cases += [("add_position_type", "fwd", f"[{B},{T},{H}]", (r(B, T, H), r(P, H), r(2, H), types)),
              ("add_position_type_backward", "bwd", f"[{B},{T},{H}]",
               (r(B, T, H), types, np.zeros((P, H), f32), np.zeros((2, H), f32)))]
    # gemm_accumulate is a BLAS call (ctypes), not Numba: its row shows what beta = 1 saves over
    # ``c += a @ b`` (a temporary and a pass) and carries no 2x target (``NOT_NUMBA``)
    cases += [("gemm_accumulate", "fwd", f"MLM logits [{N},{H - E}]x[{H - E},{V}] += ",
               (r(N, H)[:, E:], r(H - E, V), r(N, V))),
              ("gemm_accumulate", "bwd", f"dW += dy^T x [{M},{N}]x[{N},{I}]", (r(N, M).T, r(N, I), r(M, I)))]
    cases += _distill_kernel_cases(cfg, B, T, rng)
    # the optimizers' kernels over the flat store of MobileBertForPreTraining at this config
    store = ParameterStore(MobileBertForPreTraining.parameter_shapes(cfg), f32)
    n = store.data.size
    order = sorted(store.slices.values())
    s0 = np.array([a for a, _ in order], np.int64)
    s1 = np.array([b for _, b in order], np.int64)
    S = len(order)

    def flat(positive=False):
        x = rng.random(n, dtype=f32)
        return x if positive else x - f32(0.5)

    param, grad, m, v, upd = flat(), flat(), flat(), flat(True), flat()
    ones, gate = np.ones(S), np.ones(S, bool)
    label = f"flat store [{n / 1e6:.1f}M], {S} tensors"
    cases += [("adamw_update", "update", label, (param, grad, m, v, s0, s1, 1e-4 * ones, ones - 1e-6, gate,
                                                0.9, 0.999, 1e-8, 0.9, 1.0)),
              ("sgd_update", "update", label, (param, grad, m, s0, s1, 1e-4 * ones, ones - 1e-6, 0.9, 1.0)),
              ("lamb_moments", "update", label, (param, grad, m, v, upd, s0, s1, 0.01 * ones, gate,
                                                0.9, 0.999, 1e-6, 1.0, 1.0, 1.0)),
              ("lamb_apply", "update", label, (param, upd, s0, s1, 1e-6 * ones)),
              ("squared_norm", "update", f"flat [{n / 1e6:.1f}M]", (grad,))]
    return cases


def _distill_kernel_cases(cfg, B, T, rng):
    """The distillation losses' kernels (``tinymobilebert.distill``) at this config's shapes: FMT and
    mean/variance transfer on one layer's hidden states (B*T, H), attention transfer on one layer's
    scores (B*A*T, T), MLM distillation on the labelled rows (M, V)."""
    from ..kernels.hidden_stats import feature_map_loss_forward_numpy, row_moments_numpy
    from ..kernels.soft_targets import soft_target_ce_forward_numpy

    f32 = np.float32
    N, H, A, V = B * T, cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size

    def r(*shape):
        return rng.standard_normal(shape, dtype=f32)

    a, b = r(N, H), r(N, H)
    w = np.full(N, 1.0 / (N * H))
    _, *stats = feature_map_loss_forward_numpy(a, b, 1e-12, w)
    mu, _ = row_moments_numpy(a)
    cases = [("feature_map_loss_forward", "fwd", f"FMT [{N},{H}]", (a, b, 1e-12, w)),
             ("feature_map_loss_backward", "bwd", f"FMT [{N},{H}]", (a, b, *stats, 2.0 * w)),
             ("row_moments", "fwd", f"mean/var transfer [{N},{H}]", (a,)),
             ("row_moments_backward", "bwd", f"mean/var transfer [{N},{H}]", (a, mu, r(N).astype(np.float64),
                                                                             r(N).astype(np.float64)))]
    R = B * A * T
    s_s, s_t = r(R, T), r(R, T)
    none = np.zeros(0, np.int64)
    w = np.full(R, 1.0 / R)
    _, st = soft_target_ce_forward_numpy(s_s, s_t, none, 0.0, 1.0, None, 1, w, False)
    cases += [("soft_target_ce_forward", "fwd", f"attention transfer [{R},{T}]",
               (s_s, s_t, none, 0.0, 1.0, None, 1, w, False)),
              ("soft_target_ce_backward", "bwd", f"attention transfer [{R},{T}]",
               (s_s, s_t, none, 0.0, 1.0, None, 1, st, w))]
    M = max(1, int(round(MLM_FRACTION * N)))
    l_s, l_t = r(M, V), r(M, V)
    labels = rng.integers(0, V, M)
    w = np.full(M, 1.0 / (M + 1e-5))
    _, st = soft_target_ce_forward_numpy(l_s, l_t, labels, 0.5, 1.0, None, 1, w, False)
    cases += [("soft_target_ce_forward", "fwd", f"MLM distillation [{M},{V}]",
               (l_s, l_t, labels, 0.5, 1.0, None, 1, w, False)),
              ("soft_target_ce_backward", "bwd", f"MLM distillation [{M},{V}]",
               (l_s, l_t, labels, 0.5, 1.0, None, 1, st, w))]
    return cases


def _distillation_losses(model, teacher_out, ids, labels):
    """FMT, AT, mean/variance transfer and MLM distillation of ``model`` against ``teacher_out``."""
    from .. import distill

    out = model.forward(ids, labels=labels, output_hidden_states=True, output_attention_scores=True,
                        mlm_positions="labelled", keep_cache=False)
    distill.feature_map_transfer_backward(1.0, distill.feature_map_transfer_forward(
        out.hidden_states[1], teacher_out.hidden_states[1])[1])
    distill.mean_variance_transfer_backward(1.0, 1.0, distill.mean_variance_transfer_forward(
        out.hidden_states[1], teacher_out.hidden_states[1])[1])
    distill.attention_transfer_backward(1.0, distill.attention_transfer_forward(
        out.attention_scores[0], teacher_out.attention_scores[0])[1])
    y = labels.reshape(-1)[out.mlm_positions]
    distill.mlm_distillation_backward(1.0, distill.mlm_distillation_forward(
        out.prediction_logits, out.prediction_logits + 1.0, y)[1])


def kernels_used(cfg):
    """Names of the kernels one training step (+ AdamW), one inference pass and the distillation
    losses call, on a one-layer, 2x8-token model of ``cfg``'s layout (spied through
    ``Kernel.__call__``)."""
    from ..kernels import _jit
    from ..model import MobileBertForPreTraining
    from ..optim import AdamW

    small = cfg.replace(num_hidden_layers=1)
    model = MobileBertForPreTraining(small, seed=0)
    ids, labels, nsp = make_batch(small, 2, 8)
    used, original = set(), _jit.Kernel.__call__

    def spy(self, *args, **kwargs):
        used.add(self.name)
        return original(self, *args, **kwargs)

    _jit.Kernel.__call__ = spy
    try:
        model.forward(ids, labels=labels, next_sentence_label=nsp)
        model.backward()
        AdamW(model.store, lr=1e-4).step()
        model.eval().forward(ids, keep_cache=False)
        teacher_out = model.forward(ids, output_hidden_states=True, output_attention_scores=True, keep_cache=False)
        _distillation_losses(model, teacher_out, ids, labels)
    finally:
        _jit.Kernel.__call__ = original
    return used


def worker_kernels(spec) -> dict:
    """Each registered kernel, Numba against its NumPy twin, at the shapes of ``spec['size']``."""
    from .. import distill, optim  # noqa: F401  (register the distillation losses' and optimizers' kernels)
    from ..kernels import REGISTRY

    cfg, B, T = size_config(spec["size"])
    used = kernels_used(cfg)
    rows = []
    for name, kind, shape, args in _kernel_cases(cfg, B, T, np.random.default_rng(0)):
        if name not in REGISTRY:
            continue
        k = REGISTRY[name]
        t_numba = time_adaptive(lambda: k.numba(*args), spec["budget_s"], spec["min_reps"])
        t_twin = time_adaptive(lambda: k.numpy(*args), spec["budget_s"], spec["min_reps"])
        rows.append({"kernel": name, "pass": kind, "shape": shape, "used_by_model": name in used,
                     "numba_kernel": name not in NOT_NUMBA,
                     "numba": t_numba, "numpy": t_twin, "speedup": t_twin["median"] / t_numba["median"]})
    measured = {r["kernel"] for r in rows}
    missing = sorted(set(REGISTRY) - measured)  # registered by someone later, no recipe here yet
    return {"size": spec["size"], "rows": rows, "no_recipe": missing, "used": sorted(used)}


# The JIT worker must not import tinymobilebert before its clock starts, so it is a script.
_JIT_SCRIPT = r"""
import json
import sys
import time

t0 = time.perf_counter()
import tinymobilebert  # noqa: F401
from tinymobilebert.benchmark.measure import make_batch, size_config
from tinymobilebert.model import MobileBertForPreTraining
from tinymobilebert.optim import AdamW
t_import = time.perf_counter() - t0

def compiled():
    import numba
    from numba.core.dispatcher import Dispatcher
    n = d = 0
    for name, mod in list(sys.modules.items()):
        if name.startswith("tinymobilebert") and mod is not None:
            for obj in vars(mod).values():
                if isinstance(obj, Dispatcher):
                    d += 1
                    n += len(obj.signatures)
    return d, n

dispatchers, sigs_import = compiled()
cfg, B, T = size_config(sys.argv[1])
ids, labels, nsp = make_batch(cfg, B, T)
t1 = time.perf_counter()
model = MobileBertForPreTraining(cfg, seed=0)
opt = AdamW(model.store, lr=1e-4)
model.forward(ids, labels=labels, next_sentence_label=nsp)
model.backward()
opt.step()
opt.zero_grad()
t_step = time.perf_counter() - t1
_, sigs_step = compiled()
print("@@BENCH@@" + json.dumps({"import_s": t_import, "first_step_s": t_step, "dispatchers": dispatchers,
      "signatures_after_import": sigs_import, "signatures_after_step": sigs_step}))
"""


def worker_entry(kind: str, spec_json: str) -> None:
    """Subprocess entry point: run one worker, print its result as the last line."""
    spec = json.loads(spec_json)
    from .distill_step import worker_distill
    from .dynabert import worker_dynabert
    from .token_dropping import worker_token_dropping

    fn = {"step": worker_step, "peak": worker_peak, "kernels": worker_kernels, "distill": worker_distill,
          "dynabert": worker_dynabert, "token_dropping": worker_token_dropping}[kind]
    print("@@BENCH@@" + json.dumps(fn(spec)), flush=True)


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker_env(threads, **extra) -> dict:
    """The environment every worker gets: one thread count for BLAS, OpenMP, torch and our kernels
    ("auto": the usable CPUs, which the worker's tuner then lowers when that is faster)."""
    if threads == "auto":
        threads = len(os.sched_getaffinity(0))
    env = dict(os.environ)
    for var in THREAD_ENV_VARS:
        env[var] = str(threads)
    env.pop("TINYMOBILEBERT_NUMPY_KERNELS", None)  # the twins column turns them on itself
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_parent(), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_worker(kind: str, spec: dict, threads, timeout: float = 1800, **env_extra) -> dict:
    """Run a worker in a fresh Python process; returns its dict (plus ``wall_s``) or ``{"error": ...}``."""
    if kind == "jit":
        cmd = [sys.executable, "-c", _JIT_SCRIPT, spec["size"]]
    else:
        cmd = [sys.executable, "-c", "import sys; from tinymobilebert.benchmark.workers import worker_entry; "
               "worker_entry(sys.argv[1], sys.argv[2])", kind, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=worker_env(threads, **env_extra), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("@@BENCH@@"):
            return {**json.loads(line[len("@@BENCH@@"):]), "wall_s": wall}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"worker {kind} exited with {proc.returncode}: " + " | ".join(tail)}
