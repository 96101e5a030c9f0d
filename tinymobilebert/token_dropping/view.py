"""Seeing token dropping: which tokens each layer updated, printed and as a PNG.

Dimensions: T tokens of the sentence, k kept, R layers run.

For one sentence, ``layer_view`` selects the kept tokens with a ``TokenImportance`` and reads the
encoder plan (``model.plan``): the layers before the split update every token; the split layer
updates the kept tokens (their queries attend to *every* token); the layers after it, up to the
last, update only the kept tokens and attend only to them; the last layer updates every token
again, the dropped ones starting from their state before the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..atomic import save_figure
from ..model.plan import encoder_plan
from .importance import NEVER_KEEP_SCORE, PROTECTED_SCORE



@dataclass
class LayerView:
    """Which tokens each executed layer updated, for one sentence.

    tokens : list of str, (T,)
    scores : (T,) the importance of each shown token (protected and never-kept ids: +/-1e4)
    kept : (k,) kept positions, ascending
    layers : (R,) the stored layer each run executes
    rows : (R,) "all", "split" or "kept" (``model.plan.LayerRun.rows``)
    updated : (R, T) bool, True where the run updated the token
    """

    tokens: list
    scores: np.ndarray
    kept: np.ndarray
    layers: list
    rows: list
    updated: np.ndarray

    def format(self) -> str:
        """One line per token, one column per layer: '#' updated, '.' carried past unchanged."""
        head = [f"L{layer}" + ("s" if r == "split" else "") for layer, r in zip(self.layers, self.rows)]
        width = max(len(t) for t in self.tokens + ["token"])
        lines = [f"{len(self.kept)} of {len(self.tokens)} tokens kept; '#' updated by the layer, '.' carried past; "
                 "'s' the split layer (kept queries, every key)",
                 f"{'token':<{width}}  {'score':>7}  " + " ".join(f"{h:>3}" for h in head)]
        kept = set(self.kept.tolist())
        for t, tok in enumerate(self.tokens):
            s = self.scores[t]
            score = "always" if s >= PROTECTED_SCORE else ("never" if s <= NEVER_KEEP_SCORE else f"{s:.2f}")
            marks = " ".join(f"{'#' if self.updated[j, t] else '.':>3}" for j in range(len(self.rows)))
            lines.append(f"{tok:<{width}}  {score:>7}  {marks}" + ("" if t in kept else "   dropped"))
        return "\n".join(lines)

    def plot(self, path, title=None) -> str:
        """The same grid as a PNG (matplotlib): layers up, tokens across, kept cells dark."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        R, T = self.updated.shape
        fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * T + 1.5), 0.45 * R + 1.8))
        ax.imshow(self.updated, cmap="Blues", vmin=-0.3, vmax=1.2, aspect="auto", origin="lower")
        ax.set_xticks(range(T))
        ax.set_xticklabels(self.tokens, rotation=70, fontsize=8)
        ax.set_yticks(range(R))
        ax.set_yticklabels([f"layer {layer}" + (" (split)" if r == "split" else "")
                            for layer, r in zip(self.layers, self.rows)], fontsize=8)
        for t in range(T):
            if t not in self.kept:
                ax.get_xticklabels()[t].set_color("grey")
        ax.set_xticks(np.arange(-0.5, T), minor=True)
        ax.set_yticks(np.arange(-0.5, R), minor=True)
        ax.grid(which="minor", color="white", linewidth=1)
        ax.tick_params(which="minor", length=0)
        ax.set_title(title or f"token dropping: dark = updated by the layer ({len(self.kept)} of {T} kept)",
                     fontsize=9)
        fig.tight_layout()
        try:
            save_figure(fig, path, dpi=110)
        finally:
            plt.close(fig)
        return str(path)


def updated_tokens(config, T: int, kept, split_layer=None, depth_mult=1.0):
    """(layers (R,), rows (R,), updated (R, T) bool) for one sequence keeping positions ``kept``."""
    plan = encoder_plan(config, depth_mult=depth_mult, token_dropping=True, split_layer=split_layer)
    kept = np.asarray(kept)
    updated = np.zeros((len(plan.runs), T), bool)
    for j, run in enumerate(plan.runs):
        if run.rows == "all":
            updated[j] = True
        else:
            updated[j, kept] = True
    return plan.layers, [r.rows for r in plan.runs], updated


def layer_view(config, tokenizer, importance, text, text_pair=None, keep=None, k=None, split_layer=None,
               input_ids=None) -> LayerView:
    """Encode ``text`` (or take ``input_ids`` (T,), e.g. a masked row), select with ``importance``,
    and return which tokens each layer of ``config``'s encoder updates."""
    ids = np.asarray(tokenizer.encode(text, text_pair) if input_ids is None else input_ids, dtype=np.int64)
    kept = importance.select(ids[None], keep=keep, k=k)[0]  # (k,)
    layers, rows, updated = updated_tokens(config, len(ids), kept, split_layer)
    return LayerView(tokenizer.convert_ids_to_tokens([int(i) for i in ids]), importance.scores[ids], kept, layers,
                     rows, updated)
