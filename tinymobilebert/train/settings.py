"""Settings of a training run: checks that name the flag, warm-up that fits any length, fingerprints.

Every check runs before anything is written (see ``run_folder.py``), and its error names the
command-line flag and what was expected, e.g. ``--warmup 60 is longer than the run (--steps 40)``.

Warm-up is a share of the run unless given: ``resolve_warmup(None, steps, 0.075)`` is 7.5% of
``steps`` (60 of 800), so a 40-step run warms up for 3 steps instead of failing; an explicit
``--warmup`` longer than ``--steps`` is an error.

Fingerprints (``corpus_fingerprint``, ``task_fingerprint``) are short SHA-256 digests of a run's
inputs, recorded in run.json so that a resumed run, or ``evaluate``, can tell when the text under
a corpus path changed.
"""

from __future__ import annotations

import hashlib
import json
import math


def flag(name: str) -> str:
    """The command-line flag of a setting: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def resolve_warmup(warmup, steps: int, fraction: float) -> int:
    """Warm-up steps: ``warmup`` if given (checked against ``steps``), else ``fraction`` of ``steps``."""
    if warmup is None:
        return min(int(steps), int(round(fraction * steps)))
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"--warmup must be a whole number of steps >= 0, got {warmup!r}")
    if warmup > steps:
        raise ValueError(f"--warmup {warmup} is longer than the run (--steps {steps}): give --warmup {steps} or "
                         f"less, or leave it out for {fraction:.1%} of --steps")
    return warmup


def check_whole(s: dict, name: str, least: int) -> None:
    """``s[name]`` is a whole number >= ``least``, or an error naming its flag."""
    value = s.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{flag(name)} must be a whole number >= {least}, got {value!r}")


def check_lr(s: dict, name: str = "lr") -> None:
    """``s[name]`` is a finite learning rate > 0, or an error naming its flag."""
    value = s.get(name)
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{flag(name)} must be a number > 0, got {value!r}")


def check_one_batch(task, batch_size: int) -> None:
    """A fine-tuning task has at least one batch of training examples, or an error naming the flag."""
    if len(task.train) < batch_size:
        raise ValueError(f"{task.name} has {len(task.train)} training examples, fewer than one batch "
                         f"(--batch-size {batch_size}): give more data, or a smaller --batch-size")


def check_training_settings(s: dict) -> None:
    """Check the settings every training run shares (those present in ``s``); errors name the flag."""
    for name, least in (("steps", 1), ("batch_size", 1), ("eval_every", 0), ("save_every", 0), ("eval_batches", 1),
                        ("eval_batch_size", 1), ("vocab_size", 8), ("seed", 0)):
        if name in s:
            check_whole(s, name, least)
    if "max_length" in s:
        check_whole(s, "max_length", 5)
    if "lr" in s:
        check_lr(s)
    if "dev_fraction" in s and s["dev_fraction"] is not None and not (
            isinstance(s["dev_fraction"], (int, float)) and 0 <= s["dev_fraction"] < 1):
        raise ValueError(f"--dev-fraction must be in [0, 1) (the share of the text held out), got {s['dev_fraction']!r}")


def check_max_length(max_length: int, config) -> None:
    if max_length > config.max_position_embeddings:
        raise ValueError(f"--max-length {max_length} is more than the model's max_position_embeddings "
                         f"({config.max_position_embeddings}); lower it, or raise max_position_embeddings with --config")


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def corpus_fingerprint(docs) -> str:
    """A digest of the documents' names and texts."""
    return _digest((d.name, d.text) for d in docs)


def task_fingerprint(task) -> str:
    """A digest of a task's examples and label names."""
    rows = [("labels", task.labels)]
    rows += [(split, e.text_a, e.text_b, int(e.label)) for split in ("train", "dev") for e in getattr(task, split)]
    return _digest(rows)
