"""Pretraining examples, BERT's recipe: sentence pairs for next-sentence prediction, then MLM.

Shapes: N examples, B rows in a batch, T tokens (the longest row of the batch).

Pairs (Devlin et al. 2019, 3.1 "Task #2: NSP"; ``create_instances_from_document`` of BERT's
``create_pretraining_data.py``). Each document is walked once, gathering consecutive sentences
into a chunk until it reaches a target length (``max_length - 3`` tokens, or with probability
``short_seq_prob`` a random shorter one, so the model also sees short inputs). The chunk is cut
at a random sentence boundary into A and B. Half the time B is replaced by sentences from a
random *other* document (label 1) and the unused sentences go back to be read again; otherwise B
is the text that really follows A (label 0, "is next", transformers' convention). Unlike BERT, a
one-sentence chunk takes the following sentence as B rather than always getting a random one,
and a document's lone last sentence is left out, so the two labels are balanced. The pair is cut
longest-first to ``[CLS] A [SEP] B [SEP]`` of at most ``max_length`` tokens. With ``nsp=False``
a chunk is one segment, ``[CLS] A [SEP]``.

The pairs are built once from ``seed``. The masking (``masking.py``) is drawn per batch from
``(seed, epoch, batch index)`` (``batching.py``): new masks every epoch, and any batch can be
rebuilt on its own, which is what resuming needs.
"""

import numpy as np

from ..tokenizer.encoding import truncate_longest_first
from .batching import MASKING, PAIRS, derived_rng, epoch_batches, num_batches, pad_rows
from .masking import mask_tokens


def _target_length(max_tokens, short_seq_prob, rng):
    return int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens


def _flatten(sentences):
    return [i for sentence in sentences for i in sentence]


def pair_examples(doc_ids, max_tokens, short_seq_prob, rng):
    """Sentence pairs from tokenized documents (see the module docstring).

    Parameters
    ----------
    doc_ids : list of list of list of int
        Documents, as sentences of token ids; at least two non-empty documents.
    max_tokens : int
        The most text tokens in a pair (``max_length - 3``).
    short_seq_prob : float
    rng : np.random.Generator

    Returns
    -------
    list of (list of int, list of int, int)
        ``(ids_a, ids_b, label)``, label 0 when B follows A, 1 when B is from another document.
    """
    if len(doc_ids) < 2:
        raise ValueError("next-sentence pairs need at least two documents with text (random B comes from another)")
    examples = []
    for d, sentences in enumerate(doc_ids):
        i, chunk, length = 0, [], 0
        target = _target_length(max_tokens, short_seq_prob, rng)
        while i < len(sentences):
            chunk.append(sentences[i])
            length += len(sentences[i])
            if i == len(sentences) - 1 or length >= target:
                if len(chunk) == 1 and i == len(sentences) - 1:
                    break  # a lone last sentence has no next one; BERT pairs it at random, skewing the labels
                random_next = rng.random() < 0.5
                if not random_next and len(chunk) == 1:
                    i += 1
                    chunk.append(sentences[i])  # B is the sentence after the lone one
                a_end = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
                ids_a = _flatten(chunk[:a_end])
                if random_next:
                    other = int(rng.integers(len(doc_ids) - 1))
                    other += other >= d  # any document but this one
                    start = int(rng.integers(len(doc_ids[other])))
                    ids_b, j = [], start
                    while j < len(doc_ids[other]) and len(ids_b) < max(1, target - len(ids_a)):
                        ids_b += doc_ids[other][j]
                        j += 1
                    i -= len(chunk) - a_end  # the unused sentences are read again
                else:
                    ids_b = _flatten(chunk[a_end:])
                excess = len(ids_a) + len(ids_b) - max_tokens
                if excess > 0:
                    ids_a, ids_b = truncate_longest_first(ids_a, ids_b, excess)
                examples.append((ids_a, ids_b, int(random_next)))
                chunk, length = [], 0
                target = _target_length(max_tokens, short_seq_prob, rng)
            i += 1
    return examples


def single_examples(doc_ids, max_tokens, short_seq_prob, rng):
    """Single segments for MLM only: consecutive sentences up to a target length, cut at ``max_tokens``."""
    examples = []
    for sentences in doc_ids:
        chunk, target = [], _target_length(max_tokens, short_seq_prob, rng)
        for j, sentence in enumerate(sentences):
            chunk += sentence
            if len(chunk) >= target or j == len(sentences) - 1:
                examples.append((chunk[:max_tokens], None, -1))
                chunk, target = [], _target_length(max_tokens, short_seq_prob, rng)
    return examples


