"""What a configuration costs: parameters and multiply-accumulate FLOPs, counted from its shapes.

Dimensions: T sequence length, H hidden width, E embedding width, I block width, D = A*d the
attention heads' width (I unless a sub-network keeps fewer heads), M FFN width, F stacked FFNs,
V vocabulary, L layers.

FLOPs count 2 per multiply-accumulate of every matrix product (dense layers, Q K^T, P V, the MLM
decoder). Elementwise work (norms, activations, softmax) is left out: it is small next to the
products and the paper's FLOP figures agree with this convention (BERT-base at T = 128:
22.3 GFLOPs here, 22.5B in Table 4). A training step costs about 3x its forward pass: the
backward pass computes two products (d input and d weight) for each one of the forward pass.
"""

from __future__ import annotations

import math

from .config import MobileBertConfig
from .model.shapes import encoder_shapes, mlm_head_shapes


def parameter_count(cfg: MobileBertConfig, pooler: bool = True, mlm_head: bool = False, nsp_head: bool = False) -> int:
    """Number of parameters of the encoder (and the chosen heads), tied weights counted once."""
    shapes = encoder_shapes(cfg, "", pooler)
    if mlm_head:
        shapes.update(mlm_head_shapes(cfg))
    if nsp_head:
        shapes["nsp"] = (2 * cfg.hidden_size + 2,)
    return sum(math.prod(s) for s in shapes.values())


def layer_macs_per_token(cfg: MobileBertConfig, seq_len: int) -> dict:
    """Multiply-accumulates per token of one block, by part (attention products need seq_len)."""
    H, I, D, M = cfg.hidden_size, cfg.true_hidden_size, cfg.all_head_size, cfg.intermediate_size
    parts = {}
    if cfg.use_bottleneck:
        parts["bottleneck.input"] = H * I
        if cfg.key_query_shared_bottleneck and not cfg.use_bottleneck_attention:
            parts["bottleneck.attention"] = H * I
        parts["output.bottleneck"] = I * H
    parts["query+key"] = 2 * cfg.attention_input_size * D
    parts["value"] = cfg.value_input_size * D
    parts["scores+context"] = 2 * seq_len * D  # Q K^T and P V, over all heads
    parts["attention.output"] = D * I
    parts["ffns"] = cfg.num_feedforward_networks * 2 * I * M
    return parts


def forward_flops_per_token(cfg: MobileBertConfig, seq_len: int, mlm_positions: float = 0.0) -> float:
    """FLOPs per token of a forward pass: embeddings, every layer, and the MLM head at a fraction
    ``mlm_positions`` of the tokens (0: encoder only; 1: every position; 0.15: labelled only)."""
    E, H, V = cfg.embedding_size, cfg.hidden_size, cfg.vocab_size
    macs = 0
    if cfg.uses_embedding_transformation:
        macs += (3 * E if cfg.trigram_input else E) * H
    macs += cfg.num_hidden_layers * sum(layer_macs_per_token(cfg, seq_len).values())
    macs += mlm_positions * (H * H + H * V)  # transform dense + decoder (tied rows + extra columns)
    return 2.0 * macs


def forward_flops(cfg: MobileBertConfig, batch: int, seq_len: int, mlm_positions: float = 0.0) -> float:
    """FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` tokens."""
    return batch * seq_len * forward_flops_per_token(cfg, seq_len, mlm_positions)


def training_step_flops(cfg: MobileBertConfig, batch: int, seq_len: int, mlm_positions: float = 1.0) -> float:
    """FLOPs of forward + backward: 3x the forward pass (see the module notes)."""
    return 3.0 * forward_flops(cfg, batch, seq_len, mlm_positions)
