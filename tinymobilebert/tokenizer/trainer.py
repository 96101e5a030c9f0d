"""Learn a WordPiece vocabulary from text, by byte-pair-encoding-style merges.

Google never published BERT's WordPiece trainer; like HuggingFace ``tokenizers``' WordPiece
trainer, this one runs BPE (Sennrich et al. 2016) and writes the result as WordPiece pieces:

1. Count words. Every text goes through BERT's basic tokenizer (``basic.py``: cleaning, case,
   accents, CJK and punctuation splitting), giving a count per distinct word.
2. Choose the alphabet: the ``limit_alphabet`` characters that occur most often (weighted by
   word count; ties broken by code point). Words holding any other character, and words longer
   than 100 characters, are left out from here on: WordPiece turns them into [UNK] whatever the
   vocabulary, so they would only waste merges.
3. Start the vocabulary: the special tokens, then every alphabet character (by code point), then
   "##c" for every character c seen inside a word, not at its start (by code point). Each word
   becomes a list of symbols: its first character, then "##"-prefixed characters.
4. Merge. Count every pair of adjacent symbols over all words (weighted by word count). Take the
   most frequent pair (ties: the smaller pair of ids), stop if it occurs fewer than
   ``min_frequency`` times, else add the joined piece (``"ab"`` + ``"##c"`` -> ``"abc"``,
   ``"##ab"`` + ``"##c"`` -> ``"##abc"``) and rewrite every word holding the pair. Repeat until
   the vocabulary has ``vocab_size`` pieces. A joined piece that is already in the vocabulary
   (two different merge paths can spell the same string) is reused, not added again.

Only the words holding the merged pair change, so the pair counts are updated incrementally: an
index from each pair to the words holding it finds them, their old pairs are subtracted and
their new pairs added. The most frequent pair comes from a heap whose entries may be stale
(their count has dropped since they were pushed); a stale entry is re-pushed with its current
count when it surfaces, and a pair whose count rises is pushed anew. This keeps a merge at
O(words touched) instead of O(corpus).

Because every alphabet character and every continuation "##c" seen in training is in the
vocabulary, greedy WordPiece can always fall back to single characters: no training word of
kept characters (and at most 100 of them) is turned into [UNK].
"""

import heapq
from collections import Counter, defaultdict

from .basic import BasicTokenizer

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # WordPiece's max_input_chars_per_word: longer words are [UNK] anyway


def count_words(texts, basic_tokenizer):
    """Count the basic-tokenized words of ``texts`` (an iterable of str) -> Counter word -> count."""
    counts = Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must yield str, item {i} is {type(text).__name__}")
        counts.update(basic_tokenizer.tokenize(text))
    return counts


def choose_alphabet(word_counts, limit_alphabet):
    """The at most ``limit_alphabet`` most frequent characters, sorted by code point."""
    char_counts = Counter()
    for word, count in word_counts.items():
        for char, n in Counter(word).items():
            char_counts[char] += n * count
    ranked = sorted(char_counts, key=lambda char: (-char_counts[char], char))
    return sorted(ranked[:limit_alphabet])


def merge_pair(symbols, a, b, new_id):
    """Replace each non-overlapping (a, b) in ``symbols``, left to right, by ``new_id``."""
    merged, i, n = [], 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
            merged.append(new_id)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def _check_arguments(vocab_size, min_frequency, special_tokens, limit_alphabet):
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive int, got {min_frequency!r}")
    if not isinstance(limit_alphabet, int) or limit_alphabet < 1:
        raise ValueError(f"limit_alphabet must be a positive int, got {limit_alphabet!r}")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens has duplicates: {list(special_tokens)}")
    missing = [t for t in BERT_SPECIAL_TOKENS if t not in special_tokens]
    if missing:
        raise ValueError(f"special_tokens must include {missing}: BertTokenizer needs all of {BERT_SPECIAL_TOKENS}")


