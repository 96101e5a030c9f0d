"""How every kernel in this package is compiled, run in parallel, and swapped for its NumPy twin.

Three rules, one place:

* ``jit`` compiles lazily (nothing compiles at import), caches the machine code on disk, releases
  the GIL, and uses an explicit fastmath set *without* ``nnan``/``ninf``: attention masks and the
  GELU/tanh tails rely on IEEE infinities. ``error_model="numpy"`` makes division IEEE (no
  zero-check branch per ``/``, which would stop LLVM from vectorising the loops).
* ``run_rows`` splits a kernel's rows over a small thread pool. Kernels are serial loops over a
  ``[start, stop)`` row range, so they stay cacheable (Numba cannot cache ``parallel=True``
  kernels) and no two threads ever write the same memory; reductions give each chunk its own
  row of a partial-sum buffer.
* ``kernel(twin=...)`` registers the public entry point of a kernel next to its plain-NumPy twin.
  ``use_numpy_twins()`` (or the environment variable ``TINYMOBILEBERT_NUMPY_KERNELS=1``) makes
  every entry point run its twin instead, which is how tests compare the two and how the
  benchmark measures what Numba buys. ``NUMBA_DISABLE_JIT=1`` still runs the Numba code as
  plain Python for debugging.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

# Every flag but nnan and ninf: masked scores are -inf-like and exp(-inf) must be 0.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def jit(fn):
    """Compile ``fn`` with this package's flags: lazy, cached on disk, GIL released."""
    return numba.njit(cache=True, nogil=True, fastmath=set(FASTMATH), error_model="numpy")(fn)


# --------------------------------------------------------------------------------- threads

_MIN_WORK_PER_THREAD = 1 << 15  # below ~32k elements a thread round trip (~45 us) costs more
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def num_threads() -> int:
    """Threads the kernels use: ``TINYMOBILEBERT_NUM_THREADS``, else the usable CPU count."""
    env = os.environ.get("TINYMOBILEBERT_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=num_threads(), thread_name_prefix="tmb-kernel")
        return _pool


def row_chunks(n_rows: int, work_per_row: int) -> list[tuple[int, int]]:
    """Split ``range(n_rows)`` into contiguous chunks, one per thread, or one chunk if small."""
    n = min(num_threads(), max(1, (n_rows * max(work_per_row, 1)) // _MIN_WORK_PER_THREAD), n_rows)
    n = max(n, 1)
    bounds = [(i * n_rows) // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


def run_rows(fn, n_rows: int, work_per_row: int, *args) -> int:
    """Call ``fn(*args, start, stop, chunk)`` over row chunks, in parallel when worth it.

    ``chunk`` is the chunk's index, so a reduction can write its partial sums to
    ``partial[chunk]`` (see ``partial_rows``). Returns the number of chunks used.
    """
    chunks = row_chunks(n_rows, work_per_row)
    if len(chunks) == 1:
        fn(*args, 0, n_rows, 0)
        return 1
    pool = _get_pool()
    futures = [pool.submit(fn, *args, a, b, i) for i, (a, b) in enumerate(chunks)]
    for f in futures:
        f.result()
    return len(chunks)


def partial_rows(n_rows: int, work_per_row: int) -> int:
    """How many partial-sum rows a reduction over ``n_rows`` rows needs (= chunks used)."""
    return len(row_chunks(n_rows, work_per_row))


# --------------------------------------------------------------------------------- twins

_state = threading.local()
REGISTRY: dict[str, "Kernel"] = {}


def _twins_on() -> bool:
    flag = getattr(_state, "twins", None)
    if flag is None:
        flag = os.environ.get("TINYMOBILEBERT_NUMPY_KERNELS", "") not in ("", "0")
    return flag


@contextlib.contextmanager
def use_numpy_twins(enabled: bool = True):
    """Run every kernel entry point as its plain-NumPy twin inside this block (this thread)."""
    old = getattr(_state, "twins", None)
    _state.twins = enabled
    try:
        yield
    finally:
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
