"""BERT's WordPiece tokenizer and a WordPiece vocabulary trainer, in pure Python.

``BertTokenizer`` gives the same ids as transformers' (Python) ``BertTokenizer``; its two stages
live in ``basic.py`` (cleaning, case, punctuation) and ``wordpiece.py`` (greedy longest match);
``encoding.py`` truncates and pads; ``files.py`` reads and writes ``vocab.txt``;
``trainer.py`` learns a vocabulary.
"""

from .basic import BasicTokenizer
from .bert import BertTokenizer
from .trainer import train_wordpiece
from .wordpiece import WordpieceTokenizer

__all__ = ["BertTokenizer", "BasicTokenizer", "WordpieceTokenizer", "train_wordpiece"]
