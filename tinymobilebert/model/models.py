"""The model classes: the bare encoder and the pretraining, masked-LM and classification heads.

Dimensions: B batch, T tokens, N = B*T, H hidden width, V vocabulary, L labels.

Each class's ``forward`` mirrors transformers' (same arguments, same output field names) and its
``backward(grad_outputs=None)`` returns ``{name: d loss / d param}`` (views of the accumulated
gradients). ``grad_outputs`` adds gradients on outputs: with both, the gradient is that of

    out.loss + sum over given keys k of <grad_outputs[k], out.k>

Keys: "last_hidden_state", "pooler_output", "hidden_states", "attentions", "attention_scores"
(per-layer lists, None where no gradient), plus the head's logits ("prediction_logits",
"seq_relationship_logits" or "logits"). Pass ``include_loss=False`` to leave out the loss.

Every ``forward`` also takes the encoder-plan options (``model.plan``), each differentiated by
``backward`` exactly as it ran:

    head_mask         (L, A) or (A,): multiplies each head's attention probabilities
                      (transformers' semantics); its gradient is returned by ``backward`` under
                      "head_mask"
    width_mult        DynaBERT width in (0, 1]: the first max(1, round(A w)) heads of every
                      layer and the same fraction of every FFN's neurons run
    depth_mult        DynaBERT depth in (0, 1]: the layers floor(i / d), i < round(L d), run;
                      hidden_states, attentions and scores then have one entry per layer run
    keep_positions    (B, k) token positions kept by token dropping (any order; run in
                      ascending order); None runs every token everywhere
    split_layer       token dropping's split layer (default L/2 - 1), counted in layers run
    stop_after_layer  l in [0, L - 1]: only the stored layers 0 .. l run; hidden_states,
                      attentions and scores hold those layers (l + 2, l + 1 and l + 1 entries),
                      last_hidden_state is layer l's output and every head reads it; the layers
                      above get no gradient. Not with depth_mult < 1 or keep_positions.
                      Progressive knowledge transfer's stage l needs no more (``distill.steps``).

With token dropping, hidden states and attentions of the layers after the split have the kept
tokens only: (B, k, H) and (B, A, k, T) at the split, (B, A, k, k) after it.
"""

from __future__ import annotations

import numpy as np

from ..blocks.heads import linear_head_backward, linear_head_forward, mlm_head_backward, mlm_head_forward
from ..losses import (check_labels, cross_entropy_backward_mean, cross_entropy_forward_mean, cross_entropy_per_row,
                      mse_backward, mse_forward)
from .base import MobileBertPreTrainedModel
from .outputs import BaseModelOutput, MaskedLMOutput, PreTrainingOutput, SequenceClassifierOutput
from .shapes import encoder_shapes, mlm_head_shapes


class MobileBertModel(MobileBertPreTrainedModel):
    """The bare encoder: embeddings, layers and pooler, with names without a prefix.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False,
    output_attentions=False, output_attention_scores=False) -> BaseModelOutput``. With no head
    there is no loss: ``backward`` needs ``grad_outputs``.
    """

    is_bare_encoder = True

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False,
                output_attentions=False, output_attention_scores=False, keep_cache=True,
                head_mask=None, width_mult=1.0, depth_mult=1.0, keep_positions=None, split_layer=None,
                stop_after_layer=None):
        fields, state = self._encoder_forward(input_ids, token_type_ids, attention_mask, output_hidden_states,
                                              output_attentions, output_attention_scores, keep_cache,
                                              **_plan_options(head_mask, width_mult, depth_mult, keep_positions,
                                                              split_layer, stop_after_layer))
        self._state = state if keep_cache else None
        return BaseModelOutput(**fields)

    def backward(self, grad_outputs=None, include_loss=True):
        """Gradients of sum_k <grad_outputs[k], out.k> (see the module notes); there is no loss
        to include, the argument exists so every model's ``backward`` takes the same arguments."""
        grad_outputs = self._start_backward(grad_outputs, self.ENCODER_GRAD_KEYS)
        if not grad_outputs:
            raise ValueError("backward: MobileBertModel has no loss; pass grad_outputs")
        return self._backward_encoder_outputs(grad_outputs, None, None)


