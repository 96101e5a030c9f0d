"""tinymobilebert: MobileBERT and the methods around it, from scratch in NumPy + Numba.

Every forward pass has a hand-written backward pass beside it (``blocks``), every Numba kernel a
plain-NumPy twin (``kernels``), and ``gradcheck`` proves the backward passes by finite differences.
"""

from ._malloc import keep_freed_memory

keep_freed_memory()  # glibc: reuse freed activations' pages instead of faulting them in every step

from . import config as configs  # noqa: E402
from .config import MobileBertConfig  # noqa: E402
from .model import (MobileBertForMaskedLM, MobileBertForPreTraining, MobileBertForSequenceClassification,
                    MobileBertModel)
from .tokenizer import BertTokenizer

__version__ = "0.1.0"

__all__ = ["BertTokenizer", "MobileBertConfig", "MobileBertModel", "MobileBertForPreTraining", "MobileBertForMaskedLM",
           "MobileBertForSequenceClassification", "configs", "__version__"]
