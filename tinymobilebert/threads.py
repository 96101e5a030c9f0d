"""How many threads a step uses, and choosing that number by measurement on a busy machine.

Two thread pools do a step's work: OpenBLAS's (every matrix product, through NumPy and
``kernels.blas``) and the kernels' own (``kernels._jit.run_rows``; Numba's parallel layer too,
should anything start it). ``set_threads(n)`` sets all of them: BLAS through threadpoolctl, the
kernels through ``kernels._jit.set_num_threads``.

Why measure. OpenBLAS's threads wait for each other at the end of every product, spinning. On a
quiet machine 2 threads beat 1. With one other busy process on 2 cores, each of our threads is
descheduled in turn and the other spins waiting for it: a tiny training step went from 59 ms to
248 ms (4.2x; PyTorch 4.3x), where sharing the machine fairly would cost 1.5-2x. One thread
does not wait for anyone. Which is faster depends on the model, the machine and what else runs,
so ``ThreadTuner`` times it:

    warm-up   ``warmup_steps`` steps untimed (compilation, first-touch memory)
    probe     ``probe_steps`` steps at each candidate count (1 and the usable CPUs; also half of
              them on bigger machines), interleaved 2, 1, 2, 1, ... so a change of load hits
              every candidate alike; time per token of each step, median per candidate
    run       the fastest candidate; probe again every ``recheck_every`` steps, or when the
              median of the last ``window`` steps is ``jump`` times the probe's (load arrived)

A probe costs ``probe_steps`` steps at a slower count every few hundred steps (~1%). Times are
per unit of ``work`` (the caller passes tokens), so batches of different lengths compare.

Numerics: a different thread count sums in a different order (OpenBLAS splits products
differently; the kernels' partial sums), so results differ in the last bits between thread
counts and are bit-identical for the same count (README, "Reproducibility"). A run that chooses
by measurement may therefore differ from the same run on another day; fix the count
(``threads=N``, ``--threads N``) for bit-identical runs and exact resume.

Policies, as ``Trainer(threads=...)`` and ``--threads`` take them: ``None`` leaves the threads as
they are, an int sets that many, ``"auto"`` runs a ``ThreadTuner``. ``default_policy()`` is the
process's default: ``set_default_policy`` (the command line sets "auto"), else the environment
variable ``TINYMOBILEBERT_THREADS``, else None.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

from .kernels import _jit

_blas_libs = None  # threadpoolctl's controllers of the loaded BLAS libraries, found once
_default_policy = None


# Every pool's thread-count variable (BLAS, OpenMP, MKL, Numba, this package's kernels): what a
# script sets to run a child process at a fixed count.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                   "TINYMOBILEBERT_NUM_THREADS")


def available_cpus() -> int:
    """CPUs this process may run on."""
    return _jit._usable_cpus()


def _blas():
    global _blas_libs
    if _blas_libs is None:
        from threadpoolctl import ThreadpoolController

        _blas_libs = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_libs


def blas_threads() -> int | None:
    """Threads the loaded BLAS uses (the first library's count), or None without one."""
    libs = _blas()
    return libs[0].get_num_threads() if libs else None


def get_threads() -> dict:
    """{"blas": BLAS threads, "kernels": the kernels' thread count}."""
    return {"blas": blas_threads(), "kernels": _jit.num_threads()}


def set_threads(n: int) -> None:
    """Use ``n`` threads in BLAS, in the kernels and (if running) in Numba's parallel layer."""
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    for lib in _blas():
        lib.set_num_threads(n)  # ~1 us: cheap enough to switch between steps
    _jit.set_num_threads(n)
    try:
        import numba
        from numba.np.ufunc import parallel

        if getattr(parallel, "_is_initialized", False):  # never start it just for this
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def restored():
    """Restore the BLAS and kernel thread counts on leaving the block."""
    blas = [lib.get_num_threads() for lib in _blas()]
    kernels = _jit.get_num_threads_override()
    try:
        yield
    finally:
        for lib, n in zip(_blas(), blas):
            lib.set_num_threads(n)
        _jit.set_num_threads(kernels)


def check_policy(policy):
    """None, "auto" or an int >= 1 (strings of digits too); anything else is an error naming it."""
    if policy is None or policy == "auto":
        return policy
    try:
        n = int(policy)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or (isinstance(policy, float) and policy != n):
        raise ValueError(f"threads must be 'auto', a number >= 1 or None, got {policy!r}")
    return n


def set_default_policy(policy) -> None:
    """The policy ``Trainer(threads=None)`` uses in this process (None: leave threads alone)."""
    global _default_policy
    _default_policy = check_policy(policy)


def default_policy():
    if _default_policy is not None:
        return _default_policy
    return check_policy(os.environ.get("TINYMOBILEBERT_THREADS") or None)


class ThreadTuner:
    """Chooses the fastest thread count by timing steps (see the module notes).

    Call ``before_step()`` and ``after_step(work)`` around each step. ``threads`` is the count
    in use; ``events`` lists every decision as {"step", "threads", "reason", "per_work"}.
    ``clock`` and ``apply`` are replaceable for tests.
    """

    def __init__(self, candidates=None, *, warmup_steps=2, probe_steps=3, recheck_every=300, window=5, jump=1.5,
                 clock=time.perf_counter, apply=set_threads):
        n = available_cpus()
        self.candidates = sorted(set(candidates or (n, max(1, n // 2), 1)), reverse=True)
        if any(c < 1 for c in self.candidates):
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        self.warmup_steps, self.probe_steps, self.recheck_every = warmup_steps, probe_steps, recheck_every
        self.window, self.jump, self.clock, self.apply = window, jump, clock, apply
        self.step, self.events = 0, []
        self.threads = self.candidates[0]
        self._schedule, self._samples, self._recent = [], {}, []
        self._baseline, self._since_probe, self._t0 = None, 0, None
        self.apply(self.threads)
        if warmup_steps == 0 and len(self.candidates) > 1:
            self._start_probe("start")
        if len(self.candidates) == 1:
            self.events.append({"step": 0, "threads": self.threads, "reason": "one candidate", "per_work": None})

    def _set(self, n):
        if n != self.threads:
            self.threads = n
            self.apply(n)

    def _start_probe(self, reason):
        self._schedule = [c for _ in range(self.probe_steps) for c in self.candidates]
        self._samples = {c: [] for c in self.candidates}
        self._reason = reason

    def before_step(self) -> None:
        if self._schedule:
            self._set(self._schedule[0])
        self._t0 = self.clock()

    def after_step(self, work: float = 1.0) -> None:
        per_work = (self.clock() - self._t0) / max(float(work), 1e-12)
        self.step += 1
        if len(self.candidates) == 1 or self.step <= self.warmup_steps:
            if self.step == self.warmup_steps and len(self.candidates) > 1:
                self._start_probe("start")
            return
        if self._schedule:
            self._samples[self._schedule.pop(0)].append(per_work)
            if not self._schedule:
                medians = {c: statistics.median(s) for c, s in self._samples.items()}
                best = min(medians, key=lambda c: (medians[c], c))  # a tie goes to fewer threads
                self._set(best)
                self._baseline, self._since_probe, self._recent = medians[best], 0, []
                self.events.append({"step": self.step, "threads": best, "reason": self._reason,
                                    "per_work": {str(c): m for c, m in medians.items()}})
            return
        self._since_probe += 1
        self._recent = (self._recent + [per_work])[-self.window:]
        if self._since_probe >= self.recheck_every:
            self._start_probe("periodic")
        elif len(self._recent) == self.window and statistics.median(self._recent) > self.jump * self._baseline:
            self._start_probe("slower")


class _Fixed:
    """The policy of a fixed count (or None: nothing changes); the same methods as the tuner."""

    def __init__(self, n):
        self.threads = n
        if n is not None:
            set_threads(n)

    def before_step(self):
        pass

    def after_step(self, work=1.0):
        pass


@contextlib.contextmanager
def for_training(policy):
    """A step controller (``before_step``/``after_step``/``threads``) for ``policy``; the thread
    counts in force before are restored on leaving the block."""
    policy = check_policy(policy)
    if policy is None:
        yield _Fixed(None)
        return
    with restored():
        yield ThreadTuner() if policy == "auto" else _Fixed(policy)
