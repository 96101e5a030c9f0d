"""Token importance (Hou et al. 2022, "Token Dropping"): one running MLM loss per vocabulary id.

Dimensions: B batch, T tokens, k kept tokens per sequence, V vocabulary, M labelled positions.

A token whose masked-LM loss has stayed low is one the model already predicts well; token
dropping lets it skip the middle layers. The score of id v is an exponential moving average of
the MLM cross-entropy at the positions whose *label* is v,

    s_v <- beta s_v + (1 - beta) mean{loss_m : label_m = v, in this batch}     (ids seen this batch)

from ``init`` = 10.0 (above the loss of a fresh model with a few thousand ids, so an id not seen
yet ranks as important). A sequence keeps the k positions whose *shown* token (its input id,
after masking) scores highest: [MASK]-replaced targets are protected, the ~20% of targets left
unchanged or replaced by a random token are ranked like any other token and may be dropped.

Where this differs from the original (tensorflow/models ``TokenImportanceWithMovingAvg`` and
``SelectTopK``), on purpose:

* **An id repeated in a batch** gets one EMA step with the *mean* of its losses. The original
  writes the batch with a scatter-update that keeps one of the duplicates, unspecified which.
* **Unlabelled (-100) and weight-0 slots are skipped.** The original also learns from padded
  prediction slots (label 0 = [PAD], weight 0), so [PAD]'s -1e4 drifts to an ordinary score
  within a few thousand steps and padding starts being kept.
* **Protected and never-kept ids are fixed and ranked by rule.** The original stores +1e4 /
  -1e4 for them in the same table and updates them like any id, so [UNK], which can be a label,
  decays. Here they are never updated; the table shows +1e4 / -1e4 for them only as a reminder.
* **Ties are broken by position** (the earlier token first); the original's argsort leaves them
  unspecified. Ties are common early on: every id not seen yet holds exactly ``init``.
* The keep count is a ratio of the batch's length (``keep``) or absolute (``k``, the original's
  ``token_keep_k``).
"""

from __future__ import annotations

import math

import numpy as np

IGNORE_INDEX = -100
PROTECTED_SCORE = 1e4  # shown for protected ids (the original's allow-list value); ranking is by rule
NEVER_KEEP_SCORE = -1e4  # shown for never-kept ids (the original's deny-list value)

# selection tiers, best first: every position of a lower tier is kept before any of a higher one
_PROTECTED, _ORDINARY, _NEVER_KEEP, _PADDING = 0, 1, 2, 3


def _id_array(ids, name, V) -> np.ndarray:
    a = np.unique(np.asarray(list(ids), dtype=np.int64))
    if a.size and (a.min() < 0 or a.max() >= V):
        raise ValueError(f"{name} must be ids in [0, vocab_size={V}), got {a.tolist()}")
    return a


