"""How every kernel in this package is compiled, run in parallel, and swapped for its NumPy twin.

Three rules, one place:

* ``jit`` compiles lazily (nothing compiles at import), caches the machine code on disk, releases
  the GIL, and uses an explicit fastmath set *without* ``nnan``/``ninf``: attention masks and the
  GELU/tanh tails rely on IEEE infinities. ``error_model="numpy"`` makes division IEEE (no
  zero-check branch per ``/``, which would stop LLVM from vectorising the loops).
* ``run_rows`` splits a kernel's rows over a small thread pool. Kernels are serial loops over a
  ``[start, stop)`` row range, so they stay cacheable (Numba cannot cache ``parallel=True``
  kernels) and no two threads ever write the same memory; reductions give each chunk its own
  row of a partial-sum buffer. The calling thread takes chunks too (see ``run_rows``).
* ``kernel(twin=...)`` registers the public entry point of a kernel next to its plain-NumPy twin.
  ``use_numpy_twins()`` (or the environment variable ``TINYMOBILEBERT_NUMPY_KERNELS=1``, read at
  import) makes every entry point run its twin instead, which is how tests compare the two and how the
  benchmark measures what Numba buys. ``NUMBA_DISABLE_JIT=1`` still runs the Numba code as
  plain Python for debugging.

Non-finite values: every kernel gives NaN and +-inf exactly where its twin does (same
``isnan``/``isinf`` patterns; ``tests/test_kernels_nonfinite.py`` feeds NaN and inf into every
input of every kernel). Without ``nnan``/``ninf`` LLVM keeps IEEE semantics, so what remains is
how a kernel is written: a comparison is false for NaN, so ``v if v > 0 else 0`` sends NaN to 0
where ``np.maximum(v, 0)`` keeps it (ReLU is ``0 if v <= 0 else v``); a twin that multiplies by
a 0/1 mask gives NaN for ``inf * 0`` where a kernel that selects gives 0, so both sides use the
same one (a product where the twin multiplies, ``np.where`` in the twin where the kernel
selects). A row's maximum with a NaN in it differs (NumPy's ``max`` is NaN, Python's ``max``
skips a NaN that is not first), but every softmax and log-sum-exp then meets the NaN in its sum,
so the rows come out NaN on both sides.

Without Intel's SVML (not shipped with pip's llvmlite) LLVM cannot vectorise a loop that calls
``np.exp`` or ``math.tanh``: every element pays a libm call (~20 ns for tanh). ``exp`` and
``tanh`` below are the textbook vectorisable forms (``tanh``: Cephes' tanhf / tanh). ``exp``
(Cody-Waite reduction x = k ln2 + r, a polynomial for e^r, 2^k built from its bits): float32
within 2 ulps of ``np.exp`` (5 near overflow), float64 within 2 ulps for |x| < 10 and 2e-14
relative at |x| ~ 700; results below the smallest normal number flush to 0.

Numba's disk cache checks only the source file of the function it caches, not the ``@jit``
helpers it calls from other modules: after editing ``exp`` or ``tanh`` here, delete the cached
kernels (``__pycache__/*.nbi``, ``*.nbc``) so they recompile.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import queue
import threading

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

# Every flag but nnan and ninf: masked scores are -inf-like and exp(-inf) must be 0.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def jit(fn):
    """Compile ``fn`` with this package's flags: lazy, cached on disk, GIL released."""
    return numba.njit(cache=True, nogil=True, fastmath=set(FASTMATH), error_model="numpy")(fn)


# --------------------------------------------------------------------------------- row statistics
@jit
def row_mean_var(x, n):
    """(mean, variance) of row ``n`` of x (N, C), in float64 whatever x's dtype: the mean, then
    the mean squared deviation (two passes; steadier than E[x^2] - E[x]^2 on rows with a large
    common offset). LayerNorm's statistics and the distillation losses' share it."""
    C = x.shape[1]
    s = 0.0
    for c in range(C):
        s += np.float64(x[n, c])
    mu = s / C
    ss = 0.0
    for c in range(C):
        d = np.float64(x[n, c]) - mu
        ss += d * d
    return mu, ss / C


