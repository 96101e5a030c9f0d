"""Model outputs, with transformers' field names.

Dimensions: B batch, T tokens, H hidden width, A heads, V vocabulary, L labels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class ModelOutput:
    """Fields not computed are None. ``out["name"]`` works like ``out.name``."""

    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)}:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        return getattr(self, key)

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: np.ndarray | None = None  # (B, T, H)
    pooler_output: np.ndarray | None = None  # (B, H)
    hidden_states: tuple | None = None  # L+1 x (B, T, H): embeddings, then each layer
    attentions: tuple | None = None  # L x (B, A, T, T), after attention dropout
    attention_scores: tuple | None = None  # L x (B, A, T, T), masked and scaled, before softmax


@dataclass
class PreTrainingOutput(BaseModelOutput):
    loss: float | None = None  # mlm_loss + nsp_loss (the ones given)
    mlm_loss: float | None = None
    nsp_loss: float | None = None
    prediction_logits: np.ndarray | None = None  # (B, T, V), or (M, V) with mlm_positions="labelled"
    seq_relationship_logits: np.ndarray | None = None  # (B, 2)
    mlm_positions: np.ndarray | None = None  # (M,) flat indices of the rows the MLM head ran on
    mlm_token_losses: np.ndarray | None = None  # (M,) float64 cross-entropy at each labelled position


@dataclass
class MaskedLMOutput(BaseModelOutput):
    loss: float | None = None
    logits: np.ndarray | None = None  # (B, T, V), or (M, V) with mlm_positions="labelled"
    mlm_positions: np.ndarray | None = None  # (M,) flat indices of the rows the MLM head ran on
    mlm_token_losses: np.ndarray | None = None  # (M,) float64 cross-entropy at each labelled position


@dataclass
class SequenceClassifierOutput(BaseModelOutput):
    loss: float | None = None
    logits: np.ndarray | None = None  # (B, L)
