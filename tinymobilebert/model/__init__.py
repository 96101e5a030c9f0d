"""The model classes (see ``models``), their parameter layout (``shapes``) and outputs."""

from .base import LoadReport, MobileBertPreTrainedModel
from .models import (MobileBertForMaskedLM, MobileBertForPreTraining, MobileBertForSequenceClassification,
                     MobileBertModel)
from .outputs import BaseModelOutput, MaskedLMOutput, PreTrainingOutput, SequenceClassifierOutput

__all__ = ["LoadReport", "MobileBertPreTrainedModel", "MobileBertModel", "MobileBertForPreTraining",
           "MobileBertForMaskedLM", "MobileBertForSequenceClassification", "BaseModelOutput",
           "MaskedLMOutput", "PreTrainingOutput", "SequenceClassifierOutput"]
