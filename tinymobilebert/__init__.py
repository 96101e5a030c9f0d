"""tinymobilebert: MobileBERT and the methods around it, from scratch in NumPy + Numba.

Every forward pass has a hand-written backward pass beside it (``blocks``), every Numba kernel a
plain-NumPy twin (``kernels``), and ``gradcheck`` proves the backward passes by finite differences.
"""

from . import config as configs
from .config import MobileBertConfig
from .model import (MobileBertForMaskedLM, MobileBertForPreTraining, MobileBertForSequenceClassification,
                    MobileBertModel)
from .tokenizer import BertTokenizer

__version__ = "0.1.0"

__all__ = ["BertTokenizer", "MobileBertConfig", "MobileBertModel", "MobileBertForPreTraining", "MobileBertForMaskedLM",
           "MobileBertForSequenceClassification", "configs", "__version__"]
