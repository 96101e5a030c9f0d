"""One distillation step: teacher pass, student forward, the loss terms the schedule switches on,
their gradients sent into the student's outputs, and everything logged.

Dimensions: B batch, T tokens, H inter-block width, A heads, M labelled positions, V vocabulary,
C classes, L student layers.

A step function ``step(student, batch) -> dict`` is what ``train.Trainer(step_fn=...)`` calls
between ``zero_grad`` and ``optimizer.step()``: it fills the student's gradients and returns the
scalars to log. The loss terms reach the parameters through ``student.backward(grad_outputs=...,
include_loss=False)``: gradients on hidden states (FMT, mean/variance), on attention scores (AT),
on the MLM logits (PD's mixed target) and on the NSP logits (PD's hard-label NSP).

**Each step runs only the layers its loss reads.** A step that is not PD and whose layer-wise
terms are those of the student layers ``layers`` stops the student after ``max(layers)`` and the
teacher after the last teacher layer paired with them (``stop_after_layer``, ``model.plan``;
``last_layers_read``): nothing above can change the loss, so the layers there would run, and be
differentiated, for nothing. A PKT stage l thus runs the student's layers 0 .. l and the
teacher's up to the one paired with l: over the L stages, (L + 1) / (2 L) of the layer work of
running every layer in every step (the embeddings, the optimizer update and the per-step
overhead are not cut; ``budget`` measures each stage's cost). The updates are bit for bit those
of whole-model steps: the layers above used to get an exact zero gradient and lr 0, now they get
no gradient, and LAMB gates their moments to 0 all the same. JKT's step reads every layer and
runs them all; PD and AKT read the last layer's MLM logits and run every layer. With
``mv_teacher_layers="all"`` the teacher runs whole (every one of its states is compared).

Logged each step, next to the learning rate of every layer group (``lr_layer_{l}``,
``lr_embeddings_heads``; the trainer adds ``lr``, the base rate, and ``grad_norm``):

    loss                      the total that was differentiated
    {fmt,at,beta,gamma}_layer_{l}            each layer-wise term, unweighted
    weighted_{fmt,at,beta,gamma}_layer_{l}   the same times its weight (100, 1, 5000, 5 over L)
    layerwise_loss            their weighted sum
    pd_mlm, nsp_loss, pd_loss PD: MLM against the mixed target, NSP cross-entropy, their sum
    mlm_loss                  PD: the student's plain MLM cross-entropy (not trained on; a gauge)
    stage                     index of the stage in ``schedule.stages``
    kept_share                PD with token dropping: the share of each sequence's tokens kept (k / T)

Token dropping (``token_dropping``, a ``token_dropping.TokenDropping``) applies to PD steps only:
the student's forward pass gets the positions the importance table keeps (the split and merge
of ``model.plan``), and after it the table learns from the student's per-token MLM losses. The
teacher always reads the whole sequence: its MLM logits at every labelled position are the
target, and the dropped tokens are still predicted by the student's last layer. Layer-wise steps
never drop, since FMT, AT and mean/variance compare full per-layer maps; for the same reason AKT,
whose PD carries every layer's terms, is refused with dropping.

Dropout is off in the student at every step (the original builds both models with
``is_training=False``); the trainer's ``train()`` mode is overridden here, not in the config, so
the distilled student saves the dropout its config asks for when fine-tuned later.
"""

from __future__ import annotations

import numpy as np

from ..diagnostics import check_loss
from ..losses import cross_entropy_backward_mean, cross_entropy_forward_mean
from ..token_dropping import TokenDropping
from ._checks import choice, positive_number, unit_interval
from .attention import attention_transfer_backward, attention_transfer_forward
from .feature_map import feature_map_transfer_backward, feature_map_transfer_forward
from .logits import (mlm_distillation_backward, mlm_distillation_forward, soft_cross_entropy_backward,
                     soft_cross_entropy_forward)
from .mean_variance import mean_variance_transfer_backward, mean_variance_transfer_forward
from .schedules import PD, LossWeights
from .teacher import teacher_pass



