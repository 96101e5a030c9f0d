"""Embedding kernels: word lookup (plain or trigram), its scatter-add, and position + type adds.

Dimensions: B batch, T tokens, V vocabulary, E embedding width, H hidden width.

Trigram input (MobileBERT section 3.1; a width-3 convolution with zero "same" padding):

    e = W[ids]                                               (B, T, E)
    x[:, t] = concat(e[:, t+1], e[:, t], e[:, t-1])          (B, T, 3E), zeros past the edges

With ``keep`` (B, T) given (padding-aware mode) a neighbour whose keep is 0 also counts as a
zero, so real tokens never read a [PAD] embedding (not even a NaN one: zero, not times zero). The backward pass scatter-adds each slice of
dx back to the row it came from:

    dW[ids[b, t]] += dx[b, t, E:2E] + dx[b, t-1, 0:E] + dx[b, t+1, 2E:3E]

Rows whose id equals ``skip_id`` get no gradient from the lookup: PyTorch's
``nn.Embedding(padding_idx=...)`` does this, and transformers builds the word embedding with
``padding_idx=pad_token_id`` (pass -1 to skip nothing). Scatter-adds run in parallel over *columns* of dW, so no two threads touch the same element
however often a token id repeats.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, kernel, model_work, run_rows

# single-threaded ns per element copied or added (benchmarks/kernels_micro.py), how run_rows
# decides to split
_NS_COPY = 0.2
_NS_ADD = 0.25

# ------------------------------------------------------------------------------ NumPy twins


def trigram_embed_numpy(ids, table, keep):
    """(B, T) ids, (V, E) table, keep (B, T) or None -> (B, T, 3E) [next, current, previous]."""
    e = table[ids]  # (B, T, E)
    nxt = np.zeros_like(e)
    prv = np.zeros_like(e)
    nxt[:, :-1] = e[:, 1:]
    prv[:, 1:] = e[:, :-1]
    if keep is not None:  # a select, not * keep: a NaN or inf [PAD] embedding must not leak as NaN
        k = keep[:, :, None] > 0
        nxt[:, :-1] = np.where(k[:, 1:], nxt[:, :-1], 0)
        prv[:, 1:] = np.where(k[:, :-1], prv[:, 1:], 0)
    return np.concatenate([nxt, e, prv], axis=-1)


def trigram_embed_backward_numpy(dx, ids, keep, dtable, skip_id=-1):
    """Scatter-add dx (B, T, 3E) into dtable (V, E) in place; rows == skip_id get nothing."""
    E = dtable.shape[1]
    before = dtable[skip_id].copy() if skip_id >= 0 else None
    d_next, d_cur, d_prev = dx[..., :E], dx[..., E:2 * E], dx[..., 2 * E:]
    if keep is not None:
        k = keep[:, :, None] > 0
        d_next = d_next.copy()
        d_prev = d_prev.copy()
        d_next[:, :-1] = np.where(k[:, 1:], d_next[:, :-1], 0)
        d_prev[:, 1:] = np.where(k[:, :-1], d_prev[:, 1:], 0)
    np.add.at(dtable, ids, d_cur)
    np.add.at(dtable, ids[:, 1:], d_next[:, :-1])   # token t+1 fed slot "next" of token t
    np.add.at(dtable, ids[:, :-1], d_prev[:, 1:])   # token t-1 fed slot "previous" of token t
    if before is not None:
        dtable[skip_id] = before


def embed_numpy(ids, table):
    """(...) ids, (V, E) table -> (..., E)."""
    return table[ids]


def embed_backward_numpy(dx, ids, dtable, skip_id=-1):
    """Scatter-add dx (..., E) into dtable (V, E) in place; rows == skip_id get nothing."""
    keep = ids != skip_id
    np.add.at(dtable, ids[keep], dx[keep])


def add_position_type_numpy(x, pos_table, type_table, type_ids):
    """x (B, T, H) += pos_table[:T] + type_table[type_ids], in place; returns x."""
    T = x.shape[1]
    x += pos_table[:T][None] + type_table[type_ids]
    return x


def add_position_type_backward_numpy(dx, type_ids, dpos, dtype_table):
    """dpos[:T] += sum_b dx; dtype_table[type_ids] += dx (in place)."""
    T = dx.shape[1]
    dpos[:T] += dx.sum(axis=0)
    np.add.at(dtype_table, type_ids, dx)


# ------------------------------------------------------------------------------ Numba kernels
# Row copies and row adds; the ``keep`` and edge tests happen once per row, never per element.
# Inner loops index with a bare loop variable (the three slots of a trigram row are a (3, E)
# view, not offsets E + c) or an unsigned one (column ranges): Numba then drops its check for
# negative indices, which otherwise turns every load and store into a gather.


@jit
def _trigram_rows(ids, table, keep, out, start, stop, chunk):
    T = ids.shape[1]
    E = table.shape[1]
    zero = out.dtype.type(0)
    has_keep = keep.shape[0] > 0
    for r in range(start, stop):  # r = flat (b, t); out is (B*T, 3, E): next, current, previous
        b = r // T
        t = r % T
        cur = ids[b, t]
        for c in range(E):
            out[r, 1, c] = table[cur, c]
        if t + 1 < T and (not has_keep or keep[b, t + 1] > 0):
            nx = ids[b, t + 1]
            for c in range(E):
                out[r, 0, c] = table[nx, c]
        else:
            for c in range(E):
                out[r, 0, c] = zero
        if t > 0 and (not has_keep or keep[b, t - 1] > 0):
            pv = ids[b, t - 1]
            for c in range(E):
                out[r, 2, c] = table[pv, c]
        else:
            for c in range(E):
                out[r, 2, c] = zero


@kernel(twin=trigram_embed_numpy)
def trigram_embed(ids, table, keep):
    """(B, T) ids, (V, E) table, keep (B, T) or None -> (B, T, 3E) [next, current, previous]."""
    B, T = ids.shape
    E = table.shape[1]
    out = np.empty((B * T, 3, E), table.dtype)
    k = keep if keep is not None else np.empty((0, 0), np.int64)
    run_rows(_trigram_rows, B * T, model_work(_NS_COPY * 3 * E), ids, table, k, out)
    return out.reshape(B, T, 3 * E)


@jit
def _trigram_backward_cols(dx, ids, keep, skip_id, dtable, start, stop, chunk):
    T = ids.shape[1]
    c0, c1 = np.uint64(start), np.uint64(stop)  # this chunk's columns of dtable
    has_keep = keep.shape[0] > 0
    for r in range(dx.shape[0]):  # r = flat (b, t); dx is (B*T, 3, E)
        b = r // T
        t = r % T
        i = ids[b, t]
        if i == skip_id:
            continue
        for c in range(c0, c1):
            dtable[i, c] += dx[r, 1, c]
        # this token sits in slot "next" of token t-1 and slot "previous" of token t+1
        if has_keep and keep[b, t] <= 0:
            continue
        if t > 0:
            for c in range(c0, c1):
                dtable[i, c] += dx[r - 1, 0, c]
        if t + 1 < T:
            for c in range(c0, c1):
                dtable[i, c] += dx[r + 1, 2, c]


@kernel(twin=trigram_embed_backward_numpy)
def trigram_embed_backward(dx, ids, keep, dtable, skip_id=-1):
    """Scatter-add dx (B, T, 3E) into dtable (V, E) in place; rows == skip_id get nothing."""
    B, T = ids.shape
    E = dtable.shape[1]
    k = keep if keep is not None else np.empty((0, 0), np.int64)
    dx3 = np.ascontiguousarray(dx).reshape(B * T, 3, E)
    run_rows(_trigram_backward_cols, E, model_work(_NS_ADD * 3 * B * T), dx3, ids, k, int(skip_id), dtable)


@jit
def _embed_rows(ids, table, out, start, stop, chunk):
    E = table.shape[1]
    for n in range(start, stop):
        i = ids[n]
        for c in range(E):
            out[n, c] = table[i, c]


@kernel(twin=embed_numpy)
def embed(ids, table):
    """(...) ids, (V, E) table -> (..., E)."""
    flat = np.ascontiguousarray(ids).reshape(-1)
    out = np.empty((flat.size, table.shape[1]), table.dtype)
    run_rows(_embed_rows, flat.size, model_work(_NS_COPY * table.shape[1]), flat, table, out)
    return out.reshape(ids.shape + (table.shape[1],))


@jit
def _embed_backward_cols(dx, ids, skip_id, dtable, start, stop, chunk):
    c0, c1 = np.uint64(start), np.uint64(stop)  # this chunk's columns of dtable
    for n in range(ids.shape[0]):
        i = ids[n]
        if i == skip_id:
            continue
        for c in range(c0, c1):
            dtable[i, c] += dx[n, c]


@kernel(twin=embed_backward_numpy)
def embed_backward(dx, ids, dtable, skip_id=-1):
    """Scatter-add dx (..., E) into dtable (V, E) in place; rows == skip_id get nothing."""
    E = dtable.shape[1]
    flat = np.ascontiguousarray(ids).reshape(-1)
    run_rows(_embed_backward_cols, E, model_work(_NS_ADD * flat.size), np.ascontiguousarray(dx).reshape(-1, E), flat,
             int(skip_id), dtable)


@jit
def _pos_type_rows(x, pos, typ, type_ids, start, stop, chunk):
    T, H = type_ids.shape[1], x.shape[1]
    for r in range(start, stop):  # r = flat (b, t); x is (B*T, H)
        t = r % T
        k = type_ids[r // T, t]
        for c in range(H):
            x[r, c] += pos[t, c] + typ[k, c]


@kernel(twin=add_position_type_numpy)
def add_position_type(x, pos_table, type_table, type_ids):
    """x (B, T, H) += pos_table[:T] + type_table[type_ids], in place; returns x."""
    B, T, H = x.shape
    run_rows(_pos_type_rows, B * T, model_work(_NS_ADD * H), x.reshape(B * T, H), pos_table, type_table, type_ids)
    return x


@jit
def _pos_type_backward_cols(dx, type_ids, dpos, dtyp, start, stop, chunk):
    T = type_ids.shape[1]
    c0, c1 = np.uint64(start), np.uint64(stop)  # this chunk's columns of dpos and dtyp
    for r in range(dx.shape[0]):  # r = flat (b, t); dx is (B*T, H)
        t = r % T
        k = type_ids[r // T, t]
        for c in range(c0, c1):
            dpos[t, c] += dx[r, c]
        for c in range(c0, c1):
            dtyp[k, c] += dx[r, c]


@kernel(twin=add_position_type_backward_numpy)
def add_position_type_backward(dx, type_ids, dpos, dtype_table):
    """dpos[:T] += sum_b dx; dtype_table[type_ids] += dx (in place)."""
    B, T, H = dx.shape
    run_rows(_pos_type_backward_cols, H, model_work(_NS_ADD * 2 * B * T), np.ascontiguousarray(dx).reshape(B * T, H),
             type_ids, dpos, dtype_table)
