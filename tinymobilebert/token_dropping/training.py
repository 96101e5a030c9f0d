"""Token dropping in a training loop: choose each batch's kept tokens, learn importance from its losses.

Dimensions: B batch, T tokens, k kept tokens per sequence, M labelled positions.

Per step (Hou et al. 2022; the original's ``TokenDropMaskedLMTask.train_step``):

    idx = importance.select(input_ids, attention_mask, keep)        (B, k)   before the forward pass
    out = model.forward(..., keep_positions=idx, split_layer=s)               the plan of ``model.plan``
    model.backward()
    importance.update(labels[labels != -100], out.mlm_token_losses)  (M,)    after it, training only

``TokenDropping`` is that step, as a ``Trainer`` step function (``step_fn``), and the state to
checkpoint with it (``extra_state``), so a resumed run selects the same tokens as one never
interrupted:

    Trainer(model, opt, batches, out, ..., step_fn=dropping, extra_state={"token_importance": dropping})

Held-out evaluation does not learn: ``with_dropping(batches)`` only adds the kept positions, so
the same held-out batches can be scored with and without dropping. The model stays a plain
model: nothing about dropping is stored in its weights or config.
"""

from __future__ import annotations

import numpy as np

from ..train.trainer import forward_backward, loss_scalars
from .importance import TokenImportance


class TokenDropping:
    """A training step with token dropping, and its importance table's state.

    Parameters
    ----------
    importance : TokenImportance
    keep : float in (0, 1], optional
        The share of each batch's length kept (k = ceil(keep T)); default 0.5.
    k : int, optional
        An absolute count instead (the original's ``token_keep_k``).
    split_layer : int, optional
        The split layer, counted in executed layers (default L/2 - 1).
    """

    def __init__(self, importance: TokenImportance, keep=None, k=None, split_layer=None):
        if not isinstance(importance, TokenImportance):
            raise TypeError(f"importance must be a TokenImportance, got {type(importance).__name__}")
        self.keep, self.k = importance.check_keep(keep, k)
        self.importance, self.split_layer = importance, split_layer

    def plan_options(self, batch: dict) -> dict:
        """The forward-pass options that drop tokens in ``batch``: keep_positions (B, k), split_layer."""
        idx = self.importance.select(batch["input_ids"], batch.get("attention_mask"), keep=self.keep, k=self.k)
        return {"keep_positions": idx, "split_layer": self.split_layer}

    def learn(self, batch: dict, out) -> int:
        """Update importance from a training step's per-token MLM losses (needs the batch's labels)."""
        if "labels" not in batch or getattr(out, "mlm_token_losses", None) is None:
            raise ValueError("token dropping learns importance from MLM losses: the batch needs labels")
        labels = np.asarray(batch["labels"])
        return self.importance.update(labels[labels != -100], out.mlm_token_losses)

    def __call__(self, model, batch: dict) -> dict:
        """One step's gradients (the ``Trainer``'s ``step_fn``): select, forward, backward, learn.
        Returns the scalars to log."""
        batch = {**batch, **self.plan_options(batch)}
        out = forward_backward(model, batch)  # a NaN or inf loss stops there, naming its block
        self.learn(batch, out)
        return loss_scalars(out)

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return self.importance.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.importance.load_state_dict(state)

    # ------------------------------------------------------------------------------ evaluation
    def with_dropping(self, batches):
        """The same batches with the kept positions added (no learning): evaluation with dropping."""
        for batch in batches:
            yield {**batch, **self.plan_options(batch)}