def train_wordpiece(texts, vocab_size, *, do_lower_case=True, min_frequency=2, special_tokens=BERT_SPECIAL_TOKENS,
                    limit_alphabet=1000, strip_accents=None, tokenize_chinese_chars=True):
    """Learn a WordPiece vocabulary (see the module docstring for the algorithm).

    Parameters
    ----------
    texts : iterable of str
        The training text, e.g. one document or sentence per item.
    vocab_size : int
        The number of pieces wanted, special tokens included. Fewer come back when no pair
        occurs ``min_frequency`` times any more.
    do_lower_case, strip_accents, tokenize_chinese_chars
        Basic tokenization settings; use the same ones for the tokenizer.
    min_frequency : int
        A pair must occur at least this often (counting repeats of a word) to be merged.
    special_tokens : sequence of str
        The first ids, in order; must hold BERT's five. The default puts [PAD] at id 0.
    limit_alphabet : int
        The most characters kept (see step 2).

    Returns
    -------
    list of str
        The vocabulary in id order; ``BertTokenizer(tokens)`` or ``vocab.txt`` lines.
    """
    special_tokens = list(special_tokens)
    _check_arguments(vocab_size, min_frequency, special_tokens, limit_alphabet)
    basic = BasicTokenizer(do_lower_case, None, tokenize_chinese_chars, strip_accents)
    word_counts = count_words(texts, basic)
    short_words = Counter({w: c for w, c in word_counts.items() if len(w) <= MAX_WORD_CHARS})
    alphabet = choose_alphabet(short_words, limit_alphabet)
    kept = set(alphabet)
    word_counts = {w: c for w, c in short_words.items() if kept.issuperset(w)}

    # Step 3: the starting vocabulary, and every word as a list of symbol ids.
    continuations = sorted({char for word in word_counts for char in word[1:]})
    vocab = list(dict.fromkeys([*special_tokens, *alphabet, *("##" + c for c in continuations)]))
    if len(vocab) > vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} is below the starting vocabulary of {len(vocab)} pieces ({len(special_tokens)} "
            f"special tokens, {len(alphabet)} characters, {len(continuations)} '##' continuations); raise vocab_size "
            "or lower limit_alphabet"
        )
    token_to_id = {token: i for i, token in enumerate(vocab)}
    words = [[token_to_id[w[0]], *(token_to_id["##" + c] for c in w[1:])] for w in word_counts]
    counts = list(word_counts.values())

    # Step 4: pair counts, the words holding each pair, and a max-heap of (-count, a, b).
    pair_counts = Counter()
    pair_words = defaultdict(set)
    for wi, (symbols, count) in enumerate(zip(words, counts)):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += count
            pair_words[pair].add(wi)
    heap = [(-count, a, b) for (a, b), count in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg_count, a, b = heapq.heappop(heap)
        count = pair_counts.get((a, b), 0)
        if count != -neg_count:  # stale entry
            if 0 < count < -neg_count:
                heapq.heappush(heap, (-count, a, b))
            continue
        if count < min_frequency:
            break
        new_token = vocab[a] + vocab[b][2:]  # b is always a "##" continuation
        new_id = token_to_id.get(new_token)
        if new_id is None:
            new_id = token_to_id[new_token] = len(vocab)
            vocab.append(new_token)

        changes = Counter()  # net change of each pair's count from this merge
        for wi in pair_words.pop((a, b), ()):
            old = words[wi]
            new = merge_pair(old, a, b, new_id)
            if len(new) == len(old):  # the index may be stale for this word
                continue
            words[wi] = new
            old_pairs, new_pairs = Counter(zip(old, old[1:])), Counter(zip(new, new[1:]))
            for pair, n in old_pairs.items():
                changes[pair] -= n * counts[wi]
                if pair not in new_pairs:
                    pair_words[pair].discard(wi)
            for pair, n in new_pairs.items():
                changes[pair] += n * counts[wi]
                pair_words[pair].add(wi)
        for pair, change in changes.items():
            if change == 0:
                continue
            pair_counts[pair] += change
            if pair_counts[pair] <= 0:
                del pair_counts[pair]
                pair_words.pop(pair, None)
            elif change > 0:
                heapq.heappush(heap, (-pair_counts[pair], *pair))
    return vocab