def _plan_options(head_mask, width_mult, depth_mult, keep_positions, split_layer, stop_after_layer) -> dict:
    return dict(head_mask=head_mask, width_mult=width_mult, depth_mult=depth_mult, keep_positions=keep_positions,
                split_layer=split_layer, stop_after_layer=stop_after_layer)


def _scatter_rows(dh_rows, rows, n):
    """The (N, H) gradient of all rows from that of the selected ``rows`` (None: all of them)."""
    if rows is None:
        return dh_rows
    dh = np.zeros((n, dh_rows.shape[1]), dh_rows.dtype)
    dh[rows] = dh_rows
    return dh


def _mlm_rows(h, labels, mlm_positions):
    """The rows (N,) the MLM head runs on: all of them, or only the labelled ones."""
    if mlm_positions == "all":
        return None
    if mlm_positions != "labelled":
        raise ValueError(f"mlm_positions must be 'all' or 'labelled', got {mlm_positions!r}")
    if labels is None:
        raise ValueError("mlm_positions='labelled' needs labels")
    return np.flatnonzero(labels.reshape(-1) != -100)


class MobileBertForPreTraining(MobileBertPreTrainedModel):
    """Encoder + MLM head + next-sentence head (transformers' ``MobileBertForPreTraining``).

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None,
    next_sentence_label=None, output_hidden_states=False, output_attentions=False,
    output_attention_scores=False) -> PreTrainingOutput``.

    labels (B, T): vocabulary ids at the positions to predict, -100 elsewhere.
    next_sentence_label (B,): 0 when sentence B follows A, 1 when it is random.
    ``out.loss`` = mean MLM cross-entropy + NSP cross-entropy, counting the terms whose labels
    were given (transformers needs both and otherwise returns no loss).

    ``mlm_positions="labelled"`` runs the MLM head only where ``labels != -100``, as the
    original TensorFlow code does (about 6x less head work at 15% masking; the loss and every
    gradient are unchanged). ``prediction_logits`` is then (M, V) for those M positions, in
    row-major order, and ``out.mlm_positions`` holds their flat indices into B*T.

    With labels, ``out.mlm_token_losses`` (M,) float64 is the cross-entropy at each labelled
    position in row-major order (those of ``labels[labels != -100]``), read from the loss's
    log-sum-exp; ``out.mlm_loss`` is their mean. Token dropping's importance learns from them.
    """

    @classmethod
    def parameter_shapes(cls, config) -> dict:
        s = encoder_shapes(config, cls.prefix_for(config), True)
        s.update(mlm_head_shapes(config))
        s["cls.seq_relationship.weight"] = (2, config.hidden_size)
        s["cls.seq_relationship.bias"] = (2,)
        return s

    @property
    def decoder_name(self) -> str:
        """The tensor the MLM head scores against: the tied word embedding unless untied."""
        return self.word_embeddings_name if self.config.tie_word_embeddings else "cls.predictions.decoder.weight"

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None, next_sentence_label=None,
                output_hidden_states=False, output_attentions=False, output_attention_scores=False, keep_cache=True,
                mlm_positions="all", head_mask=None, width_mult=1.0, depth_mult=1.0, keep_positions=None,
                split_layer=None, stop_after_layer=None):
        cfg = self.config
        fields, state = self._encoder_forward(input_ids, token_type_ids, attention_mask, output_hidden_states,
                                              output_attentions, output_attention_scores, keep_cache,
                                              **_plan_options(head_mask, width_mult, depth_mult, keep_positions,
                                                              split_layer, stop_after_layer))
        B, T = state.B, state.T
        y = None if labels is None else check_labels(labels, cfg.vocab_size, "labels", (B, T)).reshape(-1)
        rows = _mlm_rows(fields["last_hidden_state"], y, mlm_positions)
        h = fields["last_hidden_state"].reshape(B * T, -1)
        logits, c_mlm = mlm_head_forward(h if rows is None else h[rows], self.params, self.decoder_name, cfg)
        seq_logits, c_nsp = linear_head_forward(fields["pooler_output"], self.params, "cls.seq_relationship")
        out = PreTrainingOutput(**fields, prediction_logits=logits.reshape(B, T, -1) if rows is None else logits,
                                seq_relationship_logits=seq_logits, mlm_positions=rows)
        c_mlm_loss = c_nsp_loss = None
        if y is not None:
            out.mlm_loss, c_mlm_loss = cross_entropy_forward_mean(logits, y if rows is None else y[rows])
            out.mlm_token_losses = cross_entropy_per_row(c_mlm_loss)
        if next_sentence_label is not None:
            y = check_labels(next_sentence_label, 2, "next_sentence_label", (B,))
            out.nsp_loss, c_nsp_loss = cross_entropy_forward_mean(seq_logits, y)
        if labels is not None or next_sentence_label is not None:
            out.loss = (out.mlm_loss or 0.0) + (out.nsp_loss or 0.0)
        state.outputs |= {"prediction_logits", "seq_relationship_logits"}
        state.heads = (c_mlm, c_nsp, c_mlm_loss, c_nsp_loss, rows, logits.shape)
        self._state = state if keep_cache else None
        return out

    def backward(self, grad_outputs=None, include_loss=True):
        """Gradients of out.loss (+ outputs' gradients); see the module notes."""
        grad_outputs = self._start_backward(
            grad_outputs, self.ENCODER_GRAD_KEYS + ("prediction_logits", "seq_relationship_logits"))
        st = self._state
        B, T = st.B, st.T
        c_mlm, c_nsp, c_mlm_loss, c_nsp_loss, rows, logits_shape = st.heads
        if include_loss and c_mlm_loss is None and c_nsp_loss is None and not grad_outputs:
            raise ValueError("backward: the forward pass computed no loss (give labels and/or next_sentence_label) "
                             "and no grad_outputs were given")
        dlogits = None
        if include_loss and c_mlm_loss is not None:
            dlogits = cross_entropy_backward_mean(1.0, c_mlm_loss)
        out_shape = (B, T, logits_shape[1]) if rows is None else logits_shape
        g = self._grad_output(grad_outputs, "prediction_logits", out_shape)
        if g is not None:
            g = g.reshape(logits_shape)
            dlogits = g if dlogits is None else dlogits + g
        dseq = cross_entropy_backward_mean(1.0, c_nsp_loss) if include_loss and c_nsp_loss is not None else None
        g = self._grad_output(grad_outputs, "seq_relationship_logits", (B, 2))
        if g is not None:
            dseq = g if dseq is None else dseq + g
        d_last = None if dlogits is None else _scatter_rows(
            mlm_head_backward(dlogits, c_mlm, self.params, self.grads, self.decoder_name, self.config), rows, B * T)
        d_pooled = None if dseq is None else linear_head_backward(dseq, c_nsp, self.params, self.grads)
        return self._backward_encoder_outputs(grad_outputs, d_last, d_pooled)