def layerwise_terms(out_s, out_t, layers, plan, weights: dict, attention_mask=None, at_form="original",
                    mv_teacher_layers="same"):
    """The layer-wise terms of ``layers`` and their gradients on the student's outputs.

    Parameters
    ----------
    out_s : the student's forward output (``hidden_states``, ``attention_scores`` as needed; of
        layers 0 .. max(layers) at least)
    out_t : TeacherOutputs (of the teacher layers paired with ``layers`` at least)
    layers : student layers whose terms count
    plan : DistillationPlan (its mapping pairs student and teacher layers; its losses say which terms)
    weights : {"fmt", "at", "beta", "gamma"} -> weight (already divided by L)
    attention_mask : (B, T) or None
        None: the original (padding counted); given: the padding-aware forms.

    Returns
    -------
    logged : dict of the unweighted and weighted terms
    total : float, the weighted sum
    grads : dict for ``backward(grad_outputs=...)`` ("hidden_states" / "attention_scores" lists)
    """
    mapping = plan.mapping.teacher_layers
    ran = len(out_s.attention_scores) if out_s.attention_scores is not None else len(out_s.hidden_states) - 1
    d_hidden, d_scores = [None] * (ran + 1), [None] * ran  # one entry per output of the layers that ran
    logged, total = {}, 0.0

    def add(term, l, value):
        nonlocal total
        logged[f"{term}_layer_{l}"] = value
        logged[f"weighted_{term}_layer_{l}"] = weights[term] * value
        total += weights[term] * value

    def add_hidden(i, dh):
        d_hidden[i] = dh if d_hidden[i] is None else d_hidden[i] + dh

    for l in layers:
        j = mapping[l]
        if j is None:
            continue
        h_s = out_s.hidden_states[l + 1]  # (B, T, H) layer l's output
        if "fmt" in plan.losses:
            loss, c = feature_map_transfer_forward(h_s, out_t.hidden_states[j + 1], attention_mask)
            add("fmt", l, loss)
            add_hidden(l + 1, feature_map_transfer_backward(weights["fmt"], c))
        if "mv" in plan.losses:
            h_t = out_t.hidden_states if mv_teacher_layers == "all" else out_t.hidden_states[j + 1]
            (beta, gamma), c = mean_variance_transfer_forward(h_s, h_t, attention_mask, teacher_layers=mv_teacher_layers)
            add("beta", l, beta)
            add("gamma", l, gamma)
            add_hidden(l + 1, mean_variance_transfer_backward(weights["beta"], weights["gamma"], c))
        if "at" in plan.losses:
            loss, c = attention_transfer_forward(out_s.attention_scores[l], out_t.attention_scores[j], attention_mask,
                                                 form=at_form)
            add("at", l, loss)
            d_scores[l] = attention_transfer_backward(weights["at"], c)  # (B, A, T, T)
    grads = {}
    if any(d is not None for d in d_hidden):
        grads["hidden_states"] = d_hidden
    if any(d is not None for d in d_scores):
        grads["attention_scores"] = d_scores
    logged["layerwise_loss"] = total
    return logged, total, grads


def last_layers_read(layers, plan, mv_teacher_layers="same") -> tuple:
    """(student, teacher) ``stop_after_layer`` of a layer-wise step whose terms are those of the
    student ``layers``: the last student layer and the last paired teacher layer they read.

    The teacher's is None (run it whole) when the mean/variance terms compare every teacher
    state (``mv_teacher_layers="all"``), and 0 when no layer of ``layers`` has a teacher layer.
    """
    mapping = plan.mapping.teacher_layers
    if "mv" in plan.losses and mv_teacher_layers == "all":
        teacher = None
    else:
        teacher = max((mapping[l] for l in layers if mapping[l] is not None), default=0)
    return max(layers), teacher


LAYERWISE_LOSSES = ("fmt", "at", "mv")  # the terms layerwise_terms computes


def check_layerwise_losses(strategy: str, losses, name: str = "losses", pd_name: str = "strategy pd") -> None:
    """PKT, JKT and AKT train with layer-wise terms: ``losses`` must hold one of them."""
    if strategy != "pd" and not set(losses) & set(LAYERWISE_LOSSES):
        raise ValueError(f"{name}: strategy {strategy} trains with layer-wise terms, so it needs at least one of "
                         f"{', '.join(LAYERWISE_LOSSES)} (for PD alone: {pd_name})")


