"""The word-order task: is a sentence as written (1), or were a few neighbouring words reordered (0)?

Each usable sentence appears once, either as written or with two adjacent words swapped or three
neighbouring words permuted, chosen at random. The two classes therefore hold the same bags of
words (the same multiset of word pieces too, since the tokenizer splits each word on its own):
a bag-of-words model is at chance by construction, and only a model of word order can win.
"""

import re

from .tasks import Example, build_task, eligible

_LETTERS = re.compile(r"^[A-Za-z]+$")


def _unique_sentences(docs, min_words, max_words):
    """The eligible sentences of ``docs``, each distinct text once, in document order."""
    return list(dict.fromkeys(s for doc in docs for s in doc.sentences if eligible(s, min_words, max_words)))


def reorder_words(sentence, rng):
    """Reorder a few neighbouring words inside ``sentence``, or None when it has no room.

    Two adjacent words swap, or a window of three is permuted (each half the time where both
    fit). Only words of letters alone move, never the first word nor the last (which carries
    the final stop), so neither capitals nor punctuation give the change away; the result
    always differs from the sentence.
    """
    words = sentence.split()
    movable = [i for i in range(1, len(words) - 1) if _LETTERS.match(words[i])]
    movable_set = set(movable)
    windows = {size: [i for i in movable if all(i + j in movable_set for j in range(size))
                      and len({words[i + j].lower() for j in range(size)}) > 1] for size in (2, 3)}
    sizes = [size for size in (2, 3) if windows[size]]
    if not sizes:
        return None
    size = sizes[int(rng.integers(len(sizes)))]
    start = windows[size][int(rng.integers(len(windows[size])))]
    window = words[start:start + size]
    while True:  # a distinct word in the window guarantees some permutation changes it
        permuted = [window[j] for j in rng.permutation(size)]
        if [w.lower() for w in permuted] != [w.lower() for w in window]:
            break
    return " ".join(words[:start] + permuted + words[start + size:])


def word_order_examples(docs, rng, min_words=6, max_words=40):
    """Each usable sentence once: as written (label 1) or reordered (label 0), 50/50 at random."""
    sentences = _unique_sentences(docs, min_words, max_words)
    corrupted = [reorder_words(s, rng) for s in sentences]
    usable = [(s, c) for s, c in zip(sentences, corrupted) if c is not None]
    keep_original = rng.permutation(len(usable)) < (len(usable) + 1) // 2
    return [Example(s, None, 1) if keep else Example(c, None, 0) for (s, c), keep in zip(usable, keep_original)]


def word_order_task(docs, seed=0, *, dev_fraction=0.2, max_train=4000, max_dev=1000, min_words=6, max_words=40):
    """Word order: a sentence as written (1) or with a few neighbouring words reordered (0)."""
    def make(split_docs, rng):
        return word_order_examples(split_docs, rng, min_words, max_words)

    return build_task("word_order", docs, make, num_labels=2, labels=["reordered", "as written"], seed=seed,
                      dev_fraction=dev_fraction, max_train=max_train, max_dev=max_dev)
