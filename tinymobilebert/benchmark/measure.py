"""Benchmark sizes, batches and timing helpers (wall clock, CPU time, CPU pressure, memory).

``call_times`` is the package's one way to time a function's calls after warm-up: the
benchmark's ``time_calls`` / ``time_adaptive``, DynaBERT's ``measure_latency`` and the demo's
``inference_latency_ms`` all use it (each keeps its own statistic: all report the median).
"""

from __future__ import annotations

import gc
import os
import statistics
import time

import numpy as np


# ------------------------------------------------------------------------------ sizes

SIZES = {
    # a smoke-test size (tests/test_benchmark.py); not part of the default run
    "micro": dict(config=dict(vocab_size=128, hidden_size=32, embedding_size=16, intra_bottleneck_size=16,
                              num_attention_heads=4, intermediate_size=32, num_hidden_layers=2,
                              num_feedforward_networks=2), batch=4, seq_len=16, repeats=3, warmup=1),
    "tiny": dict(config=dict(vocab_size=1024, hidden_size=128, embedding_size=64, intra_bottleneck_size=32,
                             num_attention_heads=4, intermediate_size=128, num_hidden_layers=4,
                             num_feedforward_networks=2), batch=16, seq_len=64, repeats=10, warmup=3),
    "small": dict(config=dict(vocab_size=8192, hidden_size=256, embedding_size=128, intra_bottleneck_size=64,
                              num_attention_heads=4, intermediate_size=256, num_hidden_layers=6,
                              num_feedforward_networks=4), batch=16, seq_len=64, repeats=7, warmup=2),
    "paper": dict(config=None, batch=8, seq_len=128, repeats=3, warmup=1),  # config.mobilebert()
}
DEFAULT_SIZES = ("tiny", "small", "paper")
IMPLS = ("tinymobilebert", "numpy-twins", "pytorch")
MODES = ("train", "infer")
MLM_FRACTION = 0.15  # labelled positions; our training step runs the MLM head only there
TORCH_SKIPPED = "skipped (torch/transformers not installed)"
# A measurement during which tasks waited for a CPU > 50% of the time is marked "!". Not 0: our
# own step reaches ~25% at small sizes (OpenBLAS workers spin while the kernel pool runs).
NOISY_STALL = 0.50
# targets (informational markers, never assertions)
TARGET_TRAIN_VS_TORCH = {"tiny": 0.8, "small": 0.8, "paper": 1.0}
TARGET_INFER_VS_TORCH = 0.8
TARGET_PAPER_FRACTION_OF_PEAK = 0.60
TARGET_KERNEL_SPEEDUP = 2.0
TARGET_WARM_FIRST_STEP_S = 3.0


def size_config(name: str):
    """(MobileBertConfig, B, T) of a named size; other fields at transformers' defaults."""
    from ..config import MobileBertConfig, mobilebert

    s = SIZES[name]
    cfg = mobilebert() if s["config"] is None else MobileBertConfig(**s["config"])
    return cfg, s["batch"], s["seq_len"]


def make_batch(cfg, B: int, T: int, seed: int = 0):
    """Random ids (B, T), MLM labels (B, T) at 15% of positions (-100 elsewhere), NSP labels (B,)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, cfg.vocab_size, (B, T))
    labels = np.where(rng.random((B, T)) < MLM_FRACTION, rng.integers(1, cfg.vocab_size, (B, T)), -100)
    return ids, labels, rng.integers(0, 2, B)


# ------------------------------------------------------------------------------ measuring


def summarize(samples) -> dict:
    """Median, min, max and every sample (seconds)."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples), "samples": list(samples)}


def _cpu_s() -> float:
    import resource  # here, not at the top: demo and dynabert time with this module, and Windows has no resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_stall_us() -> int | None:
    """Total microseconds some task waited for a CPU (Linux pressure stall info), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_pressure_avg10() -> float | None:
    """% of the last 10 s during which some task on the machine waited for a CPU, or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split("avg10=", 1)[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_until_quiet(max_wait_s: float, threshold: float = 10.0) -> dict:
    """Sleep until the CPU pressure (avg10, %) drops below ``threshold``, at most ``max_wait_s``.

    On a shared machine another job's load slows every implementation differently (multi-threaded
    BLAS degrades the most), so the harness can wait for a quiet moment before each measurement.
    """
    t0, p = time.perf_counter(), cpu_pressure_avg10()
    while p is not None and p >= threshold and time.perf_counter() - t0 < max_wait_s:
        time.sleep(1.0)
        p = cpu_pressure_avg10()
    return {"waited_s": time.perf_counter() - t0, "cpu_pressure_avg10": p}


def call_times(fn, warmup: int, repeats: int, *, budget_s: float = 0.0, max_repeats: int | None = None,
               collect_garbage: bool = False, counters: dict | None = None, clock=None):
    """Seconds of each timed call of ``fn()``: ``warmup`` untimed calls first, then ``repeats``
    timed ones, then more while the timed calls add up to less than ``budget_s`` (at most
    ``max_repeats`` in all).

    ``collect_garbage``: run the garbage collector before each timed call, outside its time.
    ``counters``: {name: reader} of other counters (CPU seconds, ...) read right around each timed
    call; returns ``(samples, {name: summed difference})`` when given, else ``samples``.
    ``clock``: the wall clock (default ``time.perf_counter``; a test passes a fake one).
    """
    clock = time.perf_counter if clock is None else clock
    max_repeats = repeats if max_repeats is None else max_repeats
    for _ in range(warmup):
        fn()
    samples, totals = [], {name: 0 for name in counters or {}}
    while len(samples) < repeats or (sum(samples) < budget_s and len(samples) < max_repeats):
        if collect_garbage:
            gc.collect()
        before = {name: read() for name, read in (counters or {}).items()}
        t0 = clock()
        fn()
        samples.append(clock() - t0)
        for name, read in (counters or {}).items():
            totals[name] += read() - before[name]
    return samples if counters is None else (samples, totals)


def time_calls(fn, warmup: int, repeats: int) -> dict:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls (GC run between calls, not during).

    Besides wall-clock times (``summarize``: median, min, max), records this process's CPU seconds
    per call and the share of the timed wall time during which some task on the machine waited
    for a CPU (``cpu_stall``, from /proc/pressure/cpu): well above 0 means other load competed
    with the measurement.
    """
    counters = {"cpu": _cpu_s}
    if _cpu_stall_us() is not None:
        counters["stall_us"] = _cpu_stall_us
    samples, totals = call_times(fn, warmup, repeats, collect_garbage=True, counters=counters)
    out = summarize(samples)
    out["cpu_per_call"] = totals["cpu"] / repeats
    if "stall_us" in totals:
        out["cpu_stall"] = totals["stall_us"] / 1e6 / sum(samples)
    return out


def time_adaptive(fn, budget_s: float, min_reps: int = 3, max_reps: int = 50) -> dict:
    """One warm-up call, then repeat until ``budget_s`` is spent (at least ``min_reps`` calls)."""
    return summarize(call_times(fn, 1, min_reps, budget_s=budget_s, max_repeats=max_reps))


def rss_mb() -> float:
    """Current resident set size of this process (MB), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB; Linux reports ru_maxrss in KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