def check_step_options(alpha=0.5, temperature=1.0, at_form="original", mv_teacher_layers="same",
                       weights=LossWeights(), fn="DistillationStep", name=lambda key: key) -> None:
    """The distillation options' values, checked before a run starts (``name`` spells each
    option as its caller knows it: a keyword here, a flag for ``distill``)."""
    unit_interval(alpha, name("alpha"), fn)
    positive_number(temperature, name("temperature"), fn)
    choice(at_form, name("at_form"), ("original", "kl"), fn)
    choice(mv_teacher_layers, name("mv_teacher_layers"), ("same", "all"), fn)
    values = [getattr(weights, k) for k in ("fmt", "at", "beta", "gamma")] if isinstance(weights, LossWeights) \
        else list(weights)
    if len(values) != 4 or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w)
                                   and w >= 0 for w in values):
        raise ValueError(f"{fn}: {name('weights')} must be 4 finite numbers >= 0 (FMT, AT, beta, gamma), got {weights!r}")


class DistillationStep:
    """The step function of a pre-training distillation run (PKT, JKT, AKT, PD): see the module notes.

    Parameters
    ----------
    teacher : MobileBertForPreTraining (eval mode; never differentiated)
    schedule : TransferSchedule
    plan : DistillationPlan (mapping and layer-wise losses, checked against both configs)
    optimizer : the student's LAMB (its ``step_count`` is the step; PD's start resets its moments)
    weights : LossWeights
    alpha : float
        PD's ground-truth share of the MLM target (0.5 in the original).
    temperature : float
        The original's: multiplies the teacher's last hidden states before its MLM head.
    at_form : "original" or "kl"
    mv_teacher_layers : "same" (per layer, the fix) or "all" (the released code's behaviour)
    padding_aware : bool
        Leave padded positions out of the layer-wise terms (default False: the original counts them).
    token_dropping : TokenDropping, optional
        Drop tokens in the student's PD steps and learn their importance there (module notes);
        not with ``strategy="akt"``.
    """

    def __init__(self, teacher, schedule, plan, optimizer, weights: LossWeights = LossWeights(), *, alpha=0.5,
                 temperature=1.0, at_form="original", mv_teacher_layers="same", padding_aware=False,
                 token_dropping=None):
        check_step_options(alpha, temperature, at_form, mv_teacher_layers, weights)
        check_layerwise_losses(schedule.strategy, plan.losses)
        if token_dropping is not None:
            if not isinstance(token_dropping, TokenDropping):
                raise TypeError(f"token_dropping must be a TokenDropping, got {type(token_dropping).__name__}")
            if schedule.strategy == "akt":
                raise ValueError("token dropping does not combine with strategy akt: AKT's PD carries every layer's "
                                 "layer-wise terms, which compare full per-layer maps (use pkt, jkt or pd)")
        self.teacher, self.schedule, self.plan, self.optimizer = teacher.eval(), schedule, plan, optimizer
        self.weights = weights.per_layer(schedule.num_layers)
        self.alpha, self.temperature, self.at_form = alpha, temperature, at_form
        self.mv_teacher_layers, self.padding_aware = mv_teacher_layers, padding_aware
        self.token_dropping = token_dropping
        self._stop_early = True  # False: every layer runs in every step (the reference the tests compare with)

    def __call__(self, student, batch: dict) -> dict:
        step = self.optimizer.step_count
        sched = self.schedule
        stage = sched.stage_at(step)
        if sched.is_pd_start(step):
            self.optimizer.reset_moments()  # PD starts with a fresh optimizer
        logged = {"stage": float(sched.stages.index(stage)), **sched.group_lrs(step)}
        layers = sched.loss_layers(step)
        pd = stage.kind == PD
        if not layers and not pd:  # a PKT step where no layer's terms count (step 0): nothing to learn
            return {"loss": 0.0, **logged}
        student.eval()  # dropout off in every distillation run
        need_hidden = bool(layers) and any(x in self.plan.losses for x in ("fmt", "mv"))
        need_scores = bool(layers) and "at" in self.plan.losses
        stop_s = stop_t = None  # PD reads the last layer's logits: every layer runs
        if layers and not pd and self._stop_early:
            stop_s, stop_t = last_layers_read(layers, self.plan, self.mv_teacher_layers)
        out_t = teacher_pass(self.teacher, batch, hidden_states=need_hidden, attention_scores=need_scores, mlm=pd,
                             temperature=self.temperature, stop_after_layer=stop_t)
        B, T = np.shape(batch["input_ids"])
        labels = batch["labels"] if pd else np.full((B, T), -100, np.int64)  # no MLM rows in a layer-wise stage
        drop = self.token_dropping if pd and not layers else None  # only the student's PD forward drops
        dropping = drop.plan_options(batch) if drop is not None else {}  # keep_positions (B, k), split_layer
        out_s = student.forward(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"),
                                labels=labels, next_sentence_label=batch.get("next_sentence_label") if pd else None,
                                output_hidden_states=need_hidden, output_attention_scores=need_scores,
                                mlm_positions="labelled", stop_after_layer=stop_s, **dropping)
        if pd:
            check_loss(student, out_s)  # NaN/inf: stop before backward frees the caches that locate it
        if drop is not None:
            drop.learn(batch, out_s)  # the student's per-token MLM losses, (M,)
            logged["kept_share"] = dropping["keep_positions"].shape[1] / T
        total, grads = 0.0, {}
        if layers:
            terms, total, grads = layerwise_terms(
                out_s, out_t, layers, self.plan, self.weights, batch.get("attention_mask") if self.padding_aware
                else None, self.at_form, self.mv_teacher_layers)
            logged.update(terms)
        if pd:
            gold = np.asarray(labels).reshape(-1)[out_s.mlm_positions]  # (M,)
            pd_mlm, c_mlm = mlm_distillation_forward(out_s.prediction_logits, out_t.mlm_logits, gold, alpha=self.alpha)
            grads["prediction_logits"] = mlm_distillation_backward(1.0, c_mlm)  # (M, V)
            pd_loss = pd_mlm
            if "next_sentence_label" in batch:
                nsp, c_nsp = cross_entropy_forward_mean(out_s.seq_relationship_logits, batch["next_sentence_label"])
                grads["seq_relationship_logits"] = cross_entropy_backward_mean(1.0, c_nsp)  # (B, 2)
                pd_loss += nsp
                logged["nsp_loss"] = nsp
            logged.update(pd_mlm=pd_mlm, pd_loss=pd_loss, mlm_loss=out_s.mlm_loss)
            total += pd_loss
        student.backward(grad_outputs=grads, include_loss=False)
        return {"loss": total, **logged}


