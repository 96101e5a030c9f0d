"""Training: the loop (``Trainer``), resumable checkpoints, evaluation helpers."""

from .checkpoints import latest_checkpoint, load_training_checkpoint, save_training_checkpoint
from .trainer import Trainer, read_log

__all__ = ["Trainer", "read_log", "latest_checkpoint", "load_training_checkpoint", "save_training_checkpoint"]
