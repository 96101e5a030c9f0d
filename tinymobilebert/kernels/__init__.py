"""Numba kernels and their plain-NumPy twins, one topic per module.

Every public kernel is registered in ``REGISTRY`` with its twin; ``use_numpy_twins()`` runs the
twins instead (see ``_jit``). Kernels know about arrays and sizes only, never about models.
"""

from ._jit import FASTMATH, REGISTRY, Kernel, jit, kernel, num_threads, run_rows, use_numpy_twins

__all__ = ["FASTMATH", "REGISTRY", "Kernel", "jit", "kernel", "num_threads", "run_rows", "use_numpy_twins"]
