"""Data for pretraining and fine-tuning small models on a laptop, with no downloads.

- ``corpus.py``: ``Document``, ``load_corpus`` (your .txt/.md files), ``train_dev_split`` (by document);
  ``sentences.py``: ``split_sentences``; ``docstrings.py``: docstring cleaning.
- ``builtin.py``: ``builtin_corpus()``, the Python standard library's docstrings (cached).
- ``masking.py``: BERT's ``mask_tokens``; ``pretraining.py``: ``PretrainingData`` (NSP pairs, MLM batches).
- ``tasks.py``: ``Task``, ``Example`` and the module-family control; fine-tuning tasks a bag of
  words cannot solve in ``word_order.py`` and ``sentence_pairs.py`` (next sentence with nearby,
  overlap-balanced negatives; sentence order); ``finetuning.py``: ``encode_examples``,
  ``example_batches``; ``glue.py``: ``load_glue`` for TSV/CSV files.
- ``bow.py``: ``bow_baseline``, the bag-of-words logistic regression to quote beside every result.
- ``batching.py``: every batch a pure function of (seed, epoch, batch index).

``python -m tinymobilebert.data`` prints the corpus size and each task's bag-of-words baseline.
"""

from .batching import derived_rng, epoch_batches
from .bow import bow_baseline
from .builtin import builtin_corpus
from .corpus import Document, load_corpus, train_dev_split
from .finetuning import encode_examples, example_batches
from .glue import load_glue
from .masking import IGNORE_INDEX, mask_tokens
from .pretraining import PretrainingData
from .sentences import split_sentences
from .sentence_pairs import next_sentence_task, sentence_order_task
from .tasks import Example, Task, module_family_task
from .word_order import word_order_task

__all__ = [
    "Document", "Example", "IGNORE_INDEX", "PretrainingData", "Task", "bow_baseline", "builtin_corpus",
    "derived_rng", "encode_examples", "epoch_batches", "example_batches", "load_corpus", "load_glue",
    "mask_tokens", "module_family_task", "next_sentence_task", "sentence_order_task", "split_sentences",
    "train_dev_split", "word_order_task",
]
