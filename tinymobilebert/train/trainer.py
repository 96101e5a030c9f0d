"""The training loop: steps, evaluation, logs, progress, checkpoints and exact resume.

One step is ``zero_grad -> step_fn(model, batch) -> optimizer.step()``, where the default
``step_fn`` is ``forward(**batch) -> backward()``; a custom one (distillation, DynaBERT's
sum over sub-networks, token dropping's importance update) computes the gradients its own way
and returns the scalars to log (``"loss"`` at least). Batches come
from a function ``batches(epoch, start_batch)`` that yields the batches of an epoch from a given
position; it must be a pure function of its arguments (the data pipeline derives shuffling and
masking from (seed, epoch)), so a resumed run sees exactly the batches the interrupted run would
have seen. Together with the weights, the optimizer state and the dropout generator saved in
each checkpoint, a run killed and resumed logs the same losses as one never interrupted.

Logs: one JSON object per line in ``{out}/log.jsonl``, ``{"split": "train", "step", "epoch",
"loss", ..., "lr", "tokens_per_second"}`` and ``{"split": "dev", "step", <metrics>}``. On resume
the lines past the checkpoint's step are dropped (the killed run may have logged beyond it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..atomic import atomic_write
from .checkpoints import latest_checkpoint, load_training_checkpoint, save_training_checkpoint

LOG_NAME = "log.jsonl"


def read_log(path) -> list[dict]:
    """The records of a JSONL log (a torn last line, from a kill mid-write, is ignored)."""
    path = os.path.join(path, LOG_NAME) if os.path.isdir(path) else path
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def default_step(model, batch) -> dict:
    """forward(**batch) then backward(); logs the loss and, when the model reports them, its parts."""
    out = model.forward(**batch)
    model.backward()
    logged = {"loss": out.loss}
    for key in ("mlm_loss", "nsp_loss"):
        if getattr(out, key, None) is not None:
            logged[key] = getattr(out, key)
    return logged


class Trainer:
    """Run ``max_steps`` optimizer steps of ``model`` on ``batches``.

    Parameters
    ----------
    model : a model class instance (its ``forward`` takes the batch dict's keys)
    optimizer : a ``tinymobilebert.optim`` optimizer over ``model.store``
    batches : callable (epoch, start_batch) -> iterator of batch dicts
    out_dir : str
        Where log.jsonl and checkpoints/ go (created).
    max_steps : int
    evaluate : callable model -> dict of metrics, or None
    eval_every, save_every, log_every : int (0 = never; evaluation and saving also run at the end)
    tokenizer : saved with each checkpoint when given
    progress : bool or None (None: a progress bar when stderr is a terminal)
    keep_checkpoints : how many checkpoints to keep
    step_fn : callable (model, batch) -> dict, optional
        Fills the gradients of one step (they are zeroed before it; the optimizer steps after)
        and returns the scalars to log, with at least "loss". Default: ``default_step``.
    extra_state : dict name -> object, optional
        More state to checkpoint and restore for an exact resume (a teacher's projection, token
        importances, ...): each object has ``state_dict() -> {key: array or JSON scalar}`` and
        ``load_state_dict(d)``.
    """

    def __init__(self, model, optimizer, batches: Callable[[int, int], Iterator[dict]], out_dir: str, *,
                 max_steps: int, evaluate=None, eval_every: int = 0, save_every: int = 0, log_every: int = 1,
                 tokenizer=None, progress=None, keep_checkpoints: int = 2, description: str = "train",
                 step_fn=None, extra_state: dict | None = None):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.out_dir, self.max_steps = out_dir, int(max_steps)
        self.evaluate, self.eval_every, self.save_every = evaluate, int(eval_every), int(save_every)
        self.log_every, self.tokenizer, self.keep = max(1, int(log_every)), tokenizer, keep_checkpoints
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.description = description
        self.step_fn = default_step if step_fn is None else step_fn
        self.extra_state = dict(extra_state or {})
        self.state = {"step": 0, "epoch": 0, "batch": 0}
        self.history: list[dict] = []
        os.makedirs(out_dir, exist_ok=True)
        self.log_path = os.path.join(out_dir, LOG_NAME)

    # ------------------------------------------------------------------------------ resume
    def resume(self) -> bool:
        """Load the run's latest checkpoint, if any. Returns True when one was loaded."""
        folder = latest_checkpoint(self.out_dir)
        if folder is None:
            return False
        state = load_training_checkpoint(folder, self.model, self.optimizer, self.extra_state)
        self.state = {k: state[k] for k in ("step", "epoch", "batch")}
        if os.path.exists(self.log_path):
            kept = [r for r in read_log(self.log_path) if r.get("step", 0) <= self.state["step"]]
            atomic_write(self.log_path, lambda p: open(p, "w").write("".join(json.dumps(r) + "\n" for r in kept)))
            self.history = kept
        return True

    # ------------------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        self.history.append(record)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def _save(self) -> None:
        save_training_checkpoint(self.out_dir, self.state["step"], self.model, self.optimizer, dict(self.state),
                                 tokenizer=self.tokenizer, keep=self.keep, extra_state=self.extra_state)

    def _run_eval(self) -> dict:
        metrics = self.evaluate(self.model)
        self.model.train()
        record = {"split": "dev", "step": self.state["step"], **metrics}
        self._log(record)
        return record

    # ------------------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run until ``max_steps``; returns {"steps", "seconds", "last_train", "last_dev"}."""
        model, opt, st = self.model, self.optimizer, self.state
        model.train()
        bar = None
        if self.progress and st["step"] < self.max_steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_steps, initial=st["step"], desc=self.description, dynamic_ncols=True)
        start, last_dev, tokens, t_window = time.perf_counter(), None, 0, time.perf_counter()
        while st["step"] < self.max_steps:
            produced = False
            for batch in self.batches(st["epoch"], st["batch"]):
                produced = True
                model.zero_grad()
                logged = self.step_fn(model, batch)
                stats = opt.step()
                st["step"] += 1
                st["batch"] += 1
                tokens += int(np.sum(batch["attention_mask"])) if "attention_mask" in batch else batch["input_ids"].size
                if st["step"] % self.log_every == 0 or st["step"] == self.max_steps:
                    now = time.perf_counter()
                    record = {"split": "train", "step": st["step"], "epoch": st["epoch"],
                              **{k: float(v) for k, v in logged.items()}}
                    record["lr"] = float(stats["lr"])
                    if "grad_norm" in stats:
                        record["grad_norm"] = float(stats["grad_norm"])
                    record["tokens_per_second"] = tokens / max(now - t_window, 1e-9)
                    tokens, t_window = 0, now
                    if not np.isfinite(record["loss"]):
                        raise FloatingPointError(f"loss became {record['loss']} at step {st['step']} "
                                                 "(lower the learning rate or enable clipping)")
                    self._log(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}")
                if bar is not None:
                    bar.update(1)
                if self.evaluate is not None and self.eval_every and st["step"] % self.eval_every == 0:
                    last_dev = self._run_eval()
                if self.save_every and st["step"] % self.save_every == 0:
                    self._save()
                if st["step"] >= self.max_steps:
                    break
            else:
                if not produced:
                    raise ValueError("batches(epoch, start) produced no batch: the data is smaller than one batch")
                st["epoch"] += 1
                st["batch"] = 0
        if bar is not None:
            bar.close()
        if self.evaluate is not None and (last_dev is None or last_dev["step"] != st["step"]):
            last_dev = self._run_eval()
        if not self.save_every or st["step"] % self.save_every != 0:
            self._save()
        last_train = next((r for r in reversed(self.history) if r["split"] == "train"), None)
        return {"steps": st["step"], "seconds": time.perf_counter() - start, "last_train": last_train,
                "last_dev": last_dev}
