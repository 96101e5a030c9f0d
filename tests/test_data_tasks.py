"""Fine-tuning tasks: split by document, balanced, deterministic, and built so words alone do not tell."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.data.bow import SparseRows, bow_baseline
from tinymobilebert.data.builtin import builtin_corpus
from tinymobilebert.data.corpus import Document
from tinymobilebert.data.finetuning import encode_examples, example_batches
from tinymobilebert.data.sentence_pairs import next_sentence_task, sentence_order_task, word_overlap
from tinymobilebert.data.tasks import Example, Task, module_family_task
from tinymobilebert.data.word_order import reorder_words, word_order_task
from tinymobilebert.tokenizer import BertTokenizer, train_wordpiece

FAMILIES = ["email", "asyncio", "logging", "json", "unittest", "http"]


@pytest.fixture(scope="module")
def docs():
    return builtin_corpus(FAMILIES)


@pytest.fixture(scope="module")
def tokenizer(docs):
    return BertTokenizer(train_wordpiece([d.text for d in docs], 1500))


@pytest.fixture(scope="module")
def where(docs):
    """sentence -> [(document name, index)] of every place it occurs."""
    places = {}
    for doc in docs:
        for i, s in enumerate(doc.sentences):
            places.setdefault(s, []).append((doc.name, i))
    return places


def _bag(text):
    return tuple(sorted(text.split()))


def _check_split_and_balance(task, docs):
    for split in (task.train, task.dev):
        counts = Counter(ex.label for ex in split)
        assert len(counts) == task.num_labels and len(set(counts.values())) == 1, counts
    train_names, dev_names = set(task.documents["train"]), set(task.documents["dev"])
    assert train_names and dev_names and train_names.isdisjoint(dev_names)  # split by document
    by_name = {doc.name: doc for doc in docs}
    train_sentences = {s for name in train_names for s in by_name[name].sentences}
    dev_sentences = {s for name in dev_names for s in by_name[name].sentences}
    for examples, own, other in ((task.train, train_sentences, dev_sentences - train_sentences),
                                 (task.dev, dev_sentences - train_sentences, train_sentences)):
        own_bags = {_bag(s) for s in own}
        for ex in examples:
            for text in (ex.text_a, ex.text_b):
                if text is not None:  # from its own side (a reordered sentence: by its bag), never the other
                    assert text not in other and (text in own or _bag(text) in own_bags)


@given(st.lists(st.sampled_from(["alpha", "beta", "Gamma", "x.y", "delta,", "the", "the"]), min_size=0, max_size=12),
       st.integers(0, 1000))
def test_reorder_words_keeps_the_bag_and_the_edges(words, seed):
    sentence = " ".join(["Start", *words, "end."])
    out = reorder_words(sentence, np.random.default_rng(seed))
    if out is not None:
        assert out != sentence and _bag(out) == _bag(sentence)
        assert out.split()[0] == "Start" and out.split()[-1] == "end."
        changed = [i for i, (a, b) in enumerate(zip(sentence.split(), out.split())) if a != b]
        assert changed[-1] - changed[0] <= 2  # a window of at most three neighbours


def test_word_order_classes_hold_the_same_bags(docs, where, tokenizer):
    task = word_order_task(docs, seed=0, max_train=1500, max_dev=400)
    assert len(task.train) == 1500 and len(task.dev) >= 200
    _check_split_and_balance(task, docs)
    bags = Counter(_bag(s) for s in where)
    used = Counter()
    for ex in task.train + task.dev:
        assert ex.text_b is None
        assert (ex.text_a in where) == (ex.label == 1)  # as written, or a reordering of a real sentence
        used[_bag(ex.text_a)] += 1
    assert all(used[bag] <= bags[bag] for bag in used)  # every sentence used once at most
    result = bow_baseline(task, tokenizer, l2_grid=(1e-2, 1e-3), iterations=150)
    assert result["majority_accuracy"] == 0.5
    assert result["best_dev_accuracy"] < 0.58  # at chance by construction (dev of 400: +-2.5% noise)


def test_next_sentence_negatives_come_from_near_in_the_same_document(docs, where):
    task = next_sentence_task(docs, seed=0, max_train=1000, max_dev=300)
    _check_split_and_balance(task, docs)
    # (Dev documents lose sentences repeated in training ones, so dev distances may be larger.)
    for ex, reach in [(ex, 6) for ex in task.train] + [(ex, 10**9) for ex in task.dev]:
        gaps = [j - i for doc_a, i in where[ex.text_a] for doc_b, j in where[ex.text_b] if doc_b == doc_a]
        assert gaps  # same document, both classes
        if ex.label == 1:
            assert 1 in gaps
        else:
            assert 1 not in gaps and any(1 < abs(gap) <= reach for gap in gaps)
    def mean_overlap(examples, label):
        return np.mean([word_overlap(ex.text_a, ex.text_b) for ex in examples if ex.label == label], axis=0)

    # Word overlap (Jaccard, share of B in A) says nothing about the label ...
    assert np.allclose(mean_overlap(task.train, 0), mean_overlap(task.train, 1), atol=0.01)
    # ... where it does with BERT's negatives, from other documents.
    control = next_sentence_task(docs, seed=0, negatives="other_document", balance_overlap=False, max_train=1000,
                                 max_dev=300)
    assert np.all(mean_overlap(control.train, 1) > mean_overlap(control.train, 0) + 0.05)
    for ex in control.train:
        follows = any(doc_a == doc_b and j == i + 1 for doc_a, i in where[ex.text_a] for doc_b, j in where[ex.text_b])
        assert follows == (ex.label == 1)


def test_sentence_order_and_determinism(docs, where):
    task = sentence_order_task(docs, seed=1, max_train=800, max_dev=200)
    _check_split_and_balance(task, docs)
    for ex in task.train:
        step = 1 if ex.label == 1 else -1  # in order: B right after A; swapped: A right after B
        assert any(doc_a == doc_b and j - i == step for doc_a, i in where[ex.text_a] for doc_b, j in where[ex.text_b])
    assert sentence_order_task(docs, seed=1, max_train=800, max_dev=200) == task
    assert sentence_order_task(docs, seed=2, max_train=800, max_dev=200) != task


def test_bag_of_words_wins_the_control(docs, where, tokenizer):
    task = module_family_task(docs, seed=0, num_families=3, max_train=900, max_dev=300)
    _check_split_and_balance(task, docs)
    result = bow_baseline(task, tokenizer, l2_grid=(1e-2, 1e-3), iterations=150)
    assert result["dev_accuracy"] > result["majority_accuracy"] + 0.2


def test_sparse_products_match_dense():
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((9, 13)) < 0.3, rng.standard_normal((9, 13)), 0.0)
    dense[:, -1] = 1.0
    rows, cols = np.nonzero(dense)
    X = SparseRows(rows, cols, dense[rows, cols], dense.shape)
    w, g = rng.standard_normal((13, 3)), rng.standard_normal((9, 3))
    assert np.allclose(X.dot(w), dense @ w) and np.allclose(X.tdot(g), dense.T @ g)
    assert np.allclose(X.take(np.array([4, 0, 7])).dot(w), dense[[4, 0, 7]] @ w)


def test_encode_and_batches(tokenizer):
    examples = [Example(f"sentence number {i} " + "word " * (i % 7), f"second {i}", i % 2) for i in range(23)]
    encoded = encode_examples(examples, tokenizer, max_length=12)
    N, T = encoded["input_ids"].shape
    assert N == 23 and T <= 12 and encoded["labels"].tolist() == [i % 2 for i in range(23)]
    assert all(v.dtype == np.int64 for v in encoded.values())
    assert encoded["token_type_ids"].max() == 1
    batches = list(example_batches(encoded, 5, epoch=1, seed=7))
    assert [len(b["labels"]) for b in batches] == [5, 5, 5, 5, 3]  # evaluation keeps the short batch
    for b in batches:
        assert b["attention_mask"].sum(1).max() == b["input_ids"].shape[1]  # cut to this batch's longest
    assert sorted(np.concatenate([b["labels"] for b in batches]).tolist()) == sorted(encoded["labels"].tolist())
    resumed = list(example_batches(encoded, 5, epoch=1, seed=7, start_batch=3))
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(batches[3:], resumed) for k in a)
    other_epoch = list(example_batches(encoded, 5, epoch=2, seed=7))
    assert not all(np.array_equal(a["labels"], b["labels"]) for a, b in zip(batches, other_epoch))
    with pytest.raises(ValueError, match="mix single texts and pairs"):
        encode_examples([Example("a b c"), Example("a", "b")], tokenizer)


def test_task_summary():
    train = [Example("a", None, 1)] * 3 + [Example("b", None, 0)]
    task = Task("t", 2, train, [Example("c", None, 1)], labels=["n", "y"])
    assert task.majority_accuracy() == 1.0 and "t: 4 train, 1 dev" in task.summary()


def test_too_little_text_is_a_clear_error():
    docs = [Document(name, name, "", ["Only one sentence lives in this little document."]) for name in "ab"]
    with pytest.raises(ValueError, match="word_order: no .*examples from 2 documents"):
        word_order_task(docs)
