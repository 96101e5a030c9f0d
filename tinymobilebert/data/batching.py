"""Batches as pure functions of (seed, epoch, batch index), so runs resume exactly.

Shapes: N examples, B rows in a batch, T tokens (the longest row of that batch).

Every random choice a batch needs comes from its own generator, seeded from a tuple
``(stream, seed, epoch[, batch])``: the shuffle order of an epoch from ``(SHUFFLE, seed, epoch)``,
the masking of batch k from ``(MASKING, seed, epoch, k)``. Nothing carries over from one batch
to the next, so a run restarted at batch k of epoch e sees exactly what an uninterrupted run
sees, and epoch e + 1 draws new masks for the same examples.

(Each stream keeps one tuple length: numpy's ``SeedSequence`` treats ``[a, b]`` and
``[a, b, 0]`` as the same seed, so a stream tag in front keeps streams apart.)
"""

import numpy as np

PAIRS, SHUFFLE, MASKING, TASK = 1, 2, 3, 4  # stream tags


def derived_rng(stream, seed, *keys):
    """A generator for one purpose, seeded by ``(stream, seed, *keys)`` (non-negative ints)."""
    values = [int(v) for v in (stream, seed, *keys)]
    if min(values) < 0:
        raise ValueError(f"seed, epoch and batch index must be non-negative ints, got {values[1:]}")
    return np.random.default_rng(values)


def num_batches(num_examples, batch_size, drop_last):
    """How many batches an epoch of ``num_examples`` holds."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return num_examples // batch_size if drop_last else -(-num_examples // batch_size)


def epoch_batches(num_examples, batch_size, *, seed, epoch, shuffle=True, drop_last=True, start_batch=0):
    """The example indices of each batch of one epoch, from ``start_batch`` on.

    Parameters
    ----------
    num_examples : int
        N.
    batch_size : int
        B.
    seed, epoch : int
        The epoch's order is a permutation drawn from ``(SHUFFLE, seed, epoch)``.
    shuffle : bool
        False keeps the examples in order.
    drop_last : bool
        Leave out the last batch when it has fewer than B examples.
    start_batch : int
        Skip the batches before this one (to resume a run).

    Yields
    ------
    k : int
        The batch index within the epoch.
    indices : np.ndarray of np.int64, shape (B,)
    """
    total = num_batches(num_examples, batch_size, drop_last)
    if not 0 <= start_batch <= total:
        raise ValueError(f"start_batch={start_batch} is outside the epoch's {total} batches")
    if shuffle:
        order = derived_rng(SHUFFLE, seed, epoch).permutation(num_examples)
    else:
        order = np.arange(num_examples)
    for k in range(start_batch, total):
        yield k, order[k * batch_size:(k + 1) * batch_size].astype(np.int64)


def pad_rows(rows, pad_value, dtype=np.int64):
    """Stack rows of different lengths into a (B, T) array, T the longest, padding on the right."""
    width = max((len(row) for row in rows), default=0)
    out = np.full((len(rows), width), pad_value, dtype=dtype)  # (B, T)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def trim_to_longest(batch):
    """Cut (B, T) arrays down to the longest row of the batch (by ``attention_mask``).

    Parameters
    ----------
    batch : dict of str -> np.ndarray
        ``attention_mask`` of shape (B, T) and other arrays; those of shape (B, T) are cut.

    Returns
    -------
    dict of str -> np.ndarray
        The same keys; (B, T) arrays become (B, T') with T' = the longest row.
    """
    mask = batch["attention_mask"]
    width = int(mask.sum(axis=1).max(initial=0))
    return {k: (v[:, :width] if v.ndim == 2 and v.shape == mask.shape else v) for k, v in batch.items()}
