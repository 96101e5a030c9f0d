"""BertTokenizer: text <-> BERT input ids, the same as transformers' Python BertTokenizer.

Shapes: B texts (or pairs) in a batch, T tokens per row.

Tokenizing one text takes three steps:

1. cut the raw text around special tokens written in it (``"[MASK]"`` ... stay whole, even
   inside a word as in ``"a[MASK]b"``);
2. basic tokenization of every other stretch (``basic.py``: cleaning, CJK, case, accents,
   punctuation), the special tokens again kept whole;
3. WordPiece on every word (``wordpiece.py``).

``encode`` and ``__call__`` then truncate and add [CLS]/[SEP] (``encoding.py``); ``decode`` goes
back by joining the pieces with spaces and gluing "##" continuations to the piece before them.

The reference is transformers' Python tokenizer (``BertTokenizerLegacy`` in transformers 5).
Its Rust-backed twin differs in corner cases, and we follow the Python one: when an odd number
of tokens must come off a pair of equal lengths, the extra one comes off the second text (Rust:
the first); an empty second text still gets its [SEP]; and a special token that only appears
once control characters are removed (``"[MA\\x00SK]"``) stays whole. By design, ``decode``
raises on ids outside the vocabulary (transformers returns [UNK]), and only longest-first
truncation is offered (no stride, no overflowing tokens).
"""

import os
import re
from collections import Counter

from .basic import BasicTokenizer
from .encoding import build_inputs, pad_batch, padding_strategy, truncation_enabled
from .files import read_config, read_vocab, write_folder
from .wordpiece import WordpieceTokenizer

SPECIAL_NAMES = ("unk", "sep", "pad", "cls", "mask")
_CONFIG_KEYS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length",
                "clean_up_tokenization_spaces", *(f"{name}_token" for name in SPECIAL_NAMES))


def clean_up_tokenization(text):
    """Undo the spaces decoding puts before English punctuation and contractions ("don ' t")."""
    for spaced, glued in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, glued)
    return text


def _settings_from_config(config):
    """Pick our constructor arguments out of a (maybe transformers-written) tokenizer_config."""
    settings = {}
    for key in _CONFIG_KEYS:
        value = config.get(key)
        if isinstance(value, dict):  # transformers may store a special token as {"content": ...}
            value = value.get("content")
        if value is not None or key == "strip_accents":  # a null strip_accents means "follow case"
            settings[key] = value
    # transformers writes 1e30 for "no limit".
    if settings.get("model_max_length") is not None and settings["model_max_length"] >= 1e20:
        settings["model_max_length"] = None
    return settings


