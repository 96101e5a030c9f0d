"""Progress of a training run: a tqdm bar on a terminal, plain lines when output is redirected.

A bar redraws itself with carriage returns, which in a log file (``pretrain ... 2> run.log``, a
batch job, CI) is one unreadable line at the end, or nothing until the run ends. So when stderr
is not a terminal, a plain line is printed every ``every`` steps instead::

    pretrain: step 40/800 (5%) loss 6.214 lr 2.7e-03 | 3,120 tokens/s | 0:00:52 elapsed, ~0:16:28 left

``mode``: ``None`` picks the bar on a terminal and lines otherwise; ``True`` (or ``"bar"``)
forces the bar, ``"lines"`` the lines, ``False`` prints nothing.
"""

from __future__ import annotations

import datetime
import sys
import time


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    """Report steps ``initial + 1 ... total`` of a run (see the module notes).

    Parameters
    ----------
    mode : None, bool, "bar" or "lines"
    total, initial : int
        The run's last step and the step it starts from (a resumed run starts past 0).
    description : str
        Opens every line (e.g. "pretrain").
    every : int or None
        Steps between two lines; None: 5% of the run (at least 1).
    stream : file, default sys.stderr
    """

    def __init__(self, mode, total: int, initial: int = 0, description: str = "train", every: int | None = None,
                 stream=None):
        self.stream = stream if stream is not None else sys.stderr
        if mode is None:
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = {True: "bar", False: None}.get(mode, mode) if isinstance(mode, bool) else mode
        if self.mode not in ("bar", "lines", None):
            raise ValueError(f"progress must be None, True, False, 'bar' or 'lines', got {mode!r}")
        self.total, self.initial, self.description = int(total), int(initial), description
        self.every = max(1, int(every) if every else round(self.total / 20))
        self.start = time.perf_counter()
        self.bar = None
        if self.mode == "bar" and initial < total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True, file=self.stream)

    def update(self, step: int, record: dict | None = None) -> None:
        """Step ``step`` is done; ``record`` is the latest training log record (loss, lr, tokens/s)."""
        if self.bar is not None:
            if record is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}")
            self.bar.update(1)
        elif self.mode == "lines" and (step % self.every == 0 or step == self.total):
            print(self.line(step, record), file=self.stream, flush=True)

    def set_description(self, description: str) -> None:
        """Rename the run from now on (a distillation run names its current stage)."""
        if description != self.description:
            self.description = description
            if self.bar is not None:
                self.bar.set_description(description, refresh=False)

    def line(self, step: int, record: dict | None = None) -> str:
        """The plain progress line for ``step``."""
        elapsed = time.perf_counter() - self.start
        done = step - self.initial
        parts = [f"{self.description}: step {step}/{self.total} ({step / self.total:.0%})"]
        if record is not None:
            parts[0] += f" loss {record['loss']:.3f} lr {record['lr']:.1e}"
            parts.append(f"{record['tokens_per_second']:,.0f} tokens/s")
        left = f", ~{_clock(elapsed / done * (self.total - step))} left" if done > 0 and step < self.total else ""
        parts.append(f"{_clock(elapsed)} elapsed{left}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def notify(message: str, stream=None) -> None:
    """Tell the user something about the run (a resume, a changed setting) on stderr, one line."""
    print(f"tinymobilebert: {message}", file=stream if stream is not None else sys.stderr, flush=True)
