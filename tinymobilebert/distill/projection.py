"""A learned projection from the student's width to the teacher's, for hidden-state losses
between models of different widths (TinyBERT's W_h). It exists only during distillation.

Dimensions: N rows (B*T), Hs student width, Ht teacher width.

    y = h W^T + b        W (Ht, Hs), b (Ht,)            h (..., Hs) -> y (..., Ht)
    dW += dy^T h,  db += sum_rows(dy),  dh = dy W

Its parameters live in a ``ParameterStore`` of their own (``projection.store``), with their own
gradients: they are *not* parameters of the student, so ``student.save_pretrained`` and
``student.state_dict()`` never contain them, and a distilled student loads in transformers as it
is. Give the store to an optimizer of its own (``AdamW(projection.store, ...)``); save and
restore it with a distillation run's checkpoint through ``state_dict`` / ``load_state_dict``.

MobileBERT needs none: its student and teacher share the inter-block width (512) by design,
which is what makes feature-map transfer possible without one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..blocks.linear import linear_backward, linear_forward
from ..params import ParameterStore


class ProjectionCache(NamedTuple):
    prefix: str
    h: np.ndarray  # (N, Hs) the input rows
    shape: tuple  # the input's shape


class HiddenProjection:
    """A linear map student width -> teacher width with its own parameters and gradients.

    Parameters
    ----------
    student_width, teacher_width : int
    keys : sequence of int, optional
        None (default): one projection shared by every hidden state (TinyBERT's choice).
        Given: one projection per key (e.g. per student hidden-state index); ``forward(h, key)``
        picks it.
    seed : int or np.random.Generator
        Weights are drawn N(0, init_std^2) (BERT's initialiser), biases start at 0.
    dtype : float32 or float64 (the student's)

    Attributes
    ----------
    store : ParameterStore
        ``projection.weight`` (Ht, Hs) and ``projection.bias`` (Ht,), or ``projection.{key}.*``.
    params, grads : dict name -> array (views into ``store``)
    """

    def __init__(self, student_width: int, teacher_width: int, keys=None, seed=0, dtype=np.float32,
                 init_std: float = 0.02):
        for name, v in (("student_width", student_width), ("teacher_width", teacher_width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"HiddenProjection: {name} must be a positive integer, got {v!r}")
        self.student_width, self.teacher_width = int(student_width), int(teacher_width)
        self.keys = None if keys is None else tuple(int(k) for k in keys)
        prefixes = ["projection"] if self.keys is None else [f"projection.{k}" for k in self.keys]
        shapes = {}
        for p in prefixes:
            shapes[p + ".weight"] = (self.teacher_width, self.student_width)
            shapes[p + ".bias"] = (self.teacher_width,)
        self.store = ParameterStore(shapes, dtype)
        self.params, self.grads = self.store.params, self.store.grads
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        for p in prefixes:
            self.params[p + ".weight"][...] = rng.normal(0.0, init_std, (self.teacher_width, self.student_width))
        self.dtype = self.store.dtype

    def _prefix(self, key) -> str:
        if self.keys is None:
            if key is not None:
                raise ValueError(f"HiddenProjection.forward: this projection is shared, so key must be None, got {key!r}")
            return "projection"
        if key is None or int(key) not in self.keys:
            raise ValueError(f"HiddenProjection.forward: key must be one of {self.keys}, got {key!r}")
        return f"projection.{int(key)}"

    def forward(self, h, key=None):
        """h (..., Hs) -> (y (..., Ht), cache)."""
        p = self._prefix(key)
        h = np.asarray(h)
        if h.ndim < 1 or h.shape[-1] != self.student_width:
            raise ValueError(f"HiddenProjection.forward: h must end in the student width {self.student_width}, "
                             f"got shape {h.shape}")
        x = np.ascontiguousarray(h.reshape(-1, self.student_width), dtype=self.dtype)  # (N, Hs)
        y = linear_forward(x, self.params[p + ".weight"], self.params[p + ".bias"])  # (N, Ht)
        return y.reshape(*h.shape[:-1], self.teacher_width), ProjectionCache(p, x, h.shape)

    def backward(self, dy, cache: ProjectionCache) -> np.ndarray:
        """Accumulate the projection's gradients; return dh in the input's shape (..., Hs)."""
        p = cache.prefix
        d = np.ascontiguousarray(np.asarray(dy, self.dtype).reshape(-1, self.teacher_width))  # (N, Ht)
        if d.shape[0] != cache.h.shape[0]:
            raise ValueError(f"HiddenProjection.backward: dy must have shape {(*cache.shape[:-1], self.teacher_width)}, "
                             f"got {np.shape(dy)}")
        dx = linear_backward(d, cache.h, self.params[p + ".weight"], self.grads[p + ".weight"],
                             self.grads[p + ".bias"])  # (N, Hs)
        return dx.reshape(cache.shape)

    def zero_grad(self) -> None:
        self.store.zero_grad()

    def state_dict(self) -> dict:
        """Copies of the parameters, by name (for a distillation run's checkpoint, not the student's)."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict) -> None:
        missing, unexpected = set(self.params) - set(state), set(state) - set(self.params)
        if missing or unexpected:
            raise ValueError(f"HiddenProjection.load_state_dict: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for k, v in state.items():
            v = np.asarray(v)
            if v.shape != self.params[k].shape:
                raise ValueError(f"HiddenProjection.load_state_dict: {k} must have shape {self.params[k].shape}, got {v.shape}")
            self.params[k][...] = v