class PretrainingData:
    """Pretraining examples built once, batches masked afresh every epoch.

    Parameters
    ----------
    docs : list of Document
    tokenizer : BertTokenizer
    max_length : int
        The longest row, special tokens included.
    seed : int
        Fixes the pairs, the shuffle order of every epoch and every mask.
    nsp : bool
        Sentence pairs with next-sentence labels; False: single segments (MLM only).
    short_seq_prob : float
        The chance an example aims at a random length below ``max_length``.
    mask_prob : float
        The share of tokens chosen for MLM in each row.

    Attributes
    ----------
    num_examples : int
        N.
    num_tokens : int
        Tokens in all examples, special tokens included, padding not.
    """

    def __init__(self, docs, tokenizer, max_length=64, seed=0, nsp=True, short_seq_prob=0.1, mask_prob=0.15):
        num_special = 3 if nsp else 2
        if max_length < num_special + 2:
            raise ValueError(f"max_length={max_length} leaves no room for text: it must be at least {num_special + 2}")
        self.tokenizer, self.max_length, self.seed, self.nsp = tokenizer, max_length, seed, nsp
        self.mask_prob = mask_prob
        doc_ids = [[tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s)) for s in doc.sentences] for doc in docs]
        doc_ids = [[s for s in sentences if s] for sentences in doc_ids]
        doc_ids = [sentences for sentences in doc_ids if sentences]
        if not doc_ids:
            raise ValueError("the documents hold no sentence with tokens; nothing to pretrain on")
        build = pair_examples if nsp else single_examples
        examples = build(doc_ids, max_length - num_special, short_seq_prob, derived_rng(PAIRS, seed))
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.input_ids, self.token_type_ids = [], []
        for ids_a, ids_b, _ in examples:
            first = [cls, *ids_a, sep]
            second = [*ids_b, sep] if ids_b is not None else []
            self.input_ids.append(np.array(first + second, dtype=np.int64))
            self.token_type_ids.append(np.array([0] * len(first) + [1] * len(second), dtype=np.int64))
        self.next_sentence_label = np.array([label for *_, label in examples], dtype=np.int64)  # (N,)
        self.lengths = np.array([len(row) for row in self.input_ids], dtype=np.int64)  # (N,)
        self.special_ids = np.array([cls, sep, tokenizer.pad_token_id, tokenizer.mask_token_id], dtype=np.int64)

    @property
    def num_examples(self):
        return len(self.input_ids)

    def __len__(self):
        return self.num_examples

    @property
    def num_tokens(self):
        return int(self.lengths.sum())

    def num_batches(self, batch_size, drop_last=True):
        """Batches in one epoch."""
        return num_batches(self.num_examples, batch_size, drop_last)

    def batches(self, batch_size, epoch, start_batch=0, shuffle=True, drop_last=True):
        """The batches of one epoch, each a pure function of (seed, epoch, batch index).

        Parameters
        ----------
        batch_size : int
            B.
        epoch : int
            Picks the shuffle order and the masks.
        start_batch : int
            Resume here: yields the same batches as an uninterrupted run from this one on.
        shuffle : bool
        drop_last : bool
            Leave out the last, short batch (every step then sees B rows).

        Yields
        ------
        dict of str -> np.ndarray of np.int64
            ``input_ids`` (masked), ``token_type_ids``, ``attention_mask``, ``labels`` (original
            id at masked positions, -100 elsewhere), all (B, T) with T the batch's longest row;
            and ``next_sentence_label`` (B,) when ``nsp``.
        """
        tok = self.tokenizer
        for k, idx in epoch_batches(self.num_examples, batch_size, seed=self.seed, epoch=epoch, shuffle=shuffle,
                                    drop_last=drop_last, start_batch=start_batch):
            input_ids = pad_rows([self.input_ids[i] for i in idx], tok.pad_token_id)  # (B, T)
            token_type_ids = pad_rows([self.token_type_ids[i] for i in idx], 0)  # (B, T)
            attention_mask = (np.arange(input_ids.shape[1]) < self.lengths[idx][:, None]).astype(np.int64)  # (B, T)
            special = np.isin(input_ids, self.special_ids) | (attention_mask == 0)  # (B, T)
            masked, labels = mask_tokens(input_ids, special, derived_rng(MASKING, self.seed, epoch, k),
                                         vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id,
                                         mask_prob=self.mask_prob, never_ids=tok.all_special_ids)
            batch = {"input_ids": masked, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                     "labels": labels}
            if self.nsp:
                batch["next_sentence_label"] = self.next_sentence_label[idx]  # (B,)
            yield batch
