"""The benchmark run: every measurement, merged over rounds, and the ratios between implementations."""

from __future__ import annotations

import importlib.util
import os
import tempfile

from .contention import contention_ratios, run_contention
from .dynabert import LAYOUTS as DYNABERT_LAYOUTS
from .dynabert import dynabert_sizes, dynabert_targets
from .measure import DEFAULT_SIZES, IMPLS, MLM_FRACTION, MODES, SIZES, TARGET_INFER_VS_TORCH, TARGET_KERNEL_SPEEDUP, TARGET_PAPER_FRACTION_OF_PEAK, TARGET_TRAIN_VS_TORCH, TARGET_WARM_FIRST_STEP_S, TORCH_SKIPPED, cpu_pressure_avg10, size_config, summarize, wait_until_quiet
from .token_dropping import merge_token_dropping, token_dropping_targets
from .distill_step import DISTILL_SIZES, TARGET_DISTILL_MEMORY_VS_TORCH, TARGET_DISTILL_VS_TORCH, TEACHER_NOTE
from .workers import run_worker


# ------------------------------------------------------------------------------ the run


def machine_info(threads: int) -> dict:
    """CPU model, cores, library versions, BLAS; torch's version without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    from ..machine import describe

    def ver(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {**describe(), "usable_cpus": len(os.sched_getaffinity(0)), "threads": threads, "torch": ver("torch"),
            "transformers": ver("transformers"), "loadavg_start": os.getloadavg()}


def torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def flops(size: str) -> dict:
    """Training-step and forward FLOPs at a size: MLM logits at every position (the work done)
    and at the labelled 15% only (the useful work)."""
    from ..costs import forward_flops, training_step_flops

    cfg, B, T = size_config(size)
    return {"train_all": training_step_flops(cfg, B, T, 1.0), "train_useful": training_step_flops(cfg, B, T, MLM_FRACTION),
            "infer_all": forward_flops(cfg, B, T, 1.0), "infer_useful": forward_flops(cfg, B, T, MLM_FRACTION)}


def merge_times(a: dict, b: dict) -> dict:
    """Two ``time_calls`` summaries as one: all samples, plus each round's median."""
    out = summarize(a["samples"] + b["samples"])
    out["round_medians"] = a.get("round_medians", [a["median"]]) + [b["median"]]
    for key in ("cpu_per_call", "cpu_stall"):
        if key in a and key in b:
            out[key] = (a[key] * a["n"] + b[key] * b["n"]) / (a["n"] + b["n"])
    return out


def merge_rounds(a: dict, b: dict) -> dict:
    """One measurement (a step, or the kernel table) from two rounds: samples pooled, memory
    peaks the larger of the two. An error in either round is kept."""
    if "error" in a or "error" in b:
        return a if "error" in a else b
    if "rows" in a:  # the kernel table
        rows = [{**rb, "numba": merge_times(ra["numba"], rb["numba"]), "numpy": merge_times(ra["numpy"], rb["numpy"])}
                for ra, rb in zip(a["rows"], b["rows"])]
        for row in rows:
            row["speedup"] = row["numpy"]["median"] / row["numba"]["median"]
        return {**b, "rows": rows}
    out = {**b, "time": merge_times(a["time"], b["time"])}
    for key in ("peak_rss_mb", "peak_over_model_mb"):
        out[key] = max(a[key], b[key])
    return out


