"""Knowledge distillation: the losses a student learns from its teacher with, each a
forward/backward pair, and the pairing of student and teacher layers.

Every loss reads arrays the models return (``hidden_states``, ``attention_scores``, logits),
returns ``(loss, cache)`` with the loss a Python float (accumulated in float64), and its backward
returns the gradient on the *student's* array, in the student's dtype, ready for
``model.backward(grad_outputs={...})``. The teacher side is a constant: nothing flows back to it.

| loss | equation (per layer / batch) | follows |
|---|---|---|
| ``feature_map_transfer`` | mean_{B,T,H} (LN(h_t) - LN(h_s))^2, LN parameter-free (eps 1e-12) | mobilebert ``run_pretraining.py`` |
| ``attention_transfer`` | mean_{B,A,T} -sum_S softmax(s_t) log_softmax(s_s) (form "kl": KL) | mobilebert ``run_pretraining.py`` |
| ``mean_variance_transfer`` | mean_{B,T} (mu_t - mu_s)^2 and mean_{B,T} abs(var_t - var_s) | mobilebert ``run_pretraining.py`` |
| ``mlm_distillation`` | CE(alpha onehot + (1 - alpha) softmax(t), s) / (count + 1e-5) | mobilebert ``run_pretraining.py`` |
| ``soft_cross_entropy`` | mean_B -sum_C softmax(t/T) log_softmax(s/T) | DynaBERT ``run_glue.py`` |
| ``hidden_mse`` | mean over all entries of (h_s - h_t)^2 | DynaBERT ``run_glue.py`` |

Each module's notes give the exact semantics (padding, the original code's quirks and the
options that reproduce or fix them). ``mapping`` says which teacher layer each student layer
learns from and checks that two models can be paired; ``projection`` is the learned
student-width -> teacher-width map for students narrower than their teacher (never part of the
student's checkpoint).

On top of the losses, MobileBERT's training itself: ``schedules`` (``TransferSchedule``: PKT's
per-layer gates and warm-up, JKT, AKT, PD; which terms count and how fast each tensor learns at
every step), ``teacher`` (loading it, its inference-lean pass, what the student copies from it),
``steps`` (``DistillationStep``, optionally with token dropping in its PD steps, and
``TaskDistillationStep``: the ``Trainer`` step functions),
``budget`` (equal training budgets for a distilled student and one trained alone) and ``run``
(``distill`` and ``distill_task``: the runs behind ``python -m tinymobilebert distill``).
"""

from .attention import FORMS, attention_transfer_backward, attention_transfer_forward
from .feature_map import (LAYER_NORM_EPS, feature_map_transfer_backward, feature_map_transfer_forward,
                          parameter_free_layer_norm)
from .hidden import hidden_mse_backward, hidden_mse_forward
from .logits import (mlm_distillation_backward, mlm_distillation_forward, soft_cross_entropy_backward,
                     soft_cross_entropy_forward, teacher_mlm_logits)
from .mapping import (LOSSES, MAPPING_PRESETS, DistillationPlan, LayerMapping, distillation_plan, last_mapping,
                      layer_mapping, model_sizes, uniform_mapping)
from .mean_variance import TEACHER_LAYERS, mean_variance_transfer_backward, mean_variance_transfer_forward
from .projection import HiddenProjection

__all__ = [
    "feature_map_transfer_forward", "feature_map_transfer_backward", "parameter_free_layer_norm", "LAYER_NORM_EPS",
    "attention_transfer_forward", "attention_transfer_backward", "FORMS",
    "mean_variance_transfer_forward", "mean_variance_transfer_backward", "TEACHER_LAYERS",
    "mlm_distillation_forward", "mlm_distillation_backward", "teacher_mlm_logits",
    "soft_cross_entropy_forward", "soft_cross_entropy_backward",
    "hidden_mse_forward", "hidden_mse_backward",
    "LayerMapping", "layer_mapping", "uniform_mapping", "last_mapping", "MAPPING_PRESETS",
    "DistillationPlan", "distillation_plan", "model_sizes", "LOSSES", "HiddenProjection",
]

# ---- the schedules, the teacher's side, the step functions and the runs (issue 9, items 3-5)
from .run import DEFAULTS as DISTILL_DEFAULTS, distill, distill_task, lamb_for  # noqa: E402
from .schedules import (STRATEGIES, LossWeights, Stage, TransferSchedule, background_lr,  # noqa: E402
                        layer_gate, layer_of)
from .steps import DistillationStep, TaskDistillationStep, layerwise_terms  # noqa: E402
from .teacher import copy_from_teacher, copied_names, load_teacher, teacher_pass  # noqa: E402

__all__ += ["distill", "distill_task", "DISTILL_DEFAULTS", "lamb_for", "STRATEGIES", "LossWeights", "Stage",
            "TransferSchedule", "background_lr", "layer_gate", "layer_of", "DistillationStep",
            "TaskDistillationStep", "layerwise_terms", "copy_from_teacher", "copied_names", "load_teacher",
            "teacher_pass"]
