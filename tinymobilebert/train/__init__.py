"""Training: the loop (``Trainer``), resumable checkpoints, run folders, evaluation helpers."""

from .checkpoints import (CheckpointWarning, NoIntactCheckpointError, latest_checkpoint, load_newest_intact_checkpoint,
                          load_training_checkpoint, save_training_checkpoint, verify_checkpoint)
from .trainer import Trainer, read_log

__all__ = ["Trainer", "read_log", "latest_checkpoint", "load_training_checkpoint", "save_training_checkpoint",
           "load_newest_intact_checkpoint", "verify_checkpoint", "CheckpointWarning", "NoIntactCheckpointError"]
