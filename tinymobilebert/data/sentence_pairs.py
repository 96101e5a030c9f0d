"""Sentence-pair tasks: is B the sentence right after A? Are A and B in their order?

**Next sentence.** With BERT's negatives (B from a random other document) a bag of words wins
from topic words alone. Negatives from the same document, a few sentences away from A, share
A's topic, yet a true next sentence still repeats more of A's words than a sentence two to six
away: on the built-in corpus word overlap alone scores about 0.63. So the negatives here are
built in three steps:

1. every consecutive pair (A, B) gives a positive, and a negative with the same A and a B' from
   the same document, 2 to ``max_distance`` sentences from A, itself the second sentence of
   some pair (so B' reads like a B: "This ...", "It ..."); A's words then tell nothing;
2. each example gets an overlap bin: the Jaccard index of A's and B's words, and the share of
   B's content words (four or more letters) found in A, both in steps of 0.05;
3. within every bin, the more frequent label is subsampled to the count of the other.

Overlap then says nothing about the label either, and what is left is coherence. The bag-of-words
baseline (``bow.py``, which gets overlap statistics as unpenalised features besides the words of
A, of B and of both) drops from about 0.65 to about 0.53.

**Sentence order.** Consecutive sentences, each pair once, in order (1) or swapped (0). A
middle ground: docstrings open with a summary line ("Return the ..."), a cue a bag of words with
separate A and B features picks up (about 0.62).
"""

import re

from .tasks import Example, build_task, eligible

_WORD = re.compile(r"[a-z0-9]+")
NEGATIVES = ("nearby", "same_document", "other_document")


def word_overlap(a, b):
    """(Jaccard index of A's and B's words, share of B's content words that are in A).

    Words are lower-cased runs of letters and digits; "content words" are those of four or more
    characters, a cheap stand-in for a stopword list: sharing "method" says more than sharing "the".
    """
    words_a, words_b = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    content_a, content_b = {w for w in words_a if len(w) >= 4}, {w for w in words_b if len(w) >= 4}
    jaccard = len(words_a & words_b) / max(len(words_a | words_b), 1)
    return jaccard, len(content_a & content_b) / max(len(content_b), 1)


def overlap_bin(example):
    jaccard, content_share = word_overlap(example.text_a, example.text_b)
    return int(jaccard / 0.05), int(content_share / 0.05)


def balance_within_bins(examples, key, rng):
    """Keep equal numbers of labels 0 and 1 in every bin of ``key(example)`` (in input order)."""
    groups = {}
    for i, ex in enumerate(examples):
        groups.setdefault(key(ex), ([], []))[ex.label].append(i)
    keep = []
    for negatives, positives in groups.values():
        n = min(len(negatives), len(positives))
        keep += [negatives[j] for j in rng.permutation(len(negatives))[:n]]
        keep += [positives[j] for j in rng.permutation(len(positives))[:n]]
    return [examples[i] for i in sorted(keep)]


def _consecutive_eligible(doc, min_words, max_words):
    ok = [eligible(s, min_words, max_words) for s in doc.sentences]
    return [i for i in doc.consecutive_pairs() if ok[i] and ok[i + 1]]


def _negative_candidates(doc, pairs, i, reach):
    """Sentences of ``doc`` that may stand in for the B after A = sentence i.

    Only second sentences of pairs, 2 to ``reach`` sentences from A; never A, nor a copy of a
    sentence that follows A's text anywhere in the document (a sentence may repeat).
    """
    a = doc.sentences[i]
    true_next = {doc.sentences[k + 1] for k in pairs if doc.sentences[k] == a} | {a}
    return [j + 1 for j in pairs if 1 < abs(j + 1 - i) <= reach and doc.sentences[j + 1] not in true_next]


def next_sentence_examples(docs, rng, min_words=6, max_words=40, negatives="nearby", max_distance=6,
                           balance_overlap=True):
    """Pairs (A, B), label 1 when B is the sentence right after A (see the module docstring).

    ``negatives``: ``"nearby"`` (same document, 2 to ``max_distance`` sentences away),
    ``"same_document"`` (anywhere in it) or ``"other_document"`` (BERT's; the easy control).
    ``balance_overlap``: balance the labels within overlap bins (steps 2-3 above).
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    per_doc = [(doc, _consecutive_eligible(doc, min_words, max_words)) for doc in docs]
    per_doc = [(doc, pairs) for doc, pairs in per_doc if pairs]
    if negatives == "other_document" and len(per_doc) < 2:
        return []
    examples = []
    for d, (doc, pairs) in enumerate(per_doc):
        for i in pairs:
            if negatives == "other_document":
                other, other_pairs = per_doc[(d + 1 + int(rng.integers(len(per_doc) - 1))) % len(per_doc)]
                candidates = [other.sentences[j + 1] for j in other_pairs]
            else:
                reach = max_distance if negatives == "nearby" else len(doc.sentences)
                candidates = [doc.sentences[j] for j in _negative_candidates(doc, pairs, i, reach)]
            if candidates:
                a = doc.sentences[i]
                examples.append(Example(a, doc.sentences[i + 1], 1))
                examples.append(Example(a, candidates[int(rng.integers(len(candidates)))], 0))
    return balance_within_bins(examples, overlap_bin, rng) if balance_overlap else examples


def next_sentence_task(docs, seed=0, *, negatives="nearby", max_distance=6, balance_overlap=True, dev_fraction=0.2,
                       max_train=4000, max_dev=1000, min_words=6, max_words=40):
    """Next sentence: is B the sentence right after A (1), or another one (0)?"""
    def make(split_docs, rng):
        return next_sentence_examples(split_docs, rng, min_words, max_words, negatives, max_distance, balance_overlap)

    name = "next_sentence" if negatives == "nearby" else f"next_sentence_{negatives}"
    return build_task(name, docs, make, num_labels=2, labels=["not next", "next"], seed=seed,
                      dev_fraction=dev_fraction, max_train=max_train, max_dev=max_dev)


def sentence_order_examples(docs, rng, min_words=6, max_words=40):
    """Each consecutive pair once: in order (label 1) or swapped (label 0), 50/50 at random."""
    examples = []
    for doc in docs:
        for i in _consecutive_eligible(doc, min_words, max_words):
            a, b = doc.sentences[i], doc.sentences[i + 1]
            examples.append(Example(a, b, 1) if rng.random() < 0.5 else Example(b, a, 0))
    return examples


def sentence_order_task(docs, seed=0, *, dev_fraction=0.2, max_train=4000, max_dev=1000, min_words=6, max_words=40):
    """Sentence order: are two consecutive sentences in order (1) or swapped (0)?"""
    def make(split_docs, rng):
        return sentence_order_examples(split_docs, rng, min_words, max_words)

    return build_task("sentence_order", docs, make, num_labels=2, labels=["swapped", "in order"], seed=seed,
                      dev_fraction=dev_fraction, max_train=max_train, max_dev=max_dev)
