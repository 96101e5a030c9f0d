"""The benchmark harness: tinymobilebert against its NumPy twins and transformers' PyTorch model.

    python benchmarks/bench.py [--sizes tiny,small,paper] [--json out.json] [--repeats N] [--quick]
    python benchmarks/bench.py --report out.json        # re-print a saved run's table

Dimensions: B batch, T tokens, N = B*T rows, H hidden width, I block width, M FFN width,
E embedding width, A heads, V vocabulary.

What is measured, on one machine in one run, float32, same thread count everywhere:

* a training step (forward with MLM + NSP labels, backward, AdamW, zero_grad) and an inference
  forward pass (eval mode, no labels), for each size and implementation: ``tinymobilebert``,
  ``numpy-twins`` (the same code under ``use_numpy_twins()``) and ``pytorch`` (transformers'
  ``MobileBertForPreTraining``, eager attention, ``torch.optim.AdamW(foreach=True)``);
* each (implementation, size, mode) runs in a fresh subprocess, which also gives its peak
  resident memory (``ru_maxrss``) and the resident memory once the model is built;
* the float32 matrix-multiply peak of NumPy's BLAS, and the fraction of it each step reaches
  (FLOPs from ``tinymobilebert.costs``);
* every registered kernel, Numba against its NumPy twin, at the shapes of the largest size;
* our training step with token dropping (keep 0.5, default split) against the plain one, both
  in one worker, alternating (``benchmark/token_dropping.py``);
* JIT: import + first tiny training step with an empty Numba cache (cold) and again (warm),
  and a check that importing the package compiles nothing;
* a distillation step (teacher forward without gradients + student forward/backward + FMT/AT +
  LAMB) at the tiny and small sizes, ours against the same step on transformers' modules
  (``distill_step.py``, which also says which teacher layout both run);
* DynaBERT: inference of extracted sub-networks at every width x depth against their FLOPs, and
  the supernet run at (w, d) against the extracted model (``dynabert.py``).
* contention (``benchmark.contention``): the tiny and small training steps again with one busy
  competitor process, ours with threads chosen by timing and fixed, next to PyTorch.

Targets are printed as pass/miss markers; nothing here asserts a timing. Times are wall-clock
(``time.perf_counter``) after warm-up; we report the median, the min and the max of the repeats.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..atomic import write_text_atomic
from .measure import DEFAULT_SIZES, IMPLS, SIZES
from .report import format_report
from .run import ratios, run_benchmark
from .workers import worker_entry  # noqa: F401  (worker_entry: the subprocess entry point)


# ------------------------------------------------------------------------------ command line


def main(argv=None) -> dict:
    """``python benchmarks/bench.py`` / ``python -m tinymobilebert bench``."""
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help=f"comma list of {', '.join(SIZES)} (default: {','.join(DEFAULT_SIZES)}; "
                                                   "--quick: tiny)")
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"comma list of {', '.join(IMPLS)}")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per step (default: per size)")
    ap.add_argument("--quick", action="store_true", help="tiny only, 2 repeats, 1 warm-up, short kernel timings")
    ap.add_argument("--threads", default=None, metavar="N|auto",
                    help="threads for everything (default: usable CPUs); 'auto': ours choose by timing steps "
                         "(tinymobilebert.threads), PyTorch at the usable CPUs")
    ap.add_argument("--contention", default=None, metavar="SIZES",
                    help="sizes whose training step is also timed with one busy competitor process, ours (auto "
                         "and fixed threads) next to PyTorch (default: tiny and small among --sizes)")
    ap.add_argument("--no-contention", action="store_true", help="skip the contention rows")
    ap.add_argument("--competitor", choices=["spin", "blas"], default="spin",
                    help="the busy process: a Python spin loop (default) or single-threaded float32 products")
    ap.add_argument("--json", default=None, help="write raw numbers and ratios here")
    ap.add_argument("--no-kernels", action="store_true", help="skip the per-kernel comparison")
    ap.add_argument("--no-jit", action="store_true", help="skip the cold/warm JIT measurement")
    ap.add_argument("--no-token-dropping", action="store_true",
                    help="skip the training step with token dropping (keep 0.5) vs plain")
    ap.add_argument("--distill-sizes", default=None,
                    help="sizes of the distillation step (default: tiny and small among --sizes; '' for none)")
    ap.add_argument("--no-dynabert", action="store_true",
                    help="skip the DynaBERT row (extracted sub-networks vs the supernet, small and paper sizes)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole sweep, interleaved, and pool the "
                                                          "samples (steadier on a shared machine)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each measurement wait up to S seconds for CPU pressure < 10%% (shared machines)")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="measure nothing: print the table of a run saved with --json (ratios and targets "
                         "recomputed by this version)")
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            res = json.load(f)
        res["ratios"], res["targets"] = ratios(res)
        print(format_report(res))
        return res
    sizes = tuple(args.sizes.split(",")) if args.sizes else (("tiny",) if args.quick else DEFAULT_SIZES)
    impls = tuple(args.impls.split(","))
    if args.no_contention:
        contention = ()
    elif args.contention:
        contention = tuple(args.contention.split(","))
    else:
        contention = tuple(s for s in sizes if s in ("tiny", "small"))
    if args.threads not in (None, "auto") and not (args.threads.isdigit() and int(args.threads) >= 1):
        ap.error(f"--threads must be a number >= 1 or 'auto', got {args.threads!r}")
    distill_sizes = None if args.distill_sizes is None else tuple(x for x in args.distill_sizes.split(",") if x)
    for name, given, known in (("size", sizes, SIZES), ("implementation", impls, IMPLS),
                               ("contention size", contention, SIZES), ("distill size", distill_sizes or (), SIZES)):
        bad = [g for g in given if g not in known]
        if bad:
            ap.error(f"unknown {name} {bad}; choose from {', '.join(known)}")
    res = run_benchmark(sizes, impls, args.repeats, args.quick, args.threads, not args.no_kernels, not args.no_jit,
                        args.wait_quiet, args.rounds, log=lambda s: print(s, file=sys.stderr, flush=True),
                        distill_sizes=distill_sizes, dynabert=not args.no_dynabert, contention=contention,
                        competitor=args.competitor, token_dropping=not args.no_token_dropping)
    print(format_report(res))
    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":  # pragma: no cover
    main()