# --------------------------------------------------------------------------------- exp


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 (float64) whose IEEE bits are the int32 (int64) ``bits``."""
    ret = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if ret is None:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(sig.return_type))

    return ret(bits), codegen


@jit
def _exp_float32(x):
    # Cephes expf: a degree-5 minimax polynomial on |r| <= ln2/2, ~2 ulp
    lo, hi = np.float32(-87.33654), np.float32(88.72284)  # ln of the smallest normal / largest float32
    xc = min(max(x, lo), hi)
    k = min(np.floor(xc * np.float32(1.44269504) + np.float32(0.5)), np.float32(127.0))
    r = xc - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)  # ln2 in two parts
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = (p * r * r + r + np.float32(1.0)) * _float_from_bits(np.int32((np.int32(k) + 127) << 23))
    if x < lo:
        y = np.float32(0.0)
    if x > hi:
        y = np.float32(np.inf)
    if x != x:
        y = x
    return y


@jit
def _exp_float64(x):
    # e^r by its Taylor series to r^13 (truncation < 2e-17 on |r| <= ln2/2), ~1e-16 near 0
    lo, hi = -708.3964185322641, 709.782712893384
    xc = min(max(x, lo), hi)
    k = min(np.floor(xc * 1.4426950408889634 + 0.5), 1023.0)
    r = (xc - k * 6.93145751953125e-1) - k * 1.42860682030941723212e-6
    p = 1.0 / 6227020800.0
    for d in (479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0):
        p = p * r + 1.0 / d
    y = (p * r * r + r + 1.0) * _float_from_bits((np.int64(np.int32(k)) + 1023) << 52)
    if x < lo:
        y = 0.0
    if x > hi:
        y = np.inf
    if x != x:
        y = x
    return y


def exp(x):
    """e^x of a float32 or float64 scalar, in the dtype of ``x``, as a loop LLVM can vectorise.

    In plain Python (``NUMBA_DISABLE_JIT=1``) this is ``np.exp``; in compiled code, see below.
    """
    return np.exp(x)


@overload(exp)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_float32(x)
    if x == types.float64:
        return lambda x: _exp_float64(x)
    return None


@jit
def _tanh_float32(x):
    # Cephes tanhf: an odd polynomial below |x| = 0.625, 1 - 2 / (e^2|x| + 1) above; ~2 ulp
    a = abs(x)
    big = np.float32(1.0) - np.float32(2.0) / (_exp_float32(a + a) + np.float32(1.0))  # e = inf: 1
    big = big if x >= np.float32(0.0) else -big
    z = x * x
    p = np.float32(-5.70498872745e-3)
    p = p * z + np.float32(2.06390887954e-2)
    p = p * z + np.float32(-5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z + np.float32(-3.33332819422e-1)
    small = p * z * x + x
    return small if a < np.float32(0.625) else big


@jit
def _tanh_float64(x):
    # Cephes tanh: x + x^3 P(x^2) / Q(x^2) below |x| = 0.625, 1 - 2 / (e^2|x| + 1) above
    a = abs(x)
    big = 1.0 - 2.0 / (_exp_float64(a + a) + 1.0)
    big = big if x >= 0.0 else -big
    z = x * x
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3
    small = x + x * z * p / q
    return small if a < 0.625 else big


def tanh(x):
    """tanh(x) of a float32 or float64 scalar, in the dtype of ``x``, as a loop LLVM vectorises.

    Cephes' tanhf / tanh on ``exp`` above (libm's are scalar calls of ~20 ns). In plain Python
    (``NUMBA_DISABLE_JIT=1``) this is ``np.tanh``.
    """
    return np.tanh(x)


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh_float32(x)
    if x == types.float64:
        return lambda x: _tanh_float64(x)
    return None


# --------------------------------------------------------------------------------- threads

_MIN_WORK_PER_THREAD = 1 << 15  # below ~32k elements a thread round trip (~45 us) costs more
# The model's kernels count their work as estimated single-threaded time (``model_work``) and
# split only past this much. Measured (benchmarks/kernels_micro.py, 2 cores): a split costs ~15 us
# on a quiet machine and gains little on memory-bound passes (one core nearly saturates the
# memory bandwidth); in a training step OpenBLAS's threads still spin after every matrix product,
# so a second kernel thread competes with them and a split of anything below a few ms loses
# (tiny training step: 10% slower when splitting from ~0.1 ms; paper size: no difference).
MODEL_SPLIT_NS = 1_000_000.0
_tasks: queue.SimpleQueue = queue.SimpleQueue()  # closures for the worker threads to run
_workers: list[threading.Thread] = []
_pool_lock = threading.Lock()


_threads_override = None  # set_num_threads (tinymobilebert.threads): wins over the environment


def num_threads() -> int:
    """Threads the kernels use: ``set_num_threads(n)``, else ``TINYMOBILEBERT_NUM_THREADS``, else
    the usable CPU count."""
    if _threads_override is not None:
        return _threads_override
    env = os.environ.get("TINYMOBILEBERT_NUM_THREADS")
    if env:
        return max(1, int(env))
    return _usable_cpus()


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in the kernels from now on (None: back to the environment's choice)."""
    global _threads_override
    _threads_override = None if n is None else max(1, int(n))


def get_num_threads_override() -> int | None:
    return _threads_override


@functools.lru_cache(maxsize=1)
def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _worker_loop():
    while True:
        _tasks.get()()


