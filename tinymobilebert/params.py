"""Parameters and their gradients, as named views into two flat buffers.

A model's weights are a plain dict ``{transformers state-dict name: ndarray}``; the arrays are
views into one contiguous 1-D buffer (``store.data``), and the gradients are views of the same
shapes into a second buffer (``store.grad``). Both buffers are laid out the same way, so an
optimizer can update the whole model with one kernel call over flat arrays and still know, from
``store.slices``, which name each range belongs to (weight-decay exclusions, learning-rate
multipliers, LAMB's per-tensor trust ratio).

Rule for everyone touching parameters: write *into* the views (``p[...] = value``), never rebind
a name to a new array, or the flat buffer and the dict stop describing the same model.
"""

from __future__ import annotations

import math

import numpy as np

_ALIGN = 16  # elements; every tensor starts on a 64-byte boundary in float32


class ParameterStore:
    """Named parameter and gradient views into two flat buffers.

    Parameters
    ----------
    shapes : dict[str, tuple[int, ...]]
        Name -> shape, in the order the tensors are laid out.
    dtype : numpy dtype
        float32 or float64.

    Attributes
    ----------
    data, grad : ndarray, shape (N,)
        The flat buffers (N includes alignment padding, which is kept at zero).
    params, grads : dict[str, ndarray]
        Views into ``data`` and ``grad``, keyed by name.
    slices : dict[str, tuple[int, int]]
        Name -> ``(start, stop)`` range of that tensor in the flat buffers.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        self.slices: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            self.slices[name] = (offset, offset + size)
            offset += -(-size // _ALIGN) * _ALIGN
        self.data = np.zeros(offset, dtype=dtype)
        self.grad = np.zeros(offset, dtype=dtype)
        self.params = {n: self._view(self.data, n) for n in self.shapes}
        self.grads = {n: self._view(self.grad, n) for n in self.shapes}

    def _view(self, flat: np.ndarray, name: str) -> np.ndarray:
        a, b = self.slices[name]
        return flat[a:b].reshape(self.shapes[name])

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    @property
    def num_parameters(self) -> int:
        return sum(b - a for a, b in self.slices.values())

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> np.ndarray:
        return self.params[name]

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self):
        return iter(self.params)
