"""Argument checks shared by the distillation losses: clear errors that name the argument."""

from __future__ import annotations

import math

import numpy as np


def float_array(x, name: str, fn: str) -> np.ndarray:
    """``x`` as a float32 or float64 ndarray (no copy when it already is one)."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got dtype {a.dtype}")
    return a


def student_teacher(s, t, names: tuple[str, str], fn: str, ndim: int | None = None):
    """Both as float arrays of one shape (``ndim`` dimensions if given); the teacher is not copied."""
    s = float_array(s, names[0], fn)
    t = float_array(t, names[1], fn)
    if ndim is not None and s.ndim != ndim:
        raise ValueError(f"{fn}: {names[0]} must have {ndim} dimensions, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{fn}: {names[0]} is empty (shape {s.shape})")
    if t.shape != s.shape:
        raise ValueError(f"{fn}: {names[1]} must have the shape of {names[0]} {s.shape}, got {t.shape}")
    return s, t


def token_mask(mask, shape: tuple[int, int], fn: str, name: str = "attention_mask") -> np.ndarray | None:
    """A (B, T) mask of 0 (padding) and 1 (real token) as float64, or None."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape (batch, tokens) = {tuple(shape)}, got {m.shape}")
    if m.dtype.kind not in "biuf" or not np.all((m == 0) | (m == 1)):
        raise ValueError(f"{fn}: {name} must hold only 0 (padding) and 1 (real token)")
    return m.astype(np.float64)


def positive_number(x, name: str, fn: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {x!r}")
    return float(x)


def unit_interval(x, name: str, fn: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{fn}: {name} must be a number in [0, 1], got {x!r}")
    return float(x)


def choice(x, name: str, allowed: tuple, fn: str):
    if x not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {allowed}, got {x!r}")
    return x


def upstream(dloss, fn: str, name: str = "dloss") -> float:
    """The upstream gradient of a scalar loss, as a float."""
    d = np.asarray(dloss)
    if d.size != 1 or d.dtype.kind not in "biuf":
        raise ValueError(f"{fn}: {name} must be a number (the gradient of the scalar loss), got {dloss!r}")
    return float(d.reshape(()))
