"""What a figure was measured on: the CPU, the BLAS, the library versions (for the demo's
summary and the benchmark's report alike)."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:  # not Linux
        pass
    return cpu


def blas_name() -> str:
    """NumPy's BLAS, as its build configuration names it ("?" for an older NumPy)."""
    import numpy as np

    try:
        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{dep.get('name')} {dep.get('version')}"
    except Exception:  # noqa: BLE001 - an older NumPy: the BLAS stays unnamed
        return "?"


def describe() -> dict:
    """CPU, logical CPUs, BLAS, Python, NumPy, Numba, platform."""
    import numba
    import numpy as np

    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "blas": blas_name(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "platform": platform.platform()}
