"""One DynaBERT training step: every sub-network's loss on the same batch, summed into the same gradients.

Dimensions: B batch, T tokens, H hidden width, C classes, L teacher layers, L' = round(L d)
layers a depth-d student runs.

Which sub-network's loss updates the weights? All of them, once per batch: for each (w, d) in
turn the student runs forward at that size and backward, its gradients adding (``+=``) into the
same buffers, and only then does the trainer clip the global norm and take one optimizer step
(``run_glue.py``'s ``train()``: one ``loss.backward()`` per sub-network, one ``clip_grad_norm_``,
one ``optimizer.step()``). The order is DynaBERT's: depth descending outside, width descending
inside.

The distillation loss of a sub-network (``SubnetworkDistillation``), teacher in eval mode:

    loss(w, d) = logit_weight * SCE(z_s, z_t) + hidden_weight * sum_{j=0..L'} MSE(h_s[j], h_t[m(j)])

    SCE(s, t) = mean_B -sum_C softmax(t) log_softmax(s)        distill.soft_cross_entropy
    MSE       = mean over B*T*H (padding included)              distill.hidden_mse
    m = depth_layers(L, d) + [L]

so the embeddings match the teacher's, and the student's j-th layer output (hidden j+1) matches
the teacher's hidden state m(j+1): at d = 0.5 of 12 layers, teacher states 2, 4, ..., 12. Stage 1
(width only) uses hidden_weight 0.1, stage 2 (width x depth) 1.0. For regression (one label) the
logit term is 0, as in the original. ``SubnetworkFinetuning`` is the label loss summed the same
way (the original's final fine-tuning).
"""

from __future__ import annotations

from ..distill import hidden_mse_backward, hidden_mse_forward, soft_cross_entropy_backward, soft_cross_entropy_forward
from ..model.plan import depth_layers
from ..train.trainer import forward_backward

TEACHER_WIDTHS = ("full", "student")
_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def width_subnetworks(widths) -> list:
    """Stage 1's sub-networks: [(w, 1.0)] for each width, largest first."""
    return [(w, 1.0) for w in sorted(set(float(w) for w in widths), reverse=True)]


def width_depth_subnetworks(widths, depths) -> list:
    """Stage 2's sub-networks: every (w, d), depth descending outside, width descending inside."""
    return [(w, d) for d in sorted(set(float(d) for d in depths), reverse=True)
            for w in sorted(set(float(w) for w in widths), reverse=True)]


def teacher_hidden_indices(num_layers: int, depth_mult: float) -> list:
    """m(j): the teacher hidden state student hidden state j learns from, j = 0..L' (see the notes)."""
    return depth_layers(num_layers, depth_mult) + [num_layers]


def _inputs(batch) -> dict:
    return {k: batch[k] for k in _INPUTS if k in batch}


def _tag(w, d) -> str:
    return f"w{w:g}_d{d:g}"


