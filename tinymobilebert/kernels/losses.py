"""Cross-entropy kernels over rows of logits, with an ignore label.

Dimensions: N rows (tokens or sequences), V classes (vocabulary or labels).

Forward, for logits x (N, V) and labels y (N,), rows with y == ignore_index skipped:

    lse_n  = log sum_v exp(x_nv)          loss_n = lse_n - x_{n, y_n}
    returns sum_n loss_n, the number of counted rows, and lse (N,) for the backward pass

Backward, given the upstream gradient g of the *summed* loss (the caller divides by the count
for a mean):

    dx_nv = g * (exp(x_nv - lse_n) - 1[v = y_n])          (0 on ignored rows)

Sums and log-sum-exp are accumulated in float64.
"""

from __future__ import annotations

import numpy as np

from ._jit import exp, jit, kernel, model_work, partial_rows, run_rows

IGNORE_INDEX = -100
# single-threaded ns per element (benchmarks/kernels_micro.py), how run_rows decides to split
_NS_FORWARD = 2.3
_NS_BACKWARD = 0.7


# ------------------------------------------------------------------------------ NumPy twins


def cross_entropy_forward_numpy(logits, labels, ignore_index=IGNORE_INDEX):
    """Returns (loss_sum: float, count: int, lse: (N,) float64). logits (N, V), labels (N,)."""
    x = logits.astype(np.float64)
    mx = x.max(axis=1)
    lse = mx + np.log(np.exp(x - mx[:, None]).sum(axis=1))
    keep = labels != ignore_index
    rows = np.nonzero(keep)[0]
    loss = lse[rows] - x[rows, labels[rows]]
    return float(loss.sum()), int(keep.sum()), lse


def cross_entropy_backward_numpy(logits, labels, lse, grad, ignore_index=IGNORE_INDEX):
    """d logits of grad * (summed loss). Shapes as in forward; grad: float."""
    keep = labels != ignore_index
    p = np.exp(logits.astype(np.float64) - lse[:, None])
    rows = np.nonzero(keep)[0]
    p[rows, labels[rows]] -= 1.0
    p[~keep] = 0.0
    return (p * grad).astype(logits.dtype)


# ------------------------------------------------------------------------------ Numba kernels
# exp is kernels._jit.exp, which LLVM vectorises: float64 in the forward pass (lse must be exact
# to ~1e-15), the logits' dtype in the backward pass (x - lse itself is taken in float64).


@jit
def _ce_forward_rows(x, labels, ignore_index, lse, partial, start, stop, chunk):
    V = x.shape[1]
    loss, count = 0.0, 0.0
    for n in range(start, stop):
        mx = x[n, 0]
        for v in range(V):
            mx = max(mx, x[n, v])
        m = np.float64(mx)
        tot = 0.0
        for v in range(V):
            tot += exp(np.float64(x[n, v]) - m)
        lse[n] = m + np.log(tot)
        y = labels[n]
        if y != ignore_index:
            loss += lse[n] - np.float64(x[n, y])
            count += 1.0
    partial[chunk, 0] = loss
    partial[chunk, 1] = count


@kernel(twin=cross_entropy_forward_numpy)
def cross_entropy_forward(logits, labels, ignore_index=IGNORE_INDEX):
    """Returns (loss_sum: float, count: int, lse: (N,) float64). logits (N, V), labels (N,)."""
    N, V = logits.shape
    lse = np.empty(N, np.float64)
    work = model_work(_NS_FORWARD * V)
    partial = np.zeros((partial_rows(N, work), 2))
    run_rows(_ce_forward_rows, N, work, logits, labels, int(ignore_index), lse, partial)
    tot = partial.sum(axis=0)
    return float(tot[0]), int(round(tot[1])), lse


@jit
def _ce_backward_rows(x, labels, lse, grad, ignore_index, dx, start, stop, chunk):
    V = x.shape[1]
    t = dx.dtype.type
    zero, grad_t = t(0), t(grad)
    for n in range(start, stop):
        y = labels[n]
        if y == ignore_index:
            for v in range(V):
                dx[n, v] = zero
            continue
        m = lse[n]
        for v in range(V):
            dx[n, v] = grad_t * exp(t(np.float64(x[n, v]) - m))
        # the label's entry again in float64, before the cast: p_y - 1 keeps its digits
        dx[n, y] = grad * (np.exp(np.float64(x[n, y]) - m) - 1.0)


@kernel(twin=cross_entropy_backward_numpy)
def cross_entropy_backward(logits, labels, lse, grad, ignore_index=IGNORE_INDEX):
    """d logits of grad * (summed loss). Shapes as in forward; grad: float."""
    N, V = logits.shape
    dx = np.empty_like(logits)
    run_rows(_ce_backward_rows, N, model_work(_NS_BACKWARD * V), logits, labels, lse, float(grad),
             int(ignore_index), dx)
    return dx
