"""The contention rows: a training step while one other busy process runs, ours against PyTorch.

On a laptop with a browser open, or a CI box running tests in parallel, a step shares the cores.
Three implementations run a training step quiet and then with one competitor (started fresh
for each measurement, killed after it):

    tinymobilebert (auto)   threads chosen by timing steps (``tinymobilebert.threads``)
    tinymobilebert (N)      N = --threads fixed, as before this row existed
    pytorch (N)             transformers + torch.set_num_threads(N), as PyTorch runs by default

The competitor is one process that keeps one core busy: ``spin`` (a Python loop) or ``blas``
(single-threaded float32 products, which also compete for the memory bandwidth). Reported: each
median quiet and busy, and the slowdown busy / quiet. Targets (information, not assertions):
ours (auto) at most 2x slower with one competitor on 2 cores, and no slower than the fixed
count on a quiet machine (within 5%).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

COMPETITORS = {
    "spin": "while True:\n    pass\n",
    "blas": "import numpy as np\na = np.ones((384, 384), np.float32)\nwhile True:\n    a @ a\n",
}
TARGET_BUSY_SLOWDOWN = 2.0
TARGET_AUTO_QUIET = 1.05  # ours (auto) quiet / ours (fixed) quiet
IMPLS = ("tinymobilebert/auto", "tinymobilebert/fixed", "pytorch")


@contextlib.contextmanager
def competitor(kind: str):
    """One busy process for the duration of the block (None: no competitor)."""
    if kind is None:
        yield None
        return
    if kind not in COMPETITORS:
        raise ValueError(f"competitor must be one of {sorted(COMPETITORS)}, got {kind!r}")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[kind]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def run_contention(sizes, threads: int, kind: str, run_step, wait, torch_skipped, quick: bool, repeats=None,
                   log=print) -> dict:
    """{size: {impl: {"quiet": step entry, "busy": step entry}}, "competitor", "threads"}.

    ``run_step(spec)`` runs one step worker (``run_worker``); ``wait()`` waits for a quiet machine
    (or returns at once) and is called before each measurement, before the competitor starts.
    ``torch_skipped``: why PyTorch is not measured (None: it is). Each implementation's quiet and
    busy measurements run back to back.
    """
    from .measure import SIZES

    out = {"competitor": kind, "threads": threads}
    for size in sizes:
        s = SIZES[size]
        reps = repeats or (3 if quick else s["repeats"])
        warm = 1 if quick else s["warmup"]
        out[size] = {}
        for impl in IMPLS:
            if impl == "pytorch" and torch_skipped:
                out[size][impl] = {"skipped": torch_skipped}
                continue
            spec = {"impl": impl.split("/")[0], "size": size, "mode": "train", "warmup": warm, "repeats": reps,
                    "threads": "auto" if impl.endswith("/auto") else threads}
            entry = {}
            for busy in (False, True):
                log(f"[bench] contention {size:5s} {impl:22s} {'busy' if busy else 'quiet'} x{reps}")
                before = wait()
                with competitor(kind if busy else None):
                    entry["busy" if busy else "quiet"] = {**run_step(spec), "before": before}
            out[size][impl] = entry
    return out


def _median(e):
    return e["time"]["median"] if e and "time" in e else None


def contention_ratios(cont: dict) -> tuple[dict, list]:
    """({size: {impl: slowdown}}, [(target name, value, limit)]) from ``run_contention``'s result."""
    ratios, targets = {}, []
    for size, rows in cont.items():
        if size in ("competitor", "threads"):
            continue
        ratios[size] = {}
        for impl, e in rows.items():
            q, b = _median(e.get("quiet")), _median(e.get("busy"))
            ratios[size][impl] = b / q if q and b else None
        auto = ratios[size].get("tinymobilebert/auto")
        targets.append((f"{size} train with 1 busy competitor <= {TARGET_BUSY_SLOWDOWN}x quiet (ours, auto threads)",
                        auto, TARGET_BUSY_SLOWDOWN))
        qa, qf = (_median(rows.get(i, {}).get("quiet")) for i in ("tinymobilebert/auto", "tinymobilebert/fixed"))
        targets.append((f"{size} train quiet, auto threads <= {TARGET_AUTO_QUIET}x fixed threads",
                        qa / qf if qa and qf else None, TARGET_AUTO_QUIET))
    return ratios, targets


def format_contention(cont: dict, ratios: dict) -> list[str]:
    """The report's lines for the contention rows."""
    what = "a Python spin loop" if cont["competitor"] == "spin" else "single-threaded float32 products"
    lines = [f"Contention: a training step with one competing busy process ({cont['competitor']}: {what}), median ms;",
             "slowdown = busy / quiet; PyTorch as it runs by default (fixed threads); target: ours (auto) <= "
             f"{TARGET_BUSY_SLOWDOWN:g}x",
             f"{'size':6s} {'implementation':26s} {'quiet':>9s} {'busy':>9s} {'slowdown':>9s}  threads quiet / busy"]
    n = cont["threads"]
    for size, rows in cont.items():
        if size in ("competitor", "threads"):
            continue
        for impl, e in rows.items():
            label = {"tinymobilebert/auto": "tinymobilebert (auto)", "tinymobilebert/fixed": f"tinymobilebert ({n})",
                     "pytorch": f"pytorch ({n})"}[impl]
            if "skipped" in e:
                lines.append(f"{size:6s} {label:26s} {e['skipped']}")
                continue
            cells = []
            for key in ("quiet", "busy"):
                x = e.get(key, {})
                cells.append("error" if "error" in x else f"{x['time']['median'] * 1e3:.1f}")
            chosen = " / ".join(str(e[k].get("threads_chosen", n)) for k in ("quiet", "busy") if "error" not in e[k])
            r = ratios[size][impl]
            mark = ""
            if impl == "tinymobilebert/auto" and r is not None:
                mark = "  pass" if r <= TARGET_BUSY_SLOWDOWN else "  MISS"
            lines.append(f"{size:6s} {label:26s} {cells[0]:>9s} {cells[1]:>9s} "
                         f"{(f'{r:.2f}x' if r else '-'):>9s}  {chosen}{mark}")
    return lines
