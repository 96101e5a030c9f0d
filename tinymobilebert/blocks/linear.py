"""Linear (dense) layer: y = x W^T + b, with W stored [out, in] as in PyTorch and transformers.

Dimensions: N rows, K input features, M output features.

    forward:   y = x @ W.T + b                 (N, K) @ (K, M) -> (N, M)
    backward:  dW += dy.T @ x                  (M, N) @ (N, K) -> (M, K)
               db += sum_rows(dy)
               dx  = dy @ W                    (N, M) @ (M, K) -> (N, K)

Inputs are 2-D rows (callers flatten B and T into N), so every product is one BLAS call; the
weight gradient accumulates in place (BLAS gemm with beta = 1, ``kernels.blas``). The bias is
optional here because most dense layers hand theirs to the fused norm or activation kernel that
follows (see ``blocks.sublayers``).
"""

from __future__ import annotations

from ..kernels.blas import gemm_accumulate


def linear_forward(x, W, b=None):
    """y = x @ W.T (+ b). x (N, K), W (M, K), b (M,) or None -> y (N, M)."""
    y = x @ W.T  # (N, M)
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, W, dW, db=None, need_dx=True):
    """Accumulate dW (and db) in place; return dx (N, K), or None when not needed.

    dy (N, M), x (N, K), W and dW (M, K), db (M,) or None.
    """
    gemm_accumulate(dy.T, x, dW)  # dW += dy.T @ x   (M, N) @ (N, K)
    if db is not None:
        db += dy.sum(axis=0)
    return dy @ W if need_dx else None  # (N, K)
