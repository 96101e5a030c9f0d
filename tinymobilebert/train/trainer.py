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
the lines past the checkpoint's step are dropped (the killed run may have logged beyond it); a
run resumed before its first checkpoint, or started fresh, begins a new log. A fresh start in a
folder holding another run's checkpoints is refused: runs are never mixed (``run_folder.py``
decides, for the commands, whether to continue or replace a run).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..atomic import atomic_write
from ..diagnostics import NonFiniteError, check_gradients, check_loss, check_parameters
from ..threads import default_policy, for_training, get_threads
from .checkpoints import checkpoint_steps, load_newest_intact_checkpoint, remove_leftovers, save_training_checkpoint
from .progress import Progress, notify

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


def forward_backward(model, batch):
    """forward(**batch), then backward(); returns the forward pass's outputs. A NaN or inf loss
    stops here, before backward frees the caches that locate it."""
    out = model.forward(**batch)
    check_loss(model, out)  # NaN/inf: stop, naming the first non-finite block
    model.backward()
    return out


def loss_scalars(out) -> dict:
    """What a step logs of its outputs: the loss and, when the model reports them, its parts."""
    logged = {"loss": out.loss}
    for key in ("mlm_loss", "nsp_loss"):
        if getattr(out, key, None) is not None:
            logged[key] = getattr(out, key)
    return logged


