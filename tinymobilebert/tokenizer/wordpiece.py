"""WordPiece: split one word into vocabulary pieces, greedy longest-match-first.

Schuster & Nakajima (2012) introduced WordPiece; BERT uses it at inference this way: starting at
the first character, take the longest prefix of the rest of the word that is in the vocabulary
(a piece that does not start the word carries the "##" continuation prefix), then continue after
it. For example, with the pieces "un", "##aff" and "##able", "unaffable" -> un ##aff ##able.

Two rules give [UNK]: a word longer than ``max_input_chars_per_word`` characters (code points),
and a word in which some position matches no piece at all; in both cases the whole word becomes a
single [UNK], never a partial split.
"""

from functools import lru_cache


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece over a fixed vocabulary.

    Parameters
    ----------
    vocab : container of str
        The pieces; only ``in`` is used (a dict token -> id or a set both work). Splits are
        cached per word, so the vocabulary must not change afterwards.
    unk_token : str
        Returned, alone, for a word that cannot be split.
    max_input_chars_per_word : int
        Longer words become ``unk_token`` without being looked at (BERT uses 100).

    Examples
    --------
    >>> WordpieceTokenizer({"un", "##aff", "##able"}, "[UNK]").tokenize("unaffable")
    ['un', '##aff', '##able']
    """

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # Words repeat a lot in real text (Zipf), so remember each word's split.
        self.split_word = lru_cache(maxsize=1 << 17)(self._split_word)

    def tokenize(self, text):
        """Split every whitespace-separated word of ``text`` and return all pieces in order."""
        pieces = []
        for word in text.split():
            pieces.extend(self.split_word(word))
        return pieces

    def _split_word(self, word):
        """The pieces of one word, as a tuple (``split_word`` is its cached twin)."""
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_token,)
        pieces = []
        start = 0
        while start < len(word):
            prefix = "##" if start > 0 else ""
            # Try the longest candidate first, then shorten it one character at a time.
            for end in range(len(word), start, -1):
                piece = prefix + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)
