"""train_wordpiece: a hand-checked corpus, a naive gold trainer, and the promises it makes."""

import json
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples

from tinymobilebert.tokenizer import BasicTokenizer, BertTokenizer, train_wordpiece

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
with open(os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer", "cases.json"), encoding="utf-8") as _f:
    _SINGLE = json.load(_f)["single"]
# ~210 English sentences from Python docstrings: the fixtures' texts that are not hard cases (those
# are repeated under every config).
_HARD = {c["text"] for c in _SINGLE if c["config"] == "uncased_keep_accents"}
DOC_TEXTS = sorted({c["text"] for c in _SINGLE} - _HARD)


def naive_train(texts, vocab_size, min_frequency=2, limit_alphabet=1000, do_lower_case=True):
    """Gold reference: the same BPE, recounting every pair from scratch before each merge."""
    basic = BasicTokenizer(do_lower_case=do_lower_case)
    counts = Counter(w for t in texts for w in basic.tokenize(t) if len(w) <= 100)
    char_counts = Counter()
    for word, n in counts.items():
        for char in word:
            char_counts[char] += n
    alphabet = sorted(sorted(char_counts, key=lambda c: (-char_counts[c], c))[:limit_alphabet])
    counts = {w: n for w, n in counts.items() if set(w) <= set(alphabet)}
    vocab = SPECIALS + alphabet + sorted({"##" + c for w in counts for c in w[1:]}, key=lambda t: t[2:])
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += counts[w]
        if not pairs:
            break
        ids = {token: i for i, token in enumerate(vocab)}
        best = min(pairs, key=lambda p: (-pairs[p], ids[p[0]], ids[p[1]]))
        if pairs[best] < min_frequency:
            break
        new = best[0] + best[1][2:]
        if new not in vocab:
            vocab.append(new)
        for w, symbols in words.items():
            merged, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i:i + 2]) == best:
                    merged.append(new)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words[w] = merged
    return vocab


def test_hand_checked_corpus():
    # Word counts: hug 10, pug 5, pun 12, bun 4, hugs 5. Start: specials, b g h n p s u, then
    # ##g ##n ##s ##u. Pair counts: ##u ##g 20, p ##u 17, ##u ##n 16, h ##u 15 ... -> merge
    # ##ug (20); then ##un (16); hug (15); pun (12); then pug and hugs tie at 5 and pug wins,
    # its pair (p=9, ##ug=16) being smaller than (hug=18, ##s=14); last bun (4).
    text = " ".join(["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5)
    start = SPECIALS + ["b", "g", "h", "n", "p", "s", "u", "##g", "##n", "##s", "##u"]
    learned = ["##ug", "##un", "hug", "pun", "pug", "hugs", "bun"]
    assert train_wordpiece([text], 100) == start + learned
    assert train_wordpiece([text], 21) == start + learned[:5]
    assert train_wordpiece([text], 100, min_frequency=5) == start + learned[:6]  # bun (4) is too rare


def test_a_piece_spelled_twice_is_added_once():
    # "ab"+"##c" and "a"+"##bc" both spell "abc": the second merge reuses the id.
    vocab = train_wordpiece(["ab ab ab abc abc bc bc bc bc"], 100, min_frequency=1)
    assert len(vocab) == len(set(vocab))
    assert vocab == naive_train(["ab ab ab abc abc bc bc bc bc"], 100, min_frequency=1)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(st.text("abcdeé.-", min_size=1, max_size=7), min_size=1, max_size=40),
       vocab_size=st.integers(20, 60), min_frequency=st.integers(1, 3), limit_alphabet=st.integers(3, 10))
def test_equals_naive_trainer(words, vocab_size, min_frequency, limit_alphabet):
    texts = [" ".join(words[i:i + 5]) for i in range(0, len(words), 5)]
    try:
        ours = train_wordpiece(texts, vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet)
    except ValueError:  # vocab_size below the starting vocabulary
        assert len(naive_train(texts, 0, limit_alphabet=limit_alphabet)) > vocab_size
        return
    assert ours == naive_train(texts, vocab_size, min_frequency, limit_alphabet)


def test_equals_naive_trainer_on_docstrings():
    assert train_wordpiece(DOC_TEXTS, 400) == naive_train(DOC_TEXTS, 400)


@pytest.mark.parametrize("vocab_size", [200, 500, 900])
def test_size_specials_and_determinism(vocab_size):
    vocab = train_wordpiece(DOC_TEXTS, vocab_size)
    assert len(vocab) == vocab_size == len(set(vocab))
    assert vocab[:5] == SPECIALS and vocab.index("[PAD]") == 0
    assert train_wordpiece(iter(DOC_TEXTS), vocab_size) == vocab  # a generator works the same
    assert train_wordpiece(DOC_TEXTS, vocab_size + 300)[:vocab_size] == vocab  # more merges only append


def test_runs_out_of_frequent_pairs_before_a_huge_vocab_size():
    vocab = train_wordpiece(DOC_TEXTS, 20000)  # far more than ~200 sentences can fill
    assert 900 < len(vocab) < 20000 and train_wordpiece(DOC_TEXTS, 30000) == vocab


@pytest.mark.parametrize("do_lower_case, limit_alphabet", [(True, 1000), (False, 1000), (True, 30)])
def test_training_words_never_become_unk(do_lower_case, limit_alphabet):
    vocab = train_wordpiece(DOC_TEXTS, 600, do_lower_case=do_lower_case, limit_alphabet=limit_alphabet)
    tok = BertTokenizer(vocab, do_lower_case=do_lower_case)
    alphabet = {t for t in vocab[5:] if len(t) == 1}
    for word in {w for text in DOC_TEXTS for w in tok.basic_tokenizer.tokenize(text)}:
        pieces = tok.wordpiece_tokenizer.tokenize(word)
        assert (pieces == ["[UNK]"]) == (not set(word) <= alphabet or len(word) > 100), (word, pieces)
    if not do_lower_case:
        assert "The" in vocab or "T" in vocab


def test_stops_when_pairs_are_too_rare():
    vocab = train_wordpiece(["one two three"], 1000)  # every pair occurs once
    assert vocab == SPECIALS + sorted("onetwhr") + ["##e", "##h", "##n", "##o", "##r", "##w"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_size=10), "vocab_size=10"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(vocab_size=100, min_frequency=0), "min_frequency"),
    (dict(vocab_size=100, limit_alphabet=0), "limit_alphabet"),
    (dict(vocab_size=100, special_tokens=["[PAD]", "[UNK]"]), r"\[CLS\]"),
    (dict(vocab_size=100, special_tokens=SPECIALS + ["[PAD]"]), "duplicates"),
])
def test_errors_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_wordpiece(["some words here and there"], **kwargs)
    with pytest.raises(TypeError, match="item 1"):
        train_wordpiece(["fine", b"bytes"], 100)
