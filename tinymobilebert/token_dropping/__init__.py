"""Token dropping (Hou et al., ACL 2022): unimportant tokens skip the middle layers during pretraining.

* ``TokenImportance``: one running MLM loss per vocabulary id, and top-k selection per sequence
  (``importance.py``);
* ``TokenDropping``: the training step (a ``Trainer`` ``step_fn``) that selects before the
  forward pass and learns after it, checkpointed as ``extra_state`` (``training.py``);
* ``layer_view``: which tokens each layer updated, printed or as a PNG (``view.py``).

The split and merge themselves are a plan of the one encoder loop: ``model.forward(...,
keep_positions=idx, split_layer=s)`` (``tinymobilebert.model.plan``).
"""

from .importance import NEVER_KEEP_SCORE, PROTECTED_SCORE, TokenImportance
from .training import TokenDropping
from .view import LayerView, layer_view, updated_tokens

__all__ = ["TokenImportance", "TokenDropping", "LayerView", "layer_view", "updated_tokens", "PROTECTED_SCORE",
           "NEVER_KEEP_SCORE"]
