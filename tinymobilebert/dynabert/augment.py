"""Optional data augmentation for DynaBERT's distillation: word replacement by the model's own MLM.

Shapes: N examples, T tokens, V vocabulary, K candidates.

DynaBERT trains on TinyBERT's augmented data (``TinyBERT/data_augmentation.py``): every
single-piece word, with probability 0.4, replaced by one of BERT-MLM's 15 best candidates for it
(multi-piece words by GloVe neighbours), N attempts per example. Here, small and self-contained
(no GloVe, no download), from the pretrained model's own MLM head:

* candidate positions are single-piece words: not a special token, not a ``##`` continuation,
  not followed by one, not punctuation; each is chosen with probability ``replace_prob``;
* the chosen positions of a copy are masked *together* and the MLM runs once per copy (TinyBERT
  masks one word at a time, one forward pass per word: T times the work);
* each is replaced by a token drawn uniformly from the MLM's ``top_k`` candidates there (the
  original word may be among them), only words: never a special token, a ``##`` piece or
  punctuation;
* copies equal to their original or to an earlier copy are dropped; there is no stop-word list.

Augmented rows keep their example's label, but the distillation stages never read labels: the
teacher's outputs are the targets. The final fine-tuning stage uses the original rows only.
"""

from __future__ import annotations

import numpy as np

REPLACE_PROB = 0.4  # TinyBERT's p
TOP_K = 15  # TinyBERT's M


def _vocab_classes(tokenizer):
    """(special, piece, word) (V,) bool each: special tokens, ``##`` pieces, tokens with a letter or digit."""
    vocab = tokenizer.ids_to_tokens
    special = np.zeros(len(vocab), bool)
    special[tokenizer.all_special_ids] = True
    piece = np.array([t.startswith("##") for t in vocab])
    word = np.array([any(c.isalnum() for c in t) for t in vocab])
    return special, piece, word


def replaceable_positions(input_ids, attention_mask, tokenizer) -> np.ndarray:
    """(N, T) bool: single-piece words that may be replaced (see the module notes)."""
    special, piece, word = _vocab_classes(tokenizer)
    ids = np.asarray(input_ids)
    follows_piece = np.zeros(ids.shape, bool)
    follows_piece[:, :-1] = piece[ids[:, 1:]]  # the next token continues this word
    return (np.asarray(attention_mask) > 0) & ~special[ids] & ~piece[ids] & word[ids] & ~follows_piece


def augment_examples(encoded: dict, mlm_model, tokenizer, copies: int, rng, replace_prob: float = REPLACE_PROB,
                     top_k: int = TOP_K, batch_size: int = 64) -> dict:
    """Up to ``copies`` augmented rows per example, appended after the originals.

    Parameters
    ----------
    encoded : dict from ``data.encode_examples`` (``input_ids`` (N, T), ..., ``labels`` (N,))
    mlm_model : a model with an MLM head (``MobileBertForMaskedLM`` / ``ForPreTraining``) sharing
        ``tokenizer``'s vocabulary
    tokenizer : BertTokenizer
    copies : attempts per example (duplicates dropped)
    rng : np.random.Generator

    Returns
    -------
    dict of the same keys, (N + N', T): the originals, then the N' new rows.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    if mlm_model.config.vocab_size != len(tokenizer):
        raise ValueError(f"the MLM model's vocabulary ({mlm_model.config.vocab_size}) is not the tokenizer's "
                         f"({len(tokenizer)}): augmentation needs the model the data was tokenized for")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    N, T = ids.shape
    # candidates: words (not special, not a ## piece, not punctuation), like what they replace
    special, piece, word = _vocab_classes(tokenizer)
    allowed = word & ~piece & ~special  # (V,)
    if not 1 <= top_k <= allowed.sum():
        raise ValueError(f"top_k must be between 1 and the number of word tokens ({allowed.sum()}), got {top_k}")
    positions = replaceable_positions(ids, mask, tokenizer)
    mlm_model.eval()
    new_rows, seen = [], {ids[i].tobytes() for i in range(N)}
    for _ in range(copies):
        chosen = positions & (rng.random((N, T)) < replace_prob)  # (N, T)
        out = ids.copy()
        for start in range(0, N, batch_size):
            rows = slice(start, start + batch_size)
            if not chosen[rows].any():
                continue
            masked = np.where(chosen[rows], tokenizer.mask_token_id, ids[rows])
            kwargs = {k: encoded[k][rows] for k in ("token_type_ids", "attention_mask") if k in encoded}
            # the MLM head at the chosen positions only: (K', V) logits, in np.nonzero's row-major order
            res = mlm_model.forward(masked, **kwargs, labels=np.where(chosen[rows], ids[rows], -100),
                                    mlm_positions="labelled", keep_cache=False)
            logits = getattr(res, "logits", None)  # MaskedLM: logits; PreTraining: prediction_logits
            logits = res.prediction_logits if logits is None else logits  # (K', V)
            r, t = np.nonzero(chosen[rows])
            scores = np.where(allowed, logits, -np.inf)  # (K', V)
            top = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]  # (K', top_k), any order
            top.sort(axis=1)  # a fixed order, so the draw depends on the seed only
            pick = top[np.arange(len(r)), rng.integers(0, top_k, len(r))]
            out[start + r, t] = pick
        for i in np.flatnonzero(chosen.any(axis=1)):
            key = out[i].tobytes()
            if key not in seen:
                seen.add(key)
                new_rows.append((i, out[i]))
    idx = np.array([i for i, _ in new_rows], np.int64)
    result = {k: np.concatenate([v, v[idx]]) for k, v in encoded.items()}
    if new_rows:
        result["input_ids"][N:] = np.stack([row for _, row in new_rows])
    return result
