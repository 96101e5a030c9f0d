"""Regenerate the README's demo figures (and times) from the current code.

    python benchmarks/readme_figures.py --threads 2 --tests     # demo + test suite, timed: ~7 minutes
    python benchmarks/readme_figures.py --threads 1 --no-times  # figures only (on a busy machine)
    python benchmarks/readme_figures.py --render-only           # re-write the README from the saved results

Runs ``python -m tinymobilebert demo`` in a fresh folder (``--out`` is removed first, so the
teacher is trained, and timed, as on a first run) (and, with ``--tests``, ``python -m pytest
-q``) in fresh processes with every thread pool (BLAS, OpenMP, Numba) set to ``--threads``,
saves the demo's summary (figures, machine, versions), the wall-clock times and the commit to
``benchmarks/demo_figures.json``, and rewrites the README paragraph between the
``demo-figures`` markers from it. ``tests/test_readme.py`` checks that the README paragraph is
the rendering of that file. Times are only worth printing from a machine with nothing else
running: use ``--no-times`` otherwise. A different thread count gives slightly different
figures: BLAS splits its float32 sums between threads, so they are added in another order.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinymobilebert.demo import update_readme  # noqa: E402
from tinymobilebert.threads import THREAD_ENV_VARS  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "demo_figures.json")
DEFAULT_OUT = os.path.join(ROOT, "runs", "readme-demo")


def commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=10"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for BLAS, OpenMP and Numba (default 2)")
    ap.add_argument("--tests", action="store_true", help="also time `python -m pytest -q`")
    ap.add_argument("--no-times", action="store_true", help="print no times in the README (a busy machine)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="the demo's run folder (a new one: it starts afresh)")
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    ap.add_argument("--results", default=RESULTS, help=f"where the results go (default {RESULTS})")
    ap.add_argument("--render-only", action="store_true", help="re-write the README from --results; run nothing")
    args = ap.parse_args(argv)
    if not args.render_only:
        if os.path.exists(args.out) and os.path.abspath(args.out) != DEFAULT_OUT:
            sys.exit(f"--out {args.out} exists: the figures need a first demo (the teacher trained too), and this "
                     "script deletes only its own default folder; give a new folder")
        env = {**os.environ, **{k: str(args.threads) for k in THREAD_ENV_VARS}, "PYTHONPATH": ROOT}
        load_before = os.getloadavg()
        shutil.rmtree(args.out, ignore_errors=True)  # a first run: the teacher is trained too
        demo_seconds = timed([sys.executable, "-m", "tinymobilebert", "demo", "--out", args.out,
                              "--threads", str(args.threads), "--no-progress"], env)
        test_seconds = timed([sys.executable, "-m", "pytest", "-q"], env) if args.tests else None
        with open(os.path.join(args.out, "summary.json")) as f:
            summary = json.load(f)
        results = {"summary": summary, "threads": args.threads, "demo_seconds": demo_seconds,
                   "test_seconds": test_seconds, "timed": not args.no_times, "commit": commit(),
                   "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                   "command": "python benchmarks/readme_figures.py " + " ".join(argv or sys.argv[1:])}
        from tinymobilebert.atomic import write_text_atomic

        write_text_atomic(args.results, json.dumps(results, indent=2, sort_keys=True) + "\n")
    with open(args.results) as f:
        results = json.load(f)
    update_readme(args.readme, results)
    print(f"{args.readme}: demo figures from {args.results} (threads {results['threads']}, {results['commit']})")


if __name__ == "__main__":
    main()
