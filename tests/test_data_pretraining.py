"""Pretraining data: NSP pairs (balance, label convention), padding, determinism, exact resume."""

import numpy as np
import pytest

from tinymobilebert.data.batching import derived_rng, epoch_batches
from tinymobilebert.data.builtin import builtin_corpus
from tinymobilebert.data.masking import IGNORE_INDEX
from tinymobilebert.data.pretraining import PretrainingData, pair_examples
from tinymobilebert.tokenizer import BertTokenizer, train_wordpiece

KEYS = ("input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label")


@pytest.fixture(scope="module")
def docs():
    return builtin_corpus(["json", "email", "logging"])


@pytest.fixture(scope="module")
def tokenizer(docs):
    return BertTokenizer(train_wordpiece([d.text for d in docs], 1500))


@pytest.fixture(scope="module")
def data(docs, tokenizer):
    return PretrainingData(docs, tokenizer, max_length=64, seed=3)


def _same(batches_a, batches_b):
    return len(batches_a) == len(batches_b) and all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(batches_a, batches_b))


def test_pairs_label_convention_and_balance():
    # Sentence s of document d is the tokens 1000 d + 10 s + (0, 1, ...): runs are easy to check.
    rng = np.random.default_rng(0)
    doc_ids = [[list(range(1000 * d + 10 * s, 1000 * d + 10 * s + int(rng.integers(1, 8))))
                for s in range(int(rng.integers(1, 60)))] for d in range(100)]
    streams = [[i for s in doc for i in s] for doc in doc_ids]
    examples = pair_examples(doc_ids, max_tokens=40, short_seq_prob=0.2, rng=np.random.default_rng(1))
    labels = np.array([label for *_, label in examples])
    assert len(examples) > 400 and abs(labels.mean() - 0.5) < 0.06
    for ids_a, ids_b, label in examples:
        assert ids_a and ids_b and len(ids_a) + len(ids_b) <= 40
        assert ids_a[0] % 10 == 0 and ids_b[0] % 10 == 0  # both start at a sentence start
        doc_a, doc_b = ids_a[0] // 1000, ids_b[0] // 1000
        if label == 0:  # "is next": B is the text right after A, in the same document
            stream = streams[doc_a]
            start = stream.index(ids_a[0])
            if len(ids_a) + len(ids_b) < 40:  # not truncated: one unbroken run
                assert stream[start:start + len(ids_a) + len(ids_b)] == ids_a + ids_b
            assert doc_b == doc_a and ids_b[0] > ids_a[-1]
        else:  # random next: B from another document
            assert doc_b != doc_a


def test_examples_are_well_formed(data, tokenizer):
    assert data.num_examples > 100
    assert abs(data.next_sentence_label.mean() - 0.5) < 0.06
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for ids, types in zip(data.input_ids, data.token_type_ids):
        assert len(ids) <= 64 and ids[0] == cls and ids[-1] == sep and (ids == sep).sum() == 2
        first_sep = int(np.flatnonzero(ids == sep)[0])
        assert np.all(types[:first_sep + 1] == 0) and np.all(types[first_sep + 1:] == 1)
    assert data.num_tokens == sum(len(ids) for ids in data.input_ids)


def test_batches_pad_to_the_longest_and_mask_only_text(data, tokenizer):
    batches = list(data.batches(16, epoch=0))
    assert len(batches) == data.num_examples // 16 == data.num_batches(16)  # the last short batch is dropped
    for batch in batches:
        assert set(batch) == set(KEYS) and all(v.dtype == np.int64 for v in batch.values())
        B, T = batch["input_ids"].shape
        assert B == 16 and batch["next_sentence_label"].shape == (16,)
        mask = batch["attention_mask"].astype(bool)
        assert mask.sum(1).max() == T  # padded to this batch's longest row only
        assert np.all(batch["input_ids"][~mask] == tokenizer.pad_token_id)
        assert np.all(batch["token_type_ids"][~mask] == 0)
        chosen = batch["labels"] != IGNORE_INDEX
        assert not chosen[~mask].any()
        assert not np.isin(batch["labels"][chosen], [tokenizer.cls_token_id, tokenizer.sep_token_id]).any()
        assert chosen.any(1).all()
    seen = sum(int(b["attention_mask"].sum()) for b in data.batches(16, 0, shuffle=False, drop_last=False))
    assert seen == data.num_tokens


def test_determinism_fresh_masks_and_exact_resume(data, docs, tokenizer):
    again = PretrainingData(docs, tokenizer, max_length=64, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(data.input_ids, again.input_ids))
    epoch2 = list(data.batches(8, epoch=2))
    assert _same(epoch2, list(again.batches(8, epoch=2)))
    assert _same(epoch2[5:], list(data.batches(8, epoch=2, start_batch=5)))
    assert not _same(epoch2, list(data.batches(8, epoch=3)))
    # Same rows in two epochs (no shuffling): new masks.
    e0, e1 = next(data.batches(8, 0, shuffle=False)), next(data.batches(8, 1, shuffle=False))
    assert np.array_equal(e0["attention_mask"], e1["attention_mask"])
    assert not np.array_equal(e0["labels"], e1["labels"])
    other_seed = PretrainingData(docs, tokenizer, max_length=64, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(data.input_ids, other_seed.input_ids))


def test_mlm_only(docs, tokenizer):
    single = PretrainingData(docs, tokenizer, max_length=32, seed=0, nsp=False)
    batch = next(single.batches(4, 0))
    assert "next_sentence_label" not in batch and np.all(batch["token_type_ids"] == 0)
    assert all(len(ids) <= 32 and (ids == tokenizer.sep_token_id).sum() == 1 for ids in single.input_ids)


def test_streams_and_errors(data):
    # numpy's SeedSequence equates [a, b] and [a, b, 0]: the stream tag keeps purposes apart.
    assert derived_rng(1, 0, 0).random() != derived_rng(2, 0, 0).random()
    assert [k for k, _ in epoch_batches(10, 3, seed=0, epoch=0, drop_last=False, start_batch=2)] == [2, 3]
    with pytest.raises(ValueError, match="start_batch"):
        list(data.batches(8, 0, start_batch=10**6))
    with pytest.raises(ValueError, match="non-negative"):
        list(data.batches(8, -1))
    with pytest.raises(ValueError, match="two documents"):
        pair_examples([[[1, 2]]], 10, 0.0, np.random.default_rng(0))


def test_mask_rate_is_berts_fifteen_percent(data):
    """The pretraining batches themselves (not only ``mask_tokens``): every row labels exactly
    round(0.15 n) of its n maskable tokens (at least one), 15% overall. A different default rate,
    or one not passed through to the masking, fails here."""
    assert data.mask_prob == 0.15
    chosen = maskable = 0
    for epoch in (0, 1):
        for b in data.batches(16, epoch):
            labelled = b["labels"] != IGNORE_INDEX
            original = np.where(labelled, b["labels"], b["input_ids"])  # unchosen tokens are unchanged
            can = (b["attention_mask"] == 1) & ~np.isin(original, data.special_ids)  # (B, T)
            n, k = can.sum(axis=1), labelled.sum(axis=1)
            assert np.array_equal(k, np.where(n > 0, np.maximum(1, np.rint(0.15 * n)), 0))
            assert not (labelled & ~can).any()
            chosen, maskable = chosen + k.sum(), maskable + n.sum()
    assert maskable > 5000 and abs(chosen / maskable - 0.15) < 0.005
