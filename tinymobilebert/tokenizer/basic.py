"""BERT's basic tokenization: clean the text, split out CJK characters and punctuation.

This is the first of BERT's two tokenization stages (Devlin et al. 2019, section 3 and the
``tokenization.py`` of google-research/bert); WordPiece (``wordpiece.py``) then splits each word
it returns. The steps, in order:

1. cleaning: drop NUL, U+FFFD and every character of Unicode category C* except tab, newline and
   carriage return; turn tab/newline/return and category Zs into a plain space;
2. put spaces around each CJK ideograph, so every ideograph becomes its own word;
3. NFC-normalise, so a letter and its combining accent compare equal to the composed letter;
4. split on whitespace (``str.split``, which also splits on U+2028/U+2029);
5. per word: lower-case, then strip accents (NFD, drop category Mn) when uncased, unless the
   word is a never-split token;
6. split every punctuation character out as its own word.

"Punctuation" is BERT's definition: every non-alphanumeric printable ASCII character (so ``$``,
``^``, ``+`` count) plus every character of Unicode category P*.

Pure-ASCII text, the common case, takes a faster path (a translate table and a regex) that gives
the same words; ``tests/test_tokenizer.py`` checks the two paths against each other.
"""

import re
import unicodedata
from functools import lru_cache

# Printable ASCII that is neither a letter, a digit nor a space: 33-47, 58-64, 91-96, 123-126.
_ASCII_PUNCT = "".join(chr(c) for c in [*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)])

# CJK Unified Ideographs and their extensions and compatibility blocks. Hangul, Hiragana and
# Katakana are not here: those scripts separate words with spaces.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


@lru_cache(maxsize=1 << 16)
def is_whitespace(char):
    """True for space, tab, newline, carriage return and category Zs (e.g. U+00A0, U+3000)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


@lru_cache(maxsize=1 << 16)
def is_control(char):
    """True for category C* (Cc, Cf, Cs, Co, Cn), except tab/newline/return, which are spaces."""
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


@lru_cache(maxsize=1 << 16)
def is_punctuation(char):
    """True for BERT punctuation: non-alphanumeric printable ASCII, or category P*."""
    return char in _ASCII_PUNCT or unicodedata.category(char).startswith("P")


def is_cjk(char):
    """True when ``char`` is a CJK ideograph (see ``_CJK_RANGES``)."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def strip_accents(word):
    """Decompose (NFD) and drop the combining marks (category Mn): "Écolé" -> "Ecole"."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def split_punctuation(word):
    """Split every punctuation character out as its own piece: "don't!" -> ["don", "'", "t", "!"]."""
    pieces, current = [], []
    for char in word:
        if is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


# ASCII fast path: controls (category Cc: 0-31 and 127) vanish, tab/newline/return become spaces.
_ASCII_CLEAN = {c: None for c in [*range(32), 127]}
_ASCII_CLEAN.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})
_ASCII_WORD_OR_PUNCT = re.compile("[0-9A-Za-z]+|[" + re.escape(_ASCII_PUNCT) + "]")


class BasicTokenizer:
    """Split raw text into BERT words (before WordPiece).

    Parameters
    ----------
    do_lower_case : bool
        Lower-case every word (the "uncased" models).
    never_split : iterable of str, optional
        Words that are neither lower-cased nor split on punctuation when a whitespace-separated
        word equals one of them exactly (BERT passes its special tokens, e.g. ``"[MASK]"``).
    tokenize_chinese_chars : bool
        Make every CJK ideograph its own word.
    strip_accents : bool or None
        Remove accents. ``None`` follows ``do_lower_case``, as the original BERT does.

    Examples
    --------
    >>> BasicTokenizer().tokenize("Héllo, WORLD!  中文")
    ['hello', ',', 'world', '!', '中', '文']
    """

    def __init__(self, do_lower_case=True, never_split=None, tokenize_chinese_chars=True, strip_accents=None):
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split or ())
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents

    def _normalize_word(self, word):
        """Step 5: case and accents; ``strip_accents=False`` keeps accents even when uncased."""
        if self.do_lower_case:
            word = word.lower()
            if self.strip_accents is not False:
                word = strip_accents(word)
        elif self.strip_accents:
            word = strip_accents(word)
        return word

    def tokenize(self, text):
        """Return the list of words of ``text`` (a ``str``), in order."""
        if text.isascii():
            return self._tokenize_ascii(text)
        return self._tokenize_unicode(text)

    def _tokenize_ascii(self, text):
        # ASCII has no CJK, NFC/NFD are the identity on it and no character is in category Zs
        # besides the space, so steps 2, 3 and accent stripping are no-ops.
        text = text.translate(_ASCII_CLEAN)
        cased = text.lower() if self.do_lower_case else text
        if not any(token in text or token in cased for token in self.never_split):
            # No never-split word can be present, so split the whole text at once.
            return _ASCII_WORD_OR_PUNCT.findall(cased)
        words = []
        for word in text.split(" "):
            if not word:
                continue
            if word in self.never_split:
                words.append(word)
                continue
            if self.do_lower_case:
                word = word.lower()
            words.extend([word] if word in self.never_split else _ASCII_WORD_OR_PUNCT.findall(word))
        return words

    def _tokenize_unicode(self, text):
        chars = []
        for char in text:
            if char == "\x00" or char == "\ufffd" or is_control(char):
                continue
            if is_whitespace(char):
                chars.append(" ")
            elif self.tokenize_chinese_chars and is_cjk(char):
                chars.extend((" ", char, " "))
            else:
                chars.append(char)
        text = unicodedata.normalize("NFC", "".join(chars))
        words = []
        for word in text.split():
            if word in self.never_split:
                words.append(word)
                continue
            word = self._normalize_word(word)
            # Re-split: accent stripping can leave nothing, and the result may hold spaces.
            for piece in word.split():
                words.extend([piece] if piece in self.never_split else split_punctuation(piece))
        return words