class TokenImportance:
    """One importance score per vocabulary id, learned from per-token MLM losses.

    Parameters
    ----------
    vocab_size : int
        V.
    protected_ids : iterable of int
        Ids always kept, ahead of every other token: [CLS], [SEP], [MASK], [UNK] (the original's
        allow list). Take them from the tokenizer (``from_tokenizer``), never as numbers.
    never_keep_ids : iterable of int
        Ids kept only after every other real token: [PAD] (the original's deny list).
    init : float
        Every other id's starting score (the original's ``token_loss_init_value``).
    beta : float in [0, 1)
        The moving average's decay (``token_loss_beta``).

    Attributes
    ----------
    scores : (V,) float64
    counts : (V,) int64, how many labelled positions each id has learned from
    steps : int, how many batches ``update`` has seen
    """

    def __init__(self, vocab_size: int, protected_ids, never_keep_ids, init: float = 10.0, beta: float = 0.995):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        if not (isinstance(init, (int, float)) and math.isfinite(init)):
            raise ValueError(f"init must be a finite number, got {init!r}")
        V = int(vocab_size)
        self.protected_ids = _id_array(protected_ids, "protected_ids", V)
        self.never_keep_ids = _id_array(never_keep_ids, "never_keep_ids", V)
        both = np.intersect1d(self.protected_ids, self.never_keep_ids)
        if both.size:
            raise ValueError(f"ids {both.tolist()} are both protected and never kept")
        self.vocab_size, self.init, self.beta = V, float(init), float(beta)
        self.tier = np.full(V, _ORDINARY, np.int8)  # (V,) which rule ranks each id
        self.tier[self.protected_ids] = _PROTECTED
        self.tier[self.never_keep_ids] = _NEVER_KEEP
        self.scores = np.full(V, self.init)  # (V,) float64
        self.scores[self.protected_ids] = PROTECTED_SCORE
        self.scores[self.never_keep_ids] = NEVER_KEEP_SCORE
        self.counts = np.zeros(V, np.int64)
        self.steps = 0

    @classmethod
    def from_tokenizer(cls, tokenizer, init: float = 10.0, beta: float = 0.995) -> "TokenImportance":
        """Protected: the tokenizer's [CLS], [SEP], [MASK], [UNK]; never kept: its [PAD]."""
        protected = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.unk_token_id]
        return cls(len(tokenizer), protected, [tokenizer.pad_token_id], init=init, beta=beta)

    def __repr__(self):
        return (f"TokenImportance(vocab_size={self.vocab_size}, protected_ids={self.protected_ids.tolist()}, "
                f"never_keep_ids={self.never_keep_ids.tolist()}, init={self.init}, beta={self.beta}, "
                f"steps={self.steps})")

    # ------------------------------------------------------------------------------ learning
    def update(self, label_ids, per_token_mlm_losses, weights=None) -> int:
        """One moving-average step from a training batch's per-token MLM losses.

        Parameters
        ----------
        label_ids : int array, any shape (e.g. (M,), or (B, T) with -100 where unlabelled)
            The original (label) id of each prediction slot; -100 marks a slot with no target.
        per_token_mlm_losses : float array, the shape of ``label_ids``
            The cross-entropy at each slot (``out.mlm_token_losses`` holds them for the labelled
            positions, in the order of ``labels[labels != -100]``). Values at skipped slots are
            not read.
        weights : array of the shape of ``label_ids``, optional
            The original's ``masked_lm_weights``; slots of weight 0 are skipped.

        Skipped: slots labelled -100 or of weight 0 (padding slots: the original learns from
        them, which lets [PAD]'s score drift, see the module notes), and protected and
        never-kept ids (their rank is fixed). An id seen n times in the batch moves once, toward
        the mean of its n losses, so the result does not depend on the slots' order.

        Returns the number of slots learned from.
        """
        labels = np.asarray(label_ids)
        losses = np.asarray(per_token_mlm_losses, dtype=np.float64)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"label_ids must hold integer ids, got dtype {labels.dtype}")
        if losses.shape != labels.shape:
            raise ValueError(f"per_token_mlm_losses must have the shape of label_ids {labels.shape}, got {losses.shape}")
        use = labels != IGNORE_INDEX
        if weights is not None:
            w = np.asarray(weights)
            if w.shape != labels.shape:
                raise ValueError(f"weights must have the shape of label_ids {labels.shape}, got {w.shape}")
            use &= w != 0
        ids = labels[use].astype(np.int64)  # (m,)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0]
            raise ValueError(f"label_ids must be in [0, vocab_size={self.vocab_size}) or -100, found {bad}")
        learn = self.tier[ids] == _ORDINARY
        ids, values = ids[learn], losses[use][learn]  # (m',)
        if not np.all(np.isfinite(values)):
            raise ValueError("per_token_mlm_losses must be finite at the labelled slots")
        self.steps += 1
        if ids.size == 0:
            return 0
        count = np.bincount(ids, minlength=self.vocab_size)  # (V,)
        total = np.bincount(ids, weights=values, minlength=self.vocab_size)  # (V,) summed in slot order
        seen = np.flatnonzero(count)
        self.scores[seen] = self.beta * self.scores[seen] + (1.0 - self.beta) * (total[seen] / count[seen])
        self.counts += count
        return int(ids.size)

    # ------------------------------------------------------------------------------ selecting
    @staticmethod
    def check_keep(keep=None, k=None):
        """Validate a keep ratio or count (not both); returns (keep, k) with the default keep 0.5."""
        if k is not None:
            if keep is not None:
                raise ValueError("give keep (a ratio) or k (a count), not both")
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"k must be a positive integer (tokens kept per sequence), got {k!r}")
            return None, int(k)
        keep = 0.5 if keep is None else keep
        if isinstance(keep, bool) or not isinstance(keep, (int, float, np.floating)) or not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be a ratio in (0, 1], got {keep!r}")
        return float(keep), None

    def keep_count(self, T: int, keep=None, k=None) -> int:
        """k for a batch of length T: ``k`` as given (at most T), else ceil(keep * T) (default keep 0.5)."""
        keep, k = self.check_keep(keep, k)
        if k is not None:
            if k > T:
                raise ValueError(f"k={k} tokens kept per sequence, but the batch has only T={T}")
            return k
        return max(1, min(T, math.ceil(keep * T - 1e-9)))  # the tolerance: 0.3 * 10 is 3.0000000000000004

    def ranking(self, input_ids, attention_mask=None) -> np.ndarray:
        """Every position of each row, most important first: (B, T) int64.

        The order: protected ids at real positions, then the other real tokens by score
        (highest first), then never-kept ids, then padding (attention_mask 0), whatever its id;
        within a group, the earlier position first (the tie rule). So when a row holds more
        protected tokens than k, its earliest ones are kept.
        """
        ids = self._check_ids(input_ids)
        B, T = ids.shape
        tier = self.tier[ids].astype(np.int64)  # (B, T)
        if attention_mask is not None:
            m = np.asarray(attention_mask)
            if m.shape != ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids {ids.shape}, got {m.shape}")
            tier[m == 0] = _PADDING
        neg_score = np.where(tier == _ORDINARY, -self.scores[ids], 0.0)  # (B, T)
        position = np.broadcast_to(np.arange(T), (B, T))
        return np.lexsort((position, neg_score, tier), axis=-1)  # last key first: tier, score, position

    def select(self, input_ids, attention_mask=None, *, keep=None, k=None) -> np.ndarray:
        """The positions each sequence keeps: (B, k) int64, ascending in each row.

        input_ids (B, T): the ids the model is shown (after masking); attention_mask (B, T) or
        None (no padding). ``keep`` a ratio in (0, 1] (k = ceil(keep * T), at least 1; default
        0.5) or ``k`` a count in [1, T], one k for the whole batch. Top-k by ``ranking``'s order:
        protected ids first, padding never ahead of a real token, ties to the earlier position.
        A row with fewer than k real tokens keeps all of them, then padding.
        """
        ids = self._check_ids(input_ids)
        kk = self.keep_count(ids.shape[1], keep, k)
        return np.sort(self.ranking(ids, attention_mask)[:, :kk], axis=1)  # (B, k)

    def _check_ids(self, input_ids) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.size == 0:
            raise ValueError(f"input_ids must be a non-empty 2-D array (batch, tokens), got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"input_ids must hold integers, got dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"input_ids must be in [0, vocab_size={self.vocab_size})")
        return ids.astype(np.int64, copy=False)

    # ------------------------------------------------------------------------------ looking at it
    def extremes(self, n: int = 10, min_count: int = 1) -> tuple[list, list]:
        """(most important, least important): up to n (id, score, count) each, among the ids that
        learned from at least ``min_count`` positions (protected and never-kept ids left out)."""
        cand = np.flatnonzero((self.tier == _ORDINARY) & (self.counts >= min_count))
        order = cand[np.lexsort((cand, -self.scores[cand]))]  # score descending, then id
        row = lambda i: (int(i), float(self.scores[i]), int(self.counts[i]))  # noqa: E731
        return [row(i) for i in order[:n]], [row(i) for i in order[::-1][:n]]

    def format_extremes(self, tokenizer=None, n: int = 10, min_count: int = 1) -> str:
        """A printable table of ``extremes``: token, score (running MLM loss), positions learned from."""
        most, least = self.extremes(n, min_count)
        name = (lambda i: tokenizer.convert_ids_to_tokens([i])[0]) if tokenizer is not None else str
        width = max([12] + [len(name(i)) for i, *_ in most + least])
        lines = [f"token importance after {self.steps} updates ({int((self.counts > 0).sum())} ids seen as labels "
                 f"of {self.vocab_size}; unseen ids hold {self.init:g})",
                 f"{'most important (hardest to predict)':<{width + 22}}  least important (easiest)"]
        for r in range(max(len(most), len(least))):
            cells = []
            for side in (most, least):
                if r < len(side):
                    i, s, c = side[r]
                    cells.append(f"{name(i):<{width}} {s:7.3f} x{c:<7d}")
                else:
                    cells.append(" " * (width + 17))
            lines.append("     ".join(cells))
        return "\n".join(lines)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Arrays and scalars: what a training checkpoint saves (``Trainer(extra_state=...)``)."""
        return {"scores": self.scores.copy(), "counts": self.counts.copy(), "protected_ids": self.protected_ids.copy(),
                "never_keep_ids": self.never_keep_ids.copy(), "init": self.init, "beta": self.beta,
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; the vocabulary and the special ids must match."""
        scores = np.asarray(state["scores"], dtype=np.float64)
        if scores.shape != (self.vocab_size,):
            raise ValueError(f"token importance state is for a vocabulary of {scores.shape[0]} ids, "
                             f"this one has {self.vocab_size}")
        for key in ("protected_ids", "never_keep_ids"):
            if not np.array_equal(np.asarray(state[key]), getattr(self, key)):
                raise ValueError(f"token importance state has {key} {np.asarray(state[key]).tolist()}, "
                                 f"this one {getattr(self, key).tolist()}")
        scalar = lambda key: np.asarray(state[key]).reshape(-1)[0]  # noqa: E731 (a number, or one from a file)
        self.scores[...] = scores
        self.counts[...] = np.asarray(state["counts"], dtype=np.int64)
        self.init, self.beta, self.steps = float(scalar("init")), float(scalar("beta")), int(scalar("steps"))

    def save(self, path) -> None:
        """Write the table to a safetensors file (atomically; scalars as one-element arrays)."""
        from ..checkpoint import write_safetensors

        write_safetensors(path, {k: v if isinstance(v, np.ndarray) else np.array([v])
                                 for k, v in self.state_dict().items()})

    @classmethod
    def load(cls, path) -> "TokenImportance":
        """A table written by ``save`` (e.g. a pretraining run's ``token_importance.safetensors``)."""
        from safetensors.numpy import load_file

        state = load_file(path)
        imp = cls(len(state["scores"]), state["protected_ids"].tolist(), state["never_keep_ids"].tolist())
        imp.load_state_dict(state)
        return imp