class SubnetworkDistillation:
    """A ``Trainer`` step: distil ``teacher`` into every sub-network of the student (see the notes).

    Parameters
    ----------
    teacher : a sequence classifier of the student's layout and full size; run in eval mode
    subnetworks : list of (width_mult, depth_mult), in the order they run
    hidden_weight : the hidden-state MSE's weight (DynaBERT's lambda2: 0.1 in stage 1, 1.0 in stage 2)
    logit_weight : the soft cross-entropy's weight (lambda1, 1.0)
    teacher_width : "full" (the released code: the teacher at full width for every student) or
        "student" (the paper: the teacher at the student's width, full depth)
    """

    def __init__(self, teacher, subnetworks, hidden_weight: float, logit_weight: float = 1.0,
                 teacher_width: str = "full"):
        if teacher_width not in TEACHER_WIDTHS:
            raise ValueError(f"teacher_width must be one of {TEACHER_WIDTHS}, got {teacher_width!r}")
        if not subnetworks:
            raise ValueError("subnetworks is empty: give at least one (width_mult, depth_mult)")
        self.teacher = teacher.eval()
        self.subnetworks = list(subnetworks)
        self.hidden_weight, self.logit_weight = float(hidden_weight), float(logit_weight)
        self.teacher_width = teacher_width

    def _teacher_outputs(self, batch) -> dict:
        """{width: teacher output} for the widths this step needs (one pass for "full")."""
        widths = [1.0] if self.teacher_width == "full" else sorted({w for w, _ in self.subnetworks}, reverse=True)
        self.teacher.eval()
        return {w: self.teacher.forward(**_inputs(batch), width_mult=w, output_hidden_states=True, keep_cache=False)
                for w in widths}

    def _losses(self, out, teacher_out, depth_mult, L):
        """(total, logit term, hidden term, d logits, d hidden states) of one sub-network."""
        logit_loss, d_logits = 0.0, None
        if out.logits.shape[-1] > 1:  # regression: no logit term (DynaBERT sets it to 0)
            logit_loss, c = soft_cross_entropy_forward(out.logits, teacher_out.logits)
            d_logits = soft_cross_entropy_backward(self.logit_weight, c)
        hidden_loss, d_hidden = 0.0, []
        for j, t in enumerate(teacher_hidden_indices(L, depth_mult)):
            value, c = hidden_mse_forward(out.hidden_states[j], teacher_out.hidden_states[t])
            hidden_loss += value
            d_hidden.append(hidden_mse_backward(self.hidden_weight, c))
        total = self.logit_weight * logit_loss + self.hidden_weight * hidden_loss
        return total, logit_loss, hidden_loss, d_logits, d_hidden

    def __call__(self, model, batch) -> dict:
        """Forward and backward of every sub-network; gradients accumulate. Returns what to log."""
        teacher_outs = self._teacher_outputs(batch)
        L = model.config.num_hidden_layers
        logged = {"loss": 0.0, "logit_loss": 0.0, "hidden_loss": 0.0}
        for w, d in self.subnetworks:
            out = model.forward(**_inputs(batch), width_mult=w, depth_mult=d, output_hidden_states=True)
            t = teacher_outs[1.0 if self.teacher_width == "full" else w]
            total, logit_loss, hidden_loss, d_logits, d_hidden = self._losses(out, t, d, L)
            grads = {"hidden_states": d_hidden}
            if d_logits is not None:
                grads["logits"] = d_logits
            model.backward(grads, include_loss=False)
            logged["loss"] += total
            logged["logit_loss"] += logit_loss
            logged["hidden_loss"] += hidden_loss
            logged["loss_" + _tag(w, d)] = total
        return logged

    def objective(self, model, batch) -> float:
        """The summed loss alone (no caches, no gradients): what ``__call__`` differentiates."""
        teacher_outs = self._teacher_outputs(batch)
        L, total = model.config.num_hidden_layers, 0.0
        for w, d in self.subnetworks:
            out = model.forward(**_inputs(batch), width_mult=w, depth_mult=d, output_hidden_states=True,
                                keep_cache=False)
            total += self._losses(out, teacher_outs[1.0 if self.teacher_width == "full" else w], d, L)[0]
        return total


class SubnetworkFinetuning:
    """A ``Trainer`` step: the task loss (labels) of every sub-network, summed into the same gradients."""

    def __init__(self, subnetworks):
        if not subnetworks:
            raise ValueError("subnetworks is empty: give at least one (width_mult, depth_mult)")
        self.subnetworks = list(subnetworks)

    def __call__(self, model, batch) -> dict:
        logged = {"loss": 0.0}
        for w, d in self.subnetworks:
            out = forward_backward(model, {**batch, "width_mult": w, "depth_mult": d})  # NaN/inf: stops, named
            logged["loss"] += out.loss
            logged["loss_" + _tag(w, d)] = out.loss
        return logged

    def objective(self, model, batch) -> float:
        return sum(model.forward(**batch, width_mult=w, depth_mult=d, keep_cache=False).loss
                   for w, d in self.subnetworks)