class BertTokenizer:
    """BERT's WordPiece tokenizer.

    Parameters
    ----------
    vocab : str, os.PathLike or sequence of str
        A ``vocab.txt`` path (or a folder holding one), or the tokens in id order.
    do_lower_case : bool
        Lower-case the text (True for "uncased" checkpoints).
    strip_accents : bool or None
        Remove accents; None follows ``do_lower_case``.
    tokenize_chinese_chars : bool
        Make every CJK ideograph its own word.
    unk_token, sep_token, pad_token, cls_token, mask_token : str
        The special tokens; each must be in the vocabulary.
    model_max_length : int or None
        Used as ``max_length`` when truncation or max_length padding is asked for without one.
    clean_up_tokenization_spaces : bool
        Default of ``decode``'s clean-up (True, as transformers' Python BertTokenizer).

    Examples
    --------
    >>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "!"])
    >>> tok.encode("Hello world!")
    [2, 5, 6, 7, 3]
    >>> tok.decode([2, 5, 6, 7, 3], skip_special_tokens=True)
    'hello world!'
    """

    def __init__(self, vocab, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True, *,
                 unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                 model_max_length=None, clean_up_tokenization_spaces=True):
        source = os.fspath(vocab) if isinstance(vocab, (str, os.PathLike)) else "the given token list"
        tokens = read_vocab(vocab) if isinstance(vocab, (str, os.PathLike)) else [str(t) for t in vocab]
        self.ids_to_tokens = tokens
        self.vocab = {token: i for i, token in enumerate(tokens)}
        if len(self.vocab) != len(tokens):
            dup = Counter(tokens).most_common(1)[0][0]
            raise ValueError(f"vocab from {source} lists token {dup!r} more than once; ids would be ambiguous")
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        missing = [t for t in self.all_special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"vocab from {source} lacks the special token(s) {missing}; a BERT vocab needs all of "
                             f"{self.all_special_tokens}")
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.basic_tokenizer = BasicTokenizer(do_lower_case, self.all_special_tokens, tokenize_chinese_chars,
                                              strip_accents)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab, unk_token)
        # Longest first, so a special token that contains another would win (none of BERT's do).
        alternatives = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")

    # ---- special tokens ------------------------------------------------------------------
    @property
    def all_special_tokens(self):
        """The five special tokens, [UNK] [SEP] [PAD] [CLS] [MASK] by default."""
        return [self.unk_token, self.sep_token, self.pad_token, self.cls_token, self.mask_token]

    @property
    def all_special_ids(self):
        return [self.vocab[t] for t in self.all_special_tokens]

    unk_token_id = property(lambda self: self.vocab[self.unk_token])
    sep_token_id = property(lambda self: self.vocab[self.sep_token])
    pad_token_id = property(lambda self: self.vocab[self.pad_token])
    cls_token_id = property(lambda self: self.vocab[self.cls_token])
    mask_token_id = property(lambda self: self.vocab[self.mask_token])

    def __len__(self):
        return len(self.ids_to_tokens)

    @property
    def vocab_size(self):
        return len(self.ids_to_tokens)

    def __repr__(self):
        return (f"BertTokenizer(vocab_size={len(self)}, do_lower_case={self.do_lower_case}, "
                f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars})")

    # ---- text -> tokens -> ids -----------------------------------------------------------
    def tokenize(self, text):
        """Split ``text`` into word pieces (strings), special tokens written in it kept whole."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pieces = []
        # re.split with a capturing group alternates: plain text, special token, plain text ...
        for i, part in enumerate(self._special_pattern.split(text)):
            if i % 2:
                pieces.append(part)
            elif part:
                for word in self.basic_tokenizer.tokenize(part):
                    pieces.extend(self.wordpiece_tokenizer.split_word(word))
        return pieces

    def convert_tokens_to_ids(self, tokens):
        """Map a token (str) or a list of tokens to ids; unknown tokens map to ``unk_token_id``."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self.vocab.get(tokens, unk)
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """Map an id or a sequence of ids to tokens; raise IndexError for ids outside the vocab."""
        if isinstance(ids, (int,)) or getattr(ids, "ndim", None) == 0:
            return self.ids_to_tokens[self._check_id(ids)]
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        return [self.ids_to_tokens[self._check_id(i)] for i in ids if int(i) not in skip]

    def _check_id(self, i):
        i = int(i)
        if not 0 <= i < len(self.ids_to_tokens):
            raise IndexError(f"token id {i} in ids is out of range: the vocab has ids 0..{len(self) - 1}")
        return i

    def encode(self, text, text_pair=None, add_special_tokens=True, max_length=None, truncation=False):
        """Encode one text, or a pair, to a list of ids.

        Parameters
        ----------
        text, text_pair : str
            ``[CLS] text [SEP]``, or ``[CLS] text [SEP] text_pair [SEP]`` for a pair.
        add_special_tokens : bool
            Add [CLS] and [SEP].
        max_length : int or None
            Longest result when ``truncation`` is on (None: ``model_max_length``).
        truncation : bool or str
            True / "longest_first": cut the end of a text; for a pair, cut the longer one first.

        Returns
        -------
        list of int
        """
        return self._encode_row(text, text_pair, add_special_tokens, max_length, truncation_enabled(truncation))[0]

    def _encode_row(self, text, text_pair, add_special_tokens, max_length, truncation):
        ids_a = self.convert_tokens_to_ids(self.tokenize(text))
        ids_b = None if text_pair is None else self.convert_tokens_to_ids(self.tokenize(text_pair))
        if truncation and max_length is None:
            max_length = self.model_max_length
        return build_inputs(ids_a, ids_b, cls_id=self.cls_token_id, sep_id=self.sep_token_id,
                            add_special_tokens=add_special_tokens, max_length=max_length, truncation=truncation)

    def __call__(self, text, text_pair=None, *, add_special_tokens=True, max_length=None, padding=False,
                 truncation=False):
        """Encode a batch of texts (or pairs) into padded arrays.

        Parameters
        ----------
        text : str or list of str
            B texts (a single str is a batch of one).
        text_pair : str or list of str, optional
            B second texts; row b is the pair (text[b], text_pair[b]).
        max_length : int or None
            Truncation limit and the width of ``padding="max_length"`` (None: model_max_length).
        padding : bool or str
            False (every row must have the same length), True / "longest", or "max_length".
        truncation : bool or str
            False, or True / "longest_first" (see ``encode``).

        Returns
        -------
        dict of str -> np.ndarray
            ``input_ids``, ``token_type_ids``, ``attention_mask``, each np.int64 of shape (B, T).
        """
        padding = padding_strategy(padding)
        truncation = truncation_enabled(truncation)
        texts = [text] if isinstance(text, str) else list(text)
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise ValueError(f"text has {len(texts)} entries but text_pair has {len(pairs)}; they must match")
        rows, types = [], []
        for a, b in zip(texts, pairs):
            row, row_types = self._encode_row(a, b, add_special_tokens, max_length, truncation)
            rows.append(row)
            types.append(row_types)
        if padding == "max_length" and max_length is None:
            max_length = self.model_max_length
        return pad_batch(rows, types, pad_id=self.pad_token_id, padding=padding, max_length=max_length)

    # ---- ids -> text ---------------------------------------------------------------------
    def convert_tokens_to_string(self, tokens):
        """Join pieces with spaces, gluing each "##" continuation to the piece before it."""
        return " ".join(tokens).replace(" ##", "").strip()

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        """Turn ids back into text (lower-cased and accent-free for an uncased vocab).

        Parameters
        ----------
        ids : sequence of int or 1-D integer array
            Token ids, e.g. one row of ``input_ids``.
        skip_special_tokens : bool
            Leave out [CLS], [SEP], [PAD], [MASK] and [UNK].
        clean_up_tokenization_spaces : bool or None
            Remove the space before ". , ! ?" and in English contractions; None uses the
            tokenizer's setting.

        Returns
        -------
        str
        """
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(ids, skip_special_tokens))
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, batch_ids, **kwargs):
        """``decode`` every row of a (B, T) array or list of lists."""
        return [self.decode(row, **kwargs) for row in batch_ids]

    # ---- files ---------------------------------------------------------------------------
    def config(self):
        """The settings written to tokenizer_config.json (readable by transformers too)."""
        config = {key: getattr(self, key) for key in _CONFIG_KEYS}
        config["tokenizer_class"] = "BertTokenizer"
        return config

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """Load from a folder holding vocab.txt (and maybe tokenizer_config.json), or a vocab file.

        Keyword arguments override the folder's tokenizer_config.json.
        """
        path = os.fspath(path)
        settings = {}
        if os.path.isdir(path):
            settings = _settings_from_config(read_config(path))
        settings.update(kwargs)
        return cls(path, **settings)

    def save_pretrained(self, folder):
        """Write ``folder/vocab.txt`` and ``folder/tokenizer_config.json`` (atomically).

        Returns
        -------
        tuple of str
            The two paths written.
        """
        return write_folder(folder, self.ids_to_tokens, self.config())

    @classmethod
    def train(cls, texts, vocab_size, **kwargs):
        """Train a WordPiece vocabulary on ``texts`` (see ``trainer.train_wordpiece``) and wrap it.

        ``do_lower_case``, ``strip_accents`` and ``tokenize_chinese_chars`` go to both the
        trainer and the tokenizer; the other keyword arguments go to the trainer.
        """
        from .trainer import train_wordpiece

        shared = {k: kwargs[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars") if k in kwargs}
        return cls(train_wordpiece(texts, vocab_size, **kwargs), **shared)
