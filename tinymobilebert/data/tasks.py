"""Fine-tuning tasks that need context: the task type, how every task is built, and the control.

On "which module family is this from" and on next-sentence prediction with negatives from
*other* documents, a bag-of-words logistic regression ties or beats a small pretrained
transformer: the words alone give the answer away. The tasks built here take that shortcut away:

- ``word_order.py``: is this sentence as written (1), or were a few neighbouring words
  reordered (0)? Both classes hold the same bags of words: a bag of words is at chance.
- ``sentence_pairs.py``: is B the sentence right after A (1)? Negatives come from a few
  sentences away in the same document, and labels are balanced within bins of word overlap, so
  neither topic nor overlap tells. And: are two consecutive sentences in order (1) or swapped (0)?
- here, ``module_family_task`` (which top-level package a sentence comes from): the control,
  where words suffice, as they do for ``next_sentence_task(negatives="other_document")``.

``python -m tinymobilebert.data`` prints every task's bag-of-words baseline (``bow.py``).

Every task splits by document (``train_dev_split``), and dev documents lose any sentence that
also occurs in a training document, so no dev sentence is seen in training. Labels are balanced
exactly, sizes capped, everything drawn from ``seed``. Label 1 means "yes" (as written / follows
/ in order), as in GLUE; note that BERT's pretraining NSP head uses the opposite (0 = is next).
"""

from dataclasses import dataclass, field

import numpy as np

from .batching import TASK, derived_rng
from .corpus import train_dev_split


@dataclass(frozen=True)
class Example:
    """One example: a text (or a pair) and its label id."""

    text_a: str
    text_b: str = None
    label: int = 0


@dataclass
class Task:
    """A classification task with a train and a dev set.

    Attributes
    ----------
    name : str
    num_labels : int
    train, dev : list of Example
    metric : str
    labels : list of str
        ``labels[i]`` names label id i.
    documents : dict or None
        ``{"train": [...], "dev": [...]}``: the names of the documents each side was built from.
    """

    name: str
    num_labels: int
    train: list
    dev: list
    metric: str = "accuracy"
    labels: list = field(default=None)
    documents: dict = field(default=None)

    def majority_accuracy(self):
        """Dev accuracy of always answering the most frequent training label."""
        if not self.dev:
            return float("nan")
        counts = np.bincount([ex.label for ex in self.train], minlength=self.num_labels)
        return float(np.mean([ex.label == int(counts.argmax()) for ex in self.dev]))

    def summary(self):
        return (f"{self.name}: {len(self.train)} train, {len(self.dev)} dev, {self.num_labels} labels "
                f"{self.labels}, majority dev accuracy {self.majority_accuracy():.3f}")


def eligible(sentence, min_words, max_words):
    return min_words <= len(sentence.split()) <= max_words


def balanced_sample(examples, cap, num_labels, rng):
    """Equal numbers of each label (the rarest label's count, at most cap // num_labels), shuffled."""
    by_label = [[ex for ex in examples if ex.label == label] for label in range(num_labels)]
    per_label = min(min(len(group) for group in by_label), cap // num_labels)
    chosen = [group[i] for group in by_label for i in np.sort(rng.permutation(len(group))[:per_label])]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def build_task(name, docs, make_examples, *, num_labels, labels, seed, dev_fraction, max_train, max_dev, split=None):
    """Split ``docs`` by document, make examples on each side, drop leaks, balance and cap.

    ``make_examples(docs, rng) -> list of Example`` builds the examples of one side; ``split``,
    a ``(train_docs, dev_docs)`` pair, replaces ``train_dev_split(docs, dev_fraction, seed)``.
    """
    train_docs, dev_docs = split or train_dev_split(docs, dev_fraction, seed)
    seen = {s for doc in train_docs for s in doc.sentences}
    dev_docs = [doc.without(seen) for doc in dev_docs]  # a sentence repeated in a training document
    train = make_examples(train_docs, derived_rng(TASK, seed, 0))
    dev = make_examples(dev_docs, derived_rng(TASK, seed, 1))
    train = balanced_sample(train, max_train, num_labels, derived_rng(TASK, seed, 2))
    dev = balanced_sample(dev, max_dev, num_labels, derived_rng(TASK, seed, 3))
    if not train or not dev:
        raise ValueError(f"{name}: no {'training' if not train else 'dev'} examples from {len(docs)} documents "
                         "(every label needs some); use more text, or lower min_words")
    documents = {"train": [doc.name for doc in train_docs], "dev": [doc.name for doc in dev_docs]}
    return Task(name, num_labels, train, dev, labels=labels, documents=documents)


def module_family_task(docs, seed=0, *, num_families=8, min_documents=4, dev_fraction=0.2, max_train=4000,
                       max_dev=1000, min_words=6, max_words=40):
    """Which family (top-level package) does a sentence come from? Words alone mostly tell.

    The ``num_families`` families with the most sentences among those of at least
    ``min_documents`` documents (so dev, split by document, holds some of each).
    """
    docs_per_family, sentences_per_family = {}, {}
    for doc in docs:
        docs_per_family[doc.family] = docs_per_family.get(doc.family, 0) + 1
        sentences_per_family[doc.family] = sentences_per_family.get(doc.family, 0) + len(doc.sentences)
    big = [f for f in sorted(docs_per_family) if docs_per_family[f] >= min_documents]
    families = sorted(sorted(big, key=lambda f: -sentences_per_family[f])[:num_families])
    if len(families) < 2:
        raise ValueError(f"module_family_task needs two families of {min_documents}+ documents, found {families}")
    label_of = {f: i for i, f in enumerate(families)}

    def make(split_docs, rng):
        return [Example(s, None, label_of[doc.family]) for doc in split_docs if doc.family in label_of
                for s in dict.fromkeys(doc.sentences) if eligible(s, min_words, max_words)]

    train_docs, dev_docs = [], []
    for family in families:  # split each family by document, so dev holds every family
        train_part, dev_part = train_dev_split([d for d in docs if d.family == family], dev_fraction, seed)
        train_docs += train_part
        dev_docs += dev_part
    return build_task("module_family", docs, make, num_labels=len(families), labels=families, seed=seed,
                      dev_fraction=dev_fraction, max_train=max_train, max_dev=max_dev, split=(train_docs, dev_docs))
