"""Turning token ids into model inputs: truncation, special tokens, padding.

Shapes: B sentences (or sentence pairs) in a batch, T tokens per row after padding.

A BERT input is ``[CLS] a [SEP]`` for one text and ``[CLS] a [SEP] b [SEP]`` for a pair, with
token type 0 up to and including the first [SEP] and 1 after it (Devlin et al. 2019, 3.2).
Truncation removes text tokens, never special ones, so a row holds at most ``max_length`` ids.
"""

import numpy as np

PADDING_VALUES = "False, True, 'longest', 'max_length' or 'do_not_pad'"
TRUNCATION_VALUES = "False, True, 'longest_first' or 'do_not_truncate'"


def padding_strategy(padding):
    """Map the ``padding`` argument to "none", "longest" or "max_length" (else ValueError)."""
    if padding is False or padding == "do_not_pad":
        return "none"
    if padding is True or padding == "longest":
        return "longest"
    if padding == "max_length":
        return "max_length"
    raise ValueError(f"padding must be {PADDING_VALUES}, got {padding!r}")


def truncation_enabled(truncation):
    """Map the ``truncation`` argument to a bool (True means longest-first) (else ValueError)."""
    if truncation is False or truncation == "do_not_truncate":
        return False
    if truncation is True or truncation == "longest_first":
        return True
    raise ValueError(f"truncation must be {TRUNCATION_VALUES}, got {truncation!r}")


def check_max_length(max_length, num_special, is_pair):
    """Raise ValueError unless ``max_length`` leaves room for the ``num_special`` special tokens."""
    if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool):
        raise ValueError(f"max_length must be an int, got {max_length!r}")
    if max_length < num_special:
        what = "a pair [CLS] a [SEP] b [SEP]" if is_pair else "[CLS] text [SEP]"
        raise ValueError(
            f"max_length={max_length} is too small: {what} needs {num_special} special tokens, "
            f"so max_length must be at least {num_special}"
        )


def truncate_longest_first(ids_a, ids_b, num_to_remove):
    """Remove ``num_to_remove`` ids from the ends of two sequences, always from the longer one.

    Removing one token at a time from whichever sequence is longer (the second one on a tie)
    amounts to: first cut the longer one down to the other's length, then split what is left to
    remove in half, the second sequence taking the odd one. That closed form is what this does.

    Parameters
    ----------
    ids_a, ids_b : list of int
        The two sequences, without special tokens.
    num_to_remove : int
        How many ids to drop in total; at most ``len(ids_a) + len(ids_b)``.

    Returns
    -------
    ids_a, ids_b : list of int
        The shortened sequences (prefixes of the inputs).
    """
    len_a, len_b = len(ids_a), len(ids_b)
    first = min(abs(len_a - len_b), num_to_remove)  # evens out the two lengths
    rest = num_to_remove - first  # then taken alternately, second sequence on ties
    if len_a > len_b:
        remove_a, remove_b = first + rest // 2, rest - rest // 2
    else:
        remove_a, remove_b = rest // 2, first + rest - rest // 2
    return ids_a[: len_a - remove_a], ids_b[: len_b - remove_b]


def build_inputs(ids_a, ids_b, *, cls_id, sep_id, add_special_tokens, max_length, truncation):
    """Truncate and add special tokens to one text or one pair.

    Parameters
    ----------
    ids_a : list of int
        The first text's token ids.
    ids_b : list of int or None
        The second text's ids, or None for a single text.
    add_special_tokens : bool
        Add [CLS] and [SEP]s (they count towards ``max_length``).
    max_length : int or None
        The longest row allowed when ``truncation`` is on.
    truncation : bool
        Cut text tokens so the row has at most ``max_length`` ids: the end of a single text,
        longest-first for a pair.

    Returns
    -------
    input_ids, token_type_ids : list of int
        Equal lengths.
    """
    is_pair = ids_b is not None
    num_special = (3 if is_pair else 2) if add_special_tokens else 0
    if truncation and max_length is not None:
        check_max_length(max_length, num_special, is_pair)
        excess = len(ids_a) + len(ids_b or ()) + num_special - max_length
        if excess > 0:
            if is_pair:
                ids_a, ids_b = truncate_longest_first(ids_a, ids_b, excess)
            else:
                ids_a = ids_a[: len(ids_a) - excess]
    if add_special_tokens:
        first = [cls_id, *ids_a, sep_id]
        second = [*ids_b, sep_id] if is_pair else []
    else:
        first, second = list(ids_a), list(ids_b or ())
    return first + second, [0] * len(first) + [1] * len(second)


def pad_batch(rows, types, *, pad_id, padding, max_length):
    """Stack rows of ids into (B, T) int64 arrays, padding on the right.

    Parameters
    ----------
    rows, types : list of list of int
        Input ids and token type ids of each row (equal lengths row by row).
    pad_id : int
        The id written into padding positions (their type id is 0, their mask 0).
    padding : str
        "none" (rows must already have one length), "longest" or "max_length".
    max_length : int or None
        T for "max_length"; ignored otherwise.

    Returns
    -------
    dict
        ``input_ids``, ``token_type_ids``, ``attention_mask``: np.int64 arrays of shape (B, T).
    """
    lengths = [len(row) for row in rows]
    if padding == "max_length":
        if max_length is None:
            raise ValueError("padding='max_length' needs max_length (or a tokenizer model_max_length)")
        if max(lengths, default=0) > max_length:
            raise ValueError(
                f"a row has {max(lengths)} tokens, more than max_length={max_length}; "
                "pass truncation=True to cut it, or padding=True to pad to the longest row"
            )
        width = max_length
    else:
        width = max(lengths, default=0)
        if padding == "none" and len(set(lengths)) > 1:
            raise ValueError(
                f"rows have different lengths ({min(lengths)} to {max(lengths)} tokens) and padding=False; "
                "arrays need one length, so pass padding=True or padding='max_length'"
            )
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # (B, T)
    token_type_ids = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
    for i, (row, row_types) in enumerate(zip(rows, types)):
        input_ids[i, : len(row)] = row
        token_type_ids[i, : len(row)] = row_types
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