def run_benchmark(sizes=DEFAULT_SIZES, impls=IMPLS, repeats=None, quick=False, threads=None, kernels=True,
                  jit=True, wait_quiet=0.0, rounds=1, log=print, contention=(), competitor="spin",
                  dynabert=True, distill_sizes=None, token_dropping=True) -> dict:
    """Run everything; returns the raw results and the ratios (see ``ratios``).

    ``rounds``: run the whole sweep of steps (and kernels) this many times, interleaved, and pool
    the samples, so a slow spell on a shared machine does not land on one implementation only.
    ``wait_quiet``: before each measurement, wait up to this many seconds for the machine's CPU
    pressure to fall below 10% (see ``wait_until_quiet``).
    ``threads``: a number for every implementation, or "auto": ours choose by timing steps
    (``tinymobilebert.threads``), PyTorch runs at the usable CPUs.
    ``contention``: sizes whose training step is also measured with one ``competitor`` process
    busy (``benchmark.contention``). ``distill_sizes``: sizes of the distillation step
    (``distill_step.py``; default: those of ``DISTILL_SIZES`` in ``sizes``).
    ``token_dropping``: also time our training step with token dropping against plain
    (``benchmark.token_dropping``).
    """
    if distill_sizes is None:
        distill_sizes = tuple(s for s in sizes if s in DISTILL_SIZES)
    auto = threads == "auto"
    threads = len(os.sched_getaffinity(0)) if (auto or not threads) else int(threads)
    have_torch = torch_available()
    res = {"machine": machine_info(threads), "settings": {"sizes": list(sizes), "impls": list(impls),
           "quick": quick, "repeats": repeats, "rounds": rounds, "threads": "auto" if auto else threads,
           "dtype": "float32", "wait_quiet_s": wait_quiet, "contention": list(contention), "competitor": competitor},
           "steps": {}}

    def wait():
        return wait_until_quiet(wait_quiet) if wait_quiet else {"cpu_pressure_avg10": cpu_pressure_avg10()}

    def measure(kind, spec, **env):
        """``run_worker``, after a quiet moment if asked; notes the CPU pressure before it."""
        quiet = wait()
        return {**run_worker(kind, spec, threads, **env), "before": quiet}

    def record(where: dict, key: str, entry: dict):
        where[key] = merge_rounds(where[key], entry) if key in where else entry

    log(f"[bench] matmul peak ({threads} threads)")
    peak_spec = {"sizes": [1024] if quick else [2048, 3072], "repeats": 2 if quick else 4, "threads": threads,
                 "torch": have_torch and "pytorch" in impls and not quick}
    res["matmul_peak"] = measure("peak", peak_spec)
    for size in sizes:
        s = SIZES[size]
        res["steps"][size] = {"flops": flops(size), "batch": s["batch"], "seq_len": s["seq_len"]}
        for impl in IMPLS:
            if impl not in impls or (impl == "pytorch" and not have_torch):
                for mode in MODES:
                    skipped = "skipped (not in --impls)" if impl not in impls else TORCH_SKIPPED
                    res["steps"][size][f"{impl}/{mode}"] = {"skipped": skipped}
    for rnd in range(rounds):
        for size in sizes:
            s = SIZES[size]
            reps = repeats or (2 if quick else s["repeats"])
            warm = 1 if quick else s["warmup"]
            for impl in impls:
                for mode in MODES:
                    if impl == "pytorch" and not have_torch:
                        continue
                    log(f"[bench] round {rnd + 1}/{rounds} {size:5s} {impl:14s} {mode} x{reps}")
                    spec = {"impl": impl, "size": size, "mode": mode, "warmup": warm, "repeats": reps,
                            "threads": "auto" if auto and impl != "pytorch" else threads}
                    record(res["steps"][size], f"{impl}/{mode}", measure("step", spec))
            if token_dropping and "tinymobilebert" in impls:
                log(f"[bench] round {rnd + 1}/{rounds} {size:5s} token dropping vs plain x{reps}")
                entry = measure("token_dropping", {"size": size, "warmup": warm, "repeats": reps})
                where = res.setdefault("token_dropping", {})
                where[size] = merge_token_dropping(where[size], entry) if size in where else entry
        for size in distill_sizes:  # the distillation step: ours and PyTorch's only (no twins column)
            s = SIZES[size]
            reps = repeats or (2 if quick else s["repeats"])
            for impl in ("tinymobilebert", "pytorch"):
                if impl not in impls or (impl == "pytorch" and not have_torch):
                    continue
                log(f"[bench] round {rnd + 1}/{rounds} {size:5s} {impl:14s} distillation step x{reps}")
                spec = {"impl": impl, "size": size, "warmup": 1 if quick else s["warmup"], "repeats": reps,
                        "threads": threads}
                record(res.setdefault("distill", {"teacher": TEACHER_NOTE}).setdefault(size, {}), impl,
                       measure("distill", spec))
        if kernels:
            ksize = max(sizes, key=lambda n: flops(n)["train_all"])
            log(f"[bench] round {rnd + 1}/{rounds} kernels at the shapes of {ksize}")
            record(res, "kernels", measure("kernels", {"size": ksize, "budget_s": 0.05 if quick else 0.3,
                                                        "min_reps": 1 if quick else 3}))
        if contention:
            cont = run_contention(contention, threads, competitor, lambda spec: run_worker("step", spec, threads),
                                  wait, None if "pytorch" in impls and have_torch else
                                  ("skipped (not in --impls)" if have_torch else TORCH_SKIPPED), quick, repeats, log)
            if "contention" in res:  # pool the rounds, entry by entry
                for size in contention:
                    for impl, e in cont[size].items():
                        old = res["contention"][size][impl]
                        if "skipped" not in e:
                            cont[size][impl] = {k: merge_rounds(old[k], e[k]) for k in ("quiet", "busy")}
            res["contention"] = cont
    if dynabert and "tinymobilebert" in impls:  # once, after the rounds (see benchmark/dynabert.py)
        res["dynabert"] = {}
        for size in dynabert_sizes(sizes):
            log(f"[bench] dynabert {size}: extracted sub-networks and the supernet at (w, d), "
                f"{' and '.join(DYNABERT_LAYOUTS)}")
            reps = repeats or (2 if quick else max(3, SIZES[size]["repeats"] // 2))
            got = measure("dynabert", {"layouts": list(DYNABERT_LAYOUTS), "size": size, "warmup": 1, "repeats": reps})
            for layout in DYNABERT_LAYOUTS:
                key = f"{layout}/{size}"
                res["dynabert"][key] = got[key] if key in got else {"error": got.get("error", "not measured")}
    if jit:
        with tempfile.TemporaryDirectory(prefix="tmb-numba-cache-") as cache:
            log("[bench] JIT cold (empty NUMBA_CACHE_DIR)")
            cold = measure("jit", {"size": "tiny"}, NUMBA_CACHE_DIR=cache)
            log("[bench] JIT warm (same cache dir)")
            warm = measure("jit", {"size": "tiny"}, NUMBA_CACHE_DIR=cache)
        res["jit"] = {"size": "tiny", "cold": cold, "warm": warm}
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["ratios"], res["targets"] = ratios(res)
    return res


# ------------------------------------------------------------------------------ ratios


def _median(entry):
    return entry["time"]["median"] if entry and "time" in entry else None


def _div(a, b):
    return a / b if a is not None and b else None


def ratios(res):
    """Derived numbers: per size and mode, ours / torch, ours / twins, fractions of the matmul
    peak, memory ratios; plus the list of targets with pass/miss."""
    peak = res.get("matmul_peak", {})
    numpy_peak = max((v for k, v in peak.items() if k.startswith("numpy_")), default=None)
    out, targets = {"matmul_peak_gflops": numpy_peak}, []

    def target(name, value, limit, at_most=True):
        ok = None if value is None else (value <= limit if at_most else value >= limit)
        targets.append({"target": name, "value": value, "limit": limit, "at_most": at_most, "pass": ok})

    for size, st in res["steps"].items():
        out[size] = {}
        for mode in MODES:
            ours, twin, torch = (st.get(f"{i}/{mode}") for i in IMPLS)
            t_ours = _median(ours)
            r = {"ours_vs_torch": _div(t_ours, _median(torch)), "ours_vs_twins": _div(t_ours, _median(twin))}
            for impl, e in zip(IMPLS, (ours, twin, torch)):
                t = _median(e)
                # the FLOPs each implementation performs: ours trains with the MLM head at the
                # labelled positions only; transformers computes logits at every position
                done = "useful" if (mode == "train" and impl != "pytorch") else "all"
                r[f"{impl}_fraction_of_peak"] = _div(_div(st["flops"][f"{mode}_{done}"], t), numpy_peak and numpy_peak * 1e9)
                r[f"{impl}_useful_fraction_of_peak"] = _div(_div(st["flops"][f"{mode}_useful"], t),
                                                           numpy_peak and numpy_peak * 1e9)
            has_mem = all(e and "peak_rss_mb" in e for e in (ours, torch))
            r["peak_rss_vs_torch"] = _div(ours["peak_rss_mb"], torch["peak_rss_mb"]) if has_mem else None
            r["peak_over_model_vs_torch"] = (_div(ours["peak_over_model_mb"], torch["peak_over_model_mb"])
                                             if has_mem else None)
            out[size][mode] = r
            if mode == "train" and size in TARGET_TRAIN_VS_TORCH:
                target(f"{size} train step <= {TARGET_TRAIN_VS_TORCH[size]}x PyTorch", r["ours_vs_torch"],
                       TARGET_TRAIN_VS_TORCH[size])
            if mode == "infer" and size in TARGET_TRAIN_VS_TORCH:
                target(f"{size} inference <= {TARGET_INFER_VS_TORCH}x PyTorch", r["ours_vs_torch"], TARGET_INFER_VS_TORCH)
        if size == "paper":
            target("paper train step >= 60% of matmul peak", out[size]["train"]["tinymobilebert_fraction_of_peak"],
                   TARGET_PAPER_FRACTION_OF_PEAK, at_most=False)
            target("paper train peak RSS <= PyTorch's", out[size]["train"]["peak_rss_vs_torch"], 1.0)
            target("paper train peak-over-model RSS <= PyTorch's", out[size]["train"]["peak_over_model_vs_torch"], 1.0)
    for size, st in res.get("distill", {}).items():
        if size == "teacher":
            continue
        ours, torch = st.get("tinymobilebert"), st.get("pytorch")
        t = _div(_median(ours), _median(torch))
        mem = _div(ours and ours.get("peak_rss_mb"), torch and torch.get("peak_rss_mb"))
        out.setdefault("distill", {})[size] = {"ours_vs_torch": t, "peak_rss_vs_torch": mem}
        target(f"{size} distillation step <= {TARGET_DISTILL_VS_TORCH}x PyTorch", t, TARGET_DISTILL_VS_TORCH)
        target(f"{size} distillation step peak RSS <= {TARGET_DISTILL_MEMORY_VS_TORCH}x PyTorch's", mem,
               TARGET_DISTILL_MEMORY_VS_TORCH)
    for row in res.get("kernels", {}).get("rows", []):
        if row["used_by_model"] and row.get("numba_kernel", True):
            target(f"kernel {row['kernel']} [{row['shape']}] >= 2x twin", row["speedup"], TARGET_KERNEL_SPEEDUP,
                   at_most=False)
    for name, value, limit in token_dropping_targets(res):
        target(name, value, limit)
    if "contention" in res:
        out["contention"], cont_targets = contention_ratios(res["contention"])
        for name, value, limit in cont_targets:
            target(name, value, limit)
    dynabert_targets(res, target)
    warm = res.get("jit", {}).get("warm", {})
    if "import_s" in warm:
        target("warm import + first tiny step <= 3 s", warm["import_s"] + warm["first_step_s"], TARGET_WARM_FIRST_STEP_S)
    return out, targets