class TaskDistillationStep:
    """Task distillation for fine-tuning: the student classifier learns from a fine-tuned teacher's
    logits (soft cross-entropy, DynaBERT's), optionally mixed with the gold labels.

        loss = alpha CE(student, gold) + (1 - alpha) softCE(student / T, teacher / T)

    ``alpha = 0`` is pure distillation (no gold label is read). The teacher runs in eval mode
    without caches; the student's dropout is off, as in every distillation run here.
    Logged: ``loss``, ``soft_ce`` and ``gold_ce`` (both unweighted) and their weighted values.
    """

    def __init__(self, teacher, alpha: float = 0.5, temperature: float = 1.0):
        unit_interval(alpha, "alpha (the gold labels' weight)", "TaskDistillationStep")
        positive_number(temperature, "temperature", "TaskDistillationStep")
        self.teacher, self.alpha, self.temperature = teacher.eval(), float(alpha), float(temperature)

    def __call__(self, student, batch: dict) -> dict:
        student.eval()
        args = (batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))
        logits_t = self.teacher.forward(*args, keep_cache=False).logits  # (B, C)
        out = student.forward(*args)
        soft, c = soft_cross_entropy_forward(out.logits, logits_t, self.temperature)
        dlogits = soft_cross_entropy_backward(1.0 - self.alpha, c)  # (B, C)
        logged = {"soft_ce": soft, "weighted_soft_ce": (1.0 - self.alpha) * soft}
        total = (1.0 - self.alpha) * soft
        if self.alpha > 0:
            gold, c_gold = cross_entropy_forward_mean(out.logits, batch["labels"])
            dlogits = dlogits + cross_entropy_backward_mean(self.alpha, c_gold)
            logged.update(gold_ce=gold, weighted_gold_ce=self.alpha * gold)
            total += self.alpha * gold
        student.backward(grad_outputs={"logits": dlogits}, include_loss=False)
        return {"loss": total, **logged}