def default_step(model, batch) -> dict:
    """The plain training step: ``forward_backward``, then ``loss_scalars``."""
    return loss_scalars(forward_backward(model, batch))


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
    progress : None, bool or "lines" (None: a bar when stderr is a terminal, else a plain line
        every ``progress_every`` steps; see ``progress.py``)
    progress_every : steps between plain progress lines (None: 5% of the run)
    keep_checkpoints : how many checkpoints to keep
    description : str, or callable step -> str
        What the progress bar and lines are labelled with; a callable ``description(step)`` is
        asked after every update for the update just done (a distillation run names its stage).
    step_fn : callable (model, batch) -> dict, optional
        Fills the gradients of one step (they are zeroed before it; the optimizer steps after)
        and returns the scalars to log, with at least "loss". Default: ``default_step``.
    extra_state : dict name -> object, optional
        More state to checkpoint and restore for an exact resume (a teacher's projection, token
        importances, ...): each object has ``state_dict() -> {key: array or JSON scalar}`` and
        ``load_state_dict(d)``.
    threads : None, int or "auto"
        Threads for BLAS and the kernels during ``train()`` (restored after): a number, or "auto"
        to pick the fastest count by timing steps and re-check as the machine's load changes
        (``tinymobilebert.threads``; results then differ in the last bits from a fixed count).
        None: ``threads.default_policy()`` (the command line sets "auto"; else unchanged).

    A NaN or inf loss or gradient stops the run before the update with a ``NonFiniteError``
    (a ``FloatingPointError``) naming the first non-finite layer and block, or the gradients;
    a checkpoint is never written with non-finite weights, so the last one on disk is good.
    """

    def __init__(self, model, optimizer, batches: Callable[[int, int], Iterator[dict]], out_dir: str, *,
                 max_steps: int, evaluate=None, eval_every: int = 0, save_every: int = 0, log_every: int = 1,
                 tokenizer=None, progress=None, keep_checkpoints: int = 2, description: str = "train",
                 step_fn=None, extra_state: dict | None = None, progress_every: int | None = None, threads=None):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.out_dir, self.max_steps = out_dir, int(max_steps)
        self.evaluate, self.eval_every, self.save_every = evaluate, int(eval_every), int(save_every)
        self.log_every, self.tokenizer, self.keep = max(1, int(log_every)), tokenizer, keep_checkpoints
        self.progress, self.progress_every = progress, progress_every
        self.description = description
        self.step_fn = default_step if step_fn is None else step_fn
        self.extra_state = dict(extra_state or {})
        self.threads = threads
        self.state = {"step": 0, "epoch": 0, "batch": 0}
        self.history: list[dict] = []
        self.resumed_from = None  # the checkpoint folder resume() loaded ("" for none)
        self._saved_step = None
        os.makedirs(out_dir, exist_ok=True)
        self.log_path = os.path.join(out_dir, LOG_NAME)

    # ------------------------------------------------------------------------------ resume
    def resume(self) -> bool:
        """Continue from the run's newest intact checkpoint. Returns True when one was loaded.

        Damaged checkpoints are set aside with a warning (``checkpoints.py``). With no checkpoint
        yet, says so and starts from step 0 with a fresh log.
        """
        remove_leftovers(self.out_dir)
        folder, state = load_newest_intact_checkpoint(self.out_dir, self.model, self.optimizer, self.extra_state)
        if folder is None:
            notify(f"{self.out_dir} has no checkpoint yet: starting from step 0 with a fresh log")
            self._write_log([])
            self.resumed_from = ""
            return False
        if state["step"] > self.max_steps:
            raise ValueError(f"the run's checkpoint is at step {state['step']}, past --steps {self.max_steps}: "
                             f"give --steps {state['step']} or more to continue it")
        self.state = {k: state[k] for k in ("step", "epoch", "batch")}
        self._saved_step = state["step"]
        kept = [r for r in read_log(self.log_path) if r.get("step", 0) <= self.state["step"]] \
            if os.path.exists(self.log_path) else []
        self._write_log(kept)
        self.resumed_from = folder
        return True

    def _write_log(self, records: list[dict]) -> None:
        atomic_write(self.log_path, lambda p: open(p, "w").write("".join(json.dumps(r) + "\n" for r in records)))
        self.history = list(records)

    def _start_fresh(self) -> None:
        """A run from step 0 that did not come through ``resume``: a new log, and no other run's checkpoints."""
        others = checkpoint_steps(self.out_dir)
        if others:
            raise ValueError(f"{self.out_dir} holds checkpoints of another run (steps {list(others)}): "
                             "call resume() to continue it, or use an empty folder")
        remove_leftovers(self.out_dir)
        self._write_log([])
        self.resumed_from = ""

    # ------------------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        self.history.append(record)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def _save(self) -> None:
        check_parameters(self.model, f"saving the checkpoint of step {self.state['step']}")
        self._saved_step = self.state["step"]
        save_training_checkpoint(self.out_dir, self.state["step"], self.model, self.optimizer, dict(self.state),
                                 tokenizer=self.tokenizer, keep=self.keep, extra_state=self.extra_state)

    def _run_eval(self) -> dict:
        metrics = self.evaluate(self.model)
        self.model.train()
        # the thread count changes BLAS's summation order: recorded so ``evaluate`` can repeat it
        record = {"split": "dev", "step": self.state["step"], **metrics, "threads": get_threads()["blas"]}
        self._log(record)
        return record

    def _describe(self) -> str:
        d = self.description
        return d(self.state["step"]) if callable(d) else d

    # ------------------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run until ``max_steps``; returns {"steps", "seconds", "cpu_seconds" (this process's CPU
        time, all threads), "last_train", "last_dev"}."""
        with for_training(self.threads if self.threads is not None else default_policy()) as pace:
            return self._train(pace)

    def _train(self, pace) -> dict:
        model, opt, st = self.model, self.optimizer, self.state
        if self.resumed_from is None:
            self._start_fresh()
        model.train()
        shown = Progress(self.progress, self.max_steps, st["step"], self._describe(), self.progress_every)
        start, last_train, tokens, t_window = time.perf_counter(), None, 0, time.perf_counter()
        cpu_start = time.process_time()
        last_dev = next((r for r in reversed(self.history) if r["split"] == "dev" and r["step"] == st["step"]), None)
        while st["step"] < self.max_steps:
            produced = False
            for batch in self.batches(st["epoch"], st["batch"]):
                produced = True
                pace.before_step()  # the thread count for this step (fixed, or chosen by timing)
                model.zero_grad()
                try:
                    logged = self.step_fn(model, batch)
                except NonFiniteError as e:  # raised inside the step (check_loss): say which step
                    raise NonFiniteError(f"step {st['step'] + 1}: {e}", e.where, e.block, e.tensor) from None
                if not math.isfinite(float(logged["loss"])):  # a custom step that does not check
                    raise NonFiniteError(f"loss became {logged['loss']} at step {st['step'] + 1} "
                                         "(lower the learning rate or enable clipping)", "head", "loss", "loss")
                check_gradients(model, st["step"] + 1)  # before the update: the weights stay finite
                stats = opt.step()
                pace.after_step(batch["input_ids"].size)
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
                    if pace.threads is not None:
                        record["threads"] = pace.threads
                    tokens, t_window = 0, now
                    self._log(record)
                    last_train = record
                if callable(self.description):  # a run of stages (distillation): the stage of the step done
                    shown.set_description(self.description(st["step"] - 1))
                shown.update(st["step"], last_train)
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
        shown.close()
        if self.evaluate is not None and (last_dev is None or last_dev["step"] != st["step"]):
            last_dev = self._run_eval()
        if st["step"] != self._saved_step:
            self._save()
        last_train = next((r for r in reversed(self.history) if r["split"] == "train"), None)
        return {"steps": st["step"], "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                "last_train": last_train, "last_dev": last_dev}
