"""BERT's masked-language-model corruption (Devlin et al. 2019, 3.1 "Task #1: Masked LM").

Shapes: B sequences in a batch, T tokens per row.

In every row, ``round(mask_prob * n)`` of its ``n`` maskable tokens (at least one when ``n`` > 0)
are chosen uniformly at random, as in BERT's ``create_pretraining_data.py``; special tokens and
padding are never chosen. A chosen token becomes [MASK] 80% of the time, a random token 10% of the
time and stays itself 10% of the time; the model must predict the original at every chosen
position, so the labels hold the original id there and -100 (ignored by the loss) elsewhere.

Choosing an exact count per row (rather than flipping a coin per token) is what BERT does, and
it makes "at least one per row" come for free. All random numbers are drawn with fixed shapes,
so the result is a pure function of the inputs and the generator's state.
"""

import numpy as np

IGNORE_INDEX = -100  # the label the cross-entropy skips (PyTorch's and transformers' default)


def mask_tokens(input_ids, special_mask, rng, *, vocab_size, mask_token_id, mask_prob=0.15, never_ids=()):
    """Corrupt a batch for masked language modelling.

    Parameters
    ----------
    input_ids : np.ndarray of int, shape (B, T)
    special_mask : np.ndarray of bool or int, shape (B, T)
        True (1) at positions never to mask: [CLS], [SEP], padding.
    rng : np.random.Generator
    vocab_size : int
        V; random replacements are drawn from ids 0..V-1.
    mask_token_id : int
    mask_prob : float
        The share of maskable tokens chosen in each row.
    never_ids : iterable of int
        Ids a random replacement never takes (the special tokens); [MASK] is always excluded.

    Returns
    -------
    masked_ids : np.ndarray of np.int64, shape (B, T)
        The corrupted input.
    labels : np.ndarray of np.int64, shape (B, T)
        The original id at chosen positions, -100 elsewhere.
    """
    input_ids = np.asarray(input_ids, dtype=np.int64)
    maskable = ~np.asarray(special_mask, dtype=bool)  # (B, T)
    if input_ids.ndim != 2 or maskable.shape != input_ids.shape:
        raise ValueError(f"input_ids and special_mask must both be (B, T); got {input_ids.shape} and {maskable.shape}")
    if not 0 < mask_prob <= 1:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob!r}")
    excluded = np.unique(np.append(np.asarray(list(never_ids), dtype=np.int64), mask_token_id))
    candidates = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), excluded)  # ids a random replacement may take
    if candidates.size == 0:
        raise ValueError("no token id is left for random replacement: never_ids covers the whole vocabulary")

    # Choose: the num_to_mask maskable positions with the smallest random keys.
    keys = rng.random(input_ids.shape)  # (B, T)
    keys[~maskable] = np.inf
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")  # (B, T) rank of each key
    num_maskable = maskable.sum(axis=1)  # (B,)
    num_to_mask = np.where(num_maskable > 0, np.maximum(1, np.rint(mask_prob * num_maskable)), 0)  # (B,)
    chosen = (rank < num_to_mask[:, None]) & maskable  # (B, T)

    # Corrupt: 80% [MASK], 10% a random id, 10% unchanged.
    action = rng.random(input_ids.shape)  # (B, T)
    random_ids = candidates[rng.integers(0, candidates.size, size=input_ids.shape)]  # (B, T)
    masked_ids = np.where(chosen & (action < 0.8), mask_token_id, input_ids)
    masked_ids = np.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked_ids)
    labels = np.where(chosen, input_ids, IGNORE_INDEX)
    return masked_ids.astype(np.int64), labels.astype(np.int64)
