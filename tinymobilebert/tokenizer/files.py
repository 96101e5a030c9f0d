"""Reading and writing a tokenizer folder: ``vocab.txt`` and ``tokenizer_config.json``.

``vocab.txt`` holds one token per line, the line number (from 0) being the token's id; this is
the format of every BERT checkpoint, so a folder saved here loads in transformers and back.
Writes are atomic: the text goes to a temporary file in the same folder, which ``os.replace``
then renames over the target, so a crash never leaves a half-written vocabulary behind.
"""

import json
import os

from ..atomic import write_text_atomic

VOCAB_NAME = "vocab.txt"
CONFIG_NAME = "tokenizer_config.json"


def resolve_vocab_path(path):
    """Return the vocab file for ``path``: the file itself, or ``path/vocab.txt`` for a folder."""
    path = os.fspath(path)
    candidate = os.path.join(path, VOCAB_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise FileNotFoundError(
            f"no vocabulary file at {candidate!r}: pass a folder holding {VOCAB_NAME} or the path of "
            "the vocab file itself (nothing is downloaded; model names are not resolved)"
        )
    return candidate


def read_vocab(path):
    """Read the tokens of a vocab file (or of a folder's ``vocab.txt``), in id order.

    Returns
    -------
    tokens : list of str
        ``tokens[i]`` is the token with id ``i``.
    """
    path = resolve_vocab_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a vocabulary (one token per line, UTF-8): {e}; damaged, or another kind "
                         "of file?") from None
    if not text:
        raise ValueError(f"{path}: the vocabulary file is empty")
    # Split on "\n" only: str.splitlines would also break on U+2028, U+0085 ... which can be
    # characters of a token. A final newline ends the last line rather than adding an empty one.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_config(folder):
    """Return the dict in ``folder/tokenizer_config.json``, or ``{}`` when there is none."""
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_folder(folder, tokens, config):
    """Write ``tokens`` as ``folder/vocab.txt`` and ``config`` as its tokenizer_config.json.

    Returns
    -------
    paths : tuple of str
        The vocab path and the config path.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    bad = [i for i, token in enumerate(tokens) if "\n" in token or "\r" in token]
    if bad:
        raise ValueError(f"tokens with ids {bad[:5]} contain a line break and cannot be written to {VOCAB_NAME}")
    vocab_path = os.path.join(folder, VOCAB_NAME)
    config_path = os.path.join(folder, CONFIG_NAME)
    write_text_atomic(vocab_path, "".join(token + "\n" for token in tokens))
    write_text_atomic(config_path, json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return vocab_path, config_path
