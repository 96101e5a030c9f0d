"""Evaluation: held-out masked-LM loss and accuracy, next-sentence accuracy, classification accuracy.

Each evaluator runs the model in eval mode without keeping caches, over batches from a function
``batches()`` that yields the same dicts the training loop sees (for MLM, the held-out masking is
drawn once from a fixed epoch, so every evaluation scores the same positions).
"""

from __future__ import annotations

import numpy as np


def evaluate_pretraining(model, batches) -> dict:
    """{"mlm_loss", "mlm_accuracy", "nsp_accuracy", "masked_tokens"} over the batches.

    MLM loss and accuracy are over every labelled position (not averaged per batch).
    """
    model.eval()
    loss_sum, correct, count, nsp_correct, nsp_count = 0.0, 0, 0, 0, 0
    for batch in batches():
        labels = batch["labels"]
        out = model.forward(**batch, keep_cache=False, mlm_positions="labelled")
        n = int((labels != -100).sum())
        if n:
            gold = labels.reshape(-1)[out.mlm_positions]
            correct += int((out.prediction_logits.argmax(axis=1) == gold).sum())
            loss_sum += out.mlm_loss * n
            count += n
        if "next_sentence_label" in batch:
            nsp_correct += int((out.seq_relationship_logits.argmax(axis=1) == batch["next_sentence_label"]).sum())
            nsp_count += len(batch["next_sentence_label"])
    result = {"mlm_loss": loss_sum / max(count, 1), "mlm_accuracy": correct / max(count, 1), "masked_tokens": count}
    if nsp_count:
        result["nsp_accuracy"] = nsp_correct / nsp_count
    return result


def evaluate_classification(model, batches) -> dict:
    """{"loss", "accuracy", "examples"} over the batches (labels are class ids)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches():
        out = model.forward(**batch, keep_cache=False)
        n = len(batch["labels"])
        loss_sum += out.loss * n
        correct += int((out.logits.argmax(axis=1) == batch["labels"]).sum())
        count += n
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "examples": count}