def _start_workers(n: int) -> None:
    """Make sure ``n`` worker threads wait on ``_tasks`` (daemons: they never block an exit).

    A bare queue, not a ThreadPoolExecutor: its submit costs ~20 us of futures and locks.
    """
    with _pool_lock:
        while len(_workers) < n:
            t = threading.Thread(target=_worker_loop, name=f"tmb-kernel-{len(_workers)}", daemon=True)
            t.start()
            _workers.append(t)


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_workers.clear)


def model_work(ns_per_row: float) -> float:
    """``run_rows``' work units for a model kernel's row of ``ns_per_row`` single-threaded ns:
    two chunks from ``MODEL_SPLIT_NS`` of work on."""
    return ns_per_row * (2 * _MIN_WORK_PER_THREAD) / MODEL_SPLIT_NS


def row_chunks(n_rows: int, work_per_row: float) -> list[tuple[int, int]]:
    """Split ``range(n_rows)`` into contiguous chunks, one per thread, or one chunk if small."""
    n = min(num_threads(), max(1, int(n_rows * work_per_row) // _MIN_WORK_PER_THREAD), n_rows)
    n = max(n, 1)
    bounds = [(i * n_rows) // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


def run_rows(fn, n_rows: int, work_per_row: float, *args) -> int:
    """Call ``fn(*args, start, stop, chunk)`` over row chunks, in parallel when worth it.

    ``chunk`` is the chunk's index, so a reduction can write its partial sums to
    ``partial[chunk]`` (see ``partial_rows``). Returns the number of chunks.

    The calling thread does not only wait: it and the workers take chunks in turn from one
    counter, so a worker that wakes up late (a round trip costs ~30-50 us, far more while
    OpenBLAS's threads still spin after a matrix product) finds its chunk already done instead
    of holding everyone up. The caller then waits only for chunks a worker has started.
    """
    if n_rows * work_per_row < 2 * _MIN_WORK_PER_THREAD:  # the common case: no split, no lists
        fn(*args, 0, n_rows, 0)
        return 1
    chunks = row_chunks(n_rows, work_per_row)
    n = len(chunks)
    if n == 1:
        fn(*args, 0, n_rows, 0)
        return 1
    claim, finished = itertools.count(), itertools.count(1)  # next() is atomic under the GIL
    all_done = threading.Event()
    errors = []

    def take_chunks():
        while (i := next(claim)) < n:
            try:
                fn(*args, chunks[i][0], chunks[i][1], i)
            except BaseException as e:  # re-raised by the caller
                errors.append(e)
            finally:
                if next(finished) == n:
                    all_done.set()

    _start_workers(n - 1)
    for _ in range(n - 1):
        _tasks.put(take_chunks)
    take_chunks()
    all_done.wait()
    if errors:
        raise errors[0]
    return n


def partial_rows(n_rows: int, work_per_row: float) -> int:
    """How many partial-sum rows a reduction over ``n_rows`` rows needs (= chunks used)."""
    return len(row_chunks(n_rows, work_per_row))


# --------------------------------------------------------------------------------- twins

_state = threading.local()
REGISTRY: dict[str, "Kernel"] = {}


# The process-wide default, read once at import (a lookup per kernel call costs ~2 us).
_TWINS_BY_DEFAULT = os.environ.get("TINYMOBILEBERT_NUMPY_KERNELS", "") not in ("", "0")


def _twins_on() -> bool:
    return getattr(_state, "twins", _TWINS_BY_DEFAULT)


@contextlib.contextmanager
def use_numpy_twins(enabled: bool = True):
    """Run every kernel entry point as its plain-NumPy twin inside this block (this thread)."""
    missing = object()
    old = getattr(_state, "twins", missing)
    _state.twins = enabled
    try:
        yield
    finally:
        if old is missing:
            del _state.twins
        else:
            _state.twins = old


class Kernel:
    """A kernel entry point: calls the Numba path, or the NumPy twin when twins are on.

    Attributes ``numba`` and ``numpy`` give direct access to each side, for tests.
    """

    def __init__(self, fast, twin):
        functools.update_wrapper(self, fast)
        self.numba = fast
        self.numpy = twin
        self.name = fast.__name__

    def __call__(self, *args, **kwargs):
        return (self.numpy if _twins_on() else self.numba)(*args, **kwargs)

    def __repr__(self):
        return f"<kernel {self.name} (numba) / {self.numpy.__name__} (numpy twin)>"


def kernel(twin):
    """Register the decorated function as a kernel entry point whose NumPy twin is ``twin``.

    The two must take the same arguments and return the same values (to rounding).
    """

    def deco(fast):
        k = Kernel(fast, twin)
        if k.name in REGISTRY:
            raise RuntimeError(f"kernel {k.name!r} registered twice")
        REGISTRY[k.name] = k
        return k

    return deco