class MobileBertForMaskedLM(MobileBertForPreTraining):
    """Encoder + MLM head (transformers' ``MobileBertForMaskedLM``; no pooler, no NSP head)."""

    add_pooling_layer = False

    @classmethod
    def parameter_shapes(cls, config) -> dict:
        s = encoder_shapes(config, cls.prefix_for(config), False)
        s.update(mlm_head_shapes(config))
        return s

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                output_hidden_states=False, output_attentions=False, output_attention_scores=False, keep_cache=True,
                mlm_positions="all", head_mask=None, width_mult=1.0, depth_mult=1.0, keep_positions=None,
                split_layer=None, stop_after_layer=None):
        """As ``MobileBertForPreTraining.forward`` without the NSP head; ``out.logits`` is the MLM's."""
        cfg = self.config
        fields, state = self._encoder_forward(input_ids, token_type_ids, attention_mask, output_hidden_states,
                                              output_attentions, output_attention_scores, keep_cache,
                                              **_plan_options(head_mask, width_mult, depth_mult, keep_positions,
                                                              split_layer, stop_after_layer))
        B, T = state.B, state.T
        y = None if labels is None else check_labels(labels, cfg.vocab_size, "labels", (B, T)).reshape(-1)
        rows = _mlm_rows(fields["last_hidden_state"], y, mlm_positions)
        h = fields["last_hidden_state"].reshape(B * T, -1)
        logits, c_mlm = mlm_head_forward(h if rows is None else h[rows], self.params, self.decoder_name, cfg)
        out = MaskedLMOutput(**fields, logits=logits.reshape(B, T, -1) if rows is None else logits, mlm_positions=rows)
        c_loss = None
        if y is not None:
            out.loss, c_loss = cross_entropy_forward_mean(logits, y if rows is None else y[rows])
            out.mlm_token_losses = cross_entropy_per_row(c_loss)
        state.outputs |= {"logits"}
        state.heads = (c_mlm, c_loss, rows, logits.shape)
        self._state = state if keep_cache else None
        return out

    def backward(self, grad_outputs=None, include_loss=True):
        grad_outputs = self._start_backward(grad_outputs, self.ENCODER_GRAD_KEYS + ("logits",))
        st = self._state
        c_mlm, c_loss, rows, logits_shape = st.heads
        if include_loss and c_loss is None and not grad_outputs:
            raise ValueError("backward: the forward pass computed no loss (give labels) and no grad_outputs were given")
        dlogits = cross_entropy_backward_mean(1.0, c_loss) if include_loss and c_loss is not None else None
        g = self._grad_output(grad_outputs, "logits", (st.B, st.T, logits_shape[1]) if rows is None else logits_shape)
        if g is not None:
            g = g.reshape(logits_shape)
            dlogits = g if dlogits is None else dlogits + g
        d_last = None if dlogits is None else _scatter_rows(
            mlm_head_backward(dlogits, c_mlm, self.params, self.grads, self.decoder_name, self.config), rows, st.B * st.T)
        return self._backward_encoder_outputs(grad_outputs, d_last, None)


