"""Fine-tuning inputs: examples -> padded arrays -> shuffled batches.

Shapes: N examples, B rows in a batch, T tokens (the longest row of the batch).

``encode_examples`` runs the tokenizer's batch call once over a whole split;
``example_batches`` then cuts each batch down to its own longest row, so short batches cost
less, and shuffles with the order of ``(seed, epoch)``, as ``PretrainingData.batches`` does.
"""

import numpy as np

from .batching import epoch_batches, trim_to_longest


def encode_examples(examples, tokenizer, max_length=128):
    """Tokenize examples into model inputs.

    Parameters
    ----------
    examples : list of Example
        All single texts (``text_b`` None) or all pairs.
    tokenizer : BertTokenizer
    max_length : int
        Rows are cut to at most this many tokens (longest-first for pairs).

    Returns
    -------
    dict of str -> np.ndarray of np.int64
        ``input_ids``, ``token_type_ids``, ``attention_mask`` of shape (N, T), T the longest
        row, and ``labels`` of shape (N,).
    """
    if not examples:
        raise ValueError("no examples to encode")
    pairs = [ex.text_b is not None for ex in examples]
    if any(pairs) and not all(pairs):
        odd = pairs.index(not pairs[0])
        kinds = ("a single text", "a pair")
        raise ValueError(f"examples mix single texts and pairs: example 0 is {kinds[pairs[0]]}, example {odd} is "
                         f"{kinds[pairs[odd]]}; encode each kind separately")
    text_b = [ex.text_b for ex in examples] if pairs[0] else None
    encoded = tokenizer([ex.text_a for ex in examples], text_b, max_length=max_length, padding=True, truncation=True)
    encoded["labels"] = np.array([ex.label for ex in examples], dtype=np.int64)  # (N,)
    return encoded


def example_batches(encoded, batch_size, epoch=0, *, seed=0, start_batch=0, shuffle=True, drop_last=False):
    """Batches of encoded examples for one epoch.

    Parameters
    ----------
    encoded : dict of str -> np.ndarray
        From ``encode_examples``.
    batch_size : int
        B.
    epoch, seed : int
        The order is drawn from (seed, epoch); batch k is a pure function of (seed, epoch, k).
    start_batch : int
        Resume at this batch.
    shuffle : bool
        False for evaluation (rows in order).
    drop_last : bool
        Leave out the last, short batch. Off by default, so evaluation sees every example.

    Yields
    ------
    dict of str -> np.ndarray of np.int64
        The same keys, (B, T) arrays cut to the batch's longest row, ``labels`` (B,).
    """
    n = len(encoded["labels"])
    for _, idx in epoch_batches(n, batch_size, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last,
                                start_batch=start_batch):
        yield trim_to_longest({key: value[idx] for key, value in encoded.items()})
