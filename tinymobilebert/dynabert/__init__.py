"""DynaBERT (Hou et al., NeurIPS 2020): one model, run at the width and depth that fits.

Width and depth are run-time choices of every model (``forward(width_mult=, depth_mult=)``,
``model.plan``); this package adds what trains and ships such a model:

| module | what |
|---|---|
| ``importance`` | head importance (|d loss / d head_mask|) and FFN neuron importance (first-order Taylor) |
| ``rewire`` | permute heads and neurons most-important-first (the full-width function unchanged) |
| ``step`` | one training step: every sub-network's distillation (or label) loss summed into the same gradients |
| ``extract`` | ``extract_subnetwork(model, w, d)``: a standalone model of the sub-network; transformers export |
| ``augment`` | optional word replacement from the model's own MLM predictions |
| ``table`` | the width x depth table: accuracy, parameters, FLOPs per token, latency; several runs (seeds) combined (``python -m tinymobilebert.dynabert RUN ...``) |
| ``run``, ``command`` | the whole recipe as one resumable run; ``python -m tinymobilebert dynabert`` |
"""

from .augment import augment_examples
from .extract import extract_subnetwork, subnetwork_config
from .importance import Importance, compute_importance, plot_head_importance
from .rewire import importance_order, rewire
from .step import (SubnetworkDistillation, SubnetworkFinetuning, teacher_hidden_indices, width_depth_subnetworks,
                   width_subnetworks)
from .table import format_table, measure_latency, subnetwork_table

__all__ = ["Importance", "compute_importance", "plot_head_importance", "importance_order", "rewire",
           "SubnetworkDistillation", "SubnetworkFinetuning", "teacher_hidden_indices", "width_subnetworks",
           "width_depth_subnetworks", "extract_subnetwork", "subnetwork_config", "augment_examples",
           "subnetwork_table", "format_table", "measure_latency"]
