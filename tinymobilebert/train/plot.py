"""Loss and metric curves of one or more runs, from their log.jsonl, to a PNG (matplotlib)."""

from __future__ import annotations

import os

import numpy as np

from ..atomic import save_figure
from .trainer import read_log


def smooth(values, window: int):
    """Trailing moving average (the first points average what they have)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < 2:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_runs(runs: list, out_png: str, smooth_window: int = 20, title: str | None = None) -> str:
    """Plot train losses (left) and dev metrics (right) of each run folder or log file in ``runs``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        records = read_log(run)
        label = os.path.basename(os.path.normpath(run))
        train = [r for r in records if r.get("split") == "train"]
        if train:
            steps = [r["step"] for r in train]
            for key, style in (("loss", "-"), ("mlm_loss", "--"), ("nsp_loss", ":")):
                values = [r[key] for r in train if key in r]
                if len(values) == len(steps):
                    ax_loss.plot(steps, smooth(values, smooth_window), style, label=f"{label} {key}")
        dev = [r for r in records if r.get("split") == "dev"]
        metrics = sorted({k for r in dev for k, v in r.items()
                          if isinstance(v, float) and (k.endswith("accuracy") or k.endswith("loss"))})
        for key in metrics:  # held-out losses beside the training losses, accuracies on their own axis
            pts = [(r["step"], r[key]) for r in dev if key in r]
            ax = ax_dev if key.endswith("accuracy") else ax_loss
            ax.plot(*zip(*pts), "o-" if ax is ax_dev else "o", label=f"{label} held-out {key}")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(f"loss (training: moving average of {smooth_window}; dots: held out)")
    ax_dev.set_xlabel("step")
    ax_dev.set_ylabel("held-out accuracy")
    ax_dev.set_ylim(0, 1)
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        save_figure(fig, out_png, dpi=110)
    finally:
        plt.close(fig)
    return out_png