class MobileBertForSequenceClassification(MobileBertPreTrainedModel):
    """Encoder + pooler + dropout + linear classifier (transformers' class of that name).

    ``labels`` (B,): class ids (cross-entropy) when ``num_labels > 1``; floats (mean squared
    error, regression) when ``num_labels == 1``.
    """

    @classmethod
    def parameter_shapes(cls, config) -> dict:
        s = encoder_shapes(config, cls.prefix_for(config), True)
        s["classifier.weight"] = (config.num_labels, config.hidden_size)
        s["classifier.bias"] = (config.num_labels,)
        return s

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                output_hidden_states=False, output_attentions=False, output_attention_scores=False, keep_cache=True,
                head_mask=None, width_mult=1.0, depth_mult=1.0, keep_positions=None, split_layer=None,
                stop_after_layer=None):
        cfg = self.config
        fields, state = self._encoder_forward(input_ids, token_type_ids, attention_mask, output_hidden_states,
                                              output_attentions, output_attention_scores, keep_cache,
                                              **_plan_options(head_mask, width_mult, depth_mult, keep_positions,
                                                              split_layer, stop_after_layer))
        p_drop = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
        rng = self.dropout_rng if self.training else None
        logits, c_cls = linear_head_forward(fields["pooler_output"], self.params, "classifier", p_drop, rng)
        out = SequenceClassifierOutput(**fields, logits=logits)
        c_loss = None
        if labels is not None:
            if cfg.num_labels == 1:
                y = np.asarray(labels, dtype=np.float64)
                if y.size != state.B:
                    raise ValueError(f"labels must have {state.B} entries (one per sequence), got shape {y.shape}")
                out.loss, c_loss = mse_forward(logits, y)
            else:
                y = check_labels(labels, cfg.num_labels, "labels", (state.B,))
                out.loss, c_loss = cross_entropy_forward_mean(logits, y)
        state.outputs |= {"logits"}
        state.heads = (c_cls, c_loss)
        self._state = state if keep_cache else None
        return out

    def backward(self, grad_outputs=None, include_loss=True):
        grad_outputs = self._start_backward(grad_outputs, self.ENCODER_GRAD_KEYS + ("logits",))
        st = self._state
        c_cls, c_loss = st.heads
        if include_loss and c_loss is None and not grad_outputs:
            raise ValueError("backward: the forward pass computed no loss (give labels) and no grad_outputs were given")
        dlogits = None
        if include_loss and c_loss is not None:
            if self.config.num_labels == 1:
                dlogits = mse_backward(1.0, c_loss, self.dtype)
            else:
                dlogits = cross_entropy_backward_mean(1.0, c_loss)
        g = self._grad_output(grad_outputs, "logits", (st.B, self.config.num_labels))
        if g is not None:
            dlogits = g if dlogits is None else dlogits + g
        d_pooled = None if dlogits is None else linear_head_backward(dlogits, c_cls, self.params, self.grads)
        return self._backward_encoder_outputs(grad_outputs, None, d_pooled)
