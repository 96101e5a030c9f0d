"""Whole-model gradient checks: every parameter tensor, relative error below 1e-6, in float64.

Layouts: the released student (key-query-shared bottleneck, 4 stacked FFNs, NoNorm, ReLU),
TINY (use_bottleneck_attention), the IB-BERT teacher (inverted bottleneck, LayerNorm, GELU),
plain BERT, trigram off, and the padding-aware trigram, all on a padded batch. Big tensors are
checked at sampled entries: entries with a non-zero gradient, some zero ones, and every looked-up
embedding row (``gradcheck``); a tensor without any gradient fails. ``pad_token_id`` is None here
because transformers freezes the [PAD] row for lookups (tested on its own in
test_blocks_gradcheck), which finite differences would see.
"""

import numpy as np
import pytest
from conftest import float64_model, padded_batch

from tinymobilebert import MobileBertForPreTraining, MobileBertForSequenceClassification, MobileBertModel
from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny
from tinymobilebert.gradcheck import gradcheck

TOL = 1e-6
LAYOUTS = {
    "released_student": tiny(num_feedforward_networks=4),
    "tiny_bottleneck_attention": tiny(use_bottleneck_attention=True, key_query_shared_bottleneck=False),
    "ib_bert_teacher": ib_bert_tiny(),
    "plain_bert": bert_tiny(),
    "trigram_off": tiny(trigram_input=False),
    "trigram_padding_aware": tiny(trigram_padding_aware=True, normalization_type="layer_norm", hidden_act="gelu"),
}


LENGTHS = (7, 5, 2)  # a full row, a padded one, one with two real tokens


def check(report):
    assert report.ok(), "\n" + str(report)
    assert len(report.checks) > 0


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_pretraining_model(layout):
    m = float64_model(MobileBertForPreTraining, LAYOUTS[layout])
    rng = np.random.default_rng(1)
    ids, tt, mask = padded_batch(m.config, rng, lengths=LENGTHS)
    labels = np.where(rng.random(ids.shape) < 0.4, ids, -100)
    labels[0, 1] = ids[0, 1]
    inputs = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=labels,
                  next_sentence_label=np.array([0, 1, 1]))
    report = gradcheck(m, inputs, max_entries=6, tol=TOL)
    assert {c.name for c in report.checks} == set(m.params)  # every tensor
    check(report)


@pytest.mark.parametrize("layout", ["released_student", "ib_bert_teacher", "plain_bert"])
@pytest.mark.parametrize("num_labels", [3, 1])
def test_sequence_classification(layout, num_labels):
    cfg = LAYOUTS[layout].replace(num_labels=num_labels, classifier_activation=True)
    if layout == "released_student":
        cfg = cfg.replace(classifier_pooling="mean")
    m = float64_model(MobileBertForSequenceClassification, cfg)
    rng = np.random.default_rng(2)
    ids, tt, mask = padded_batch(cfg, rng, lengths=LENGTHS)
    labels = np.array([0, 2, 1]) if num_labels == 3 else rng.standard_normal(3)
    check(gradcheck(m, dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=labels),
                    max_entries=6, tol=TOL))


def test_gradients_sent_in_on_outputs():
    """Distillation's path: gradients on hidden states, attentions, scores and logits, plus the loss."""
    cfg = LAYOUTS["released_student"]
    m = float64_model(MobileBertForPreTraining, cfg)
    rng = np.random.default_rng(3)
    ids, tt, mask = padded_batch(cfg, rng, lengths=LENGTHS)
    B, T = ids.shape
    L, A, H, V = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size, cfg.vocab_size
    key = mask[:, None, None, :]  # scores at padded keys are finfo.min: project only real keys
    grad_outputs = {
        "hidden_states": [rng.standard_normal((B, T, H)) if i != 1 else None for i in range(L + 1)],
        "attentions": [rng.standard_normal((B, A, T, T)) for _ in range(L)],
        "attention_scores": [rng.standard_normal((B, A, T, T)) * key for _ in range(L)],
        "prediction_logits": rng.standard_normal((B, T, V)),
        "seq_relationship_logits": rng.standard_normal((B, 2)),
        "pooler_output": rng.standard_normal((B, H)),
        "last_hidden_state": rng.standard_normal((B, T, H)),
    }
    inputs = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=np.where(mask > 0, ids, -100),
                  output_hidden_states=True, output_attentions=True, output_attention_scores=True)
    check(gradcheck(m, inputs, grad_outputs, max_entries=5, tol=TOL))
    check(gradcheck(m, inputs, grad_outputs, include_loss=False, max_entries=4, tol=TOL))


def test_bare_encoder_with_output_gradients():
    cfg = LAYOUTS["ib_bert_teacher"]
    m = float64_model(MobileBertModel, cfg)
    rng = np.random.default_rng(4)
    ids, tt, mask = padded_batch(cfg, rng, lengths=LENGTHS)
    B, T = ids.shape
    go = {"last_hidden_state": rng.standard_normal((B, T, cfg.hidden_size)),
          "pooler_output": rng.standard_normal((B, cfg.hidden_size))}
    check(gradcheck(m, dict(input_ids=ids, token_type_ids=tt, attention_mask=mask), go, max_entries=6, tol=TOL))


@pytest.mark.parametrize("layout", ["released_student", "plain_bert"])
def test_training_mode_with_dropout(layout):
    """Dropout on (hidden and attention): the checker rewinds the dropout generator per forward."""
    cfg = LAYOUTS[layout].replace(hidden_dropout_prob=0.15, attention_probs_dropout_prob=0.2)
    m = float64_model(MobileBertForPreTraining, cfg).train()
    rng = np.random.default_rng(5)
    ids, tt, mask = padded_batch(cfg, rng, lengths=LENGTHS)
    inputs = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=np.where(mask > 0, ids, -100),
                  next_sentence_label=np.array([1, 0, 1]))
    check(gradcheck(m, inputs, max_entries=5, tol=TOL))


def test_mlm_head_at_labelled_positions_with_logit_gradients():
    cfg = LAYOUTS["released_student"]
    m = float64_model(MobileBertForPreTraining, cfg)
    rng = np.random.default_rng(6)
    ids, tt, mask = padded_batch(cfg, rng, lengths=LENGTHS)
    labels = np.where((rng.random(ids.shape) < 0.3) & (mask > 0), ids, -100)
    labels[0, 0] = ids[0, 0]
    M = int((labels != -100).sum())
    inputs = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=labels, mlm_positions="labelled")
    go = {"prediction_logits": rng.standard_normal((M, cfg.vocab_size))}
    no_nsp = ("cls.seq_relationship.weight", "cls.seq_relationship.bias")  # no next-sentence label here
    check(gradcheck(m, inputs, go, max_entries=5, tol=TOL, allow_zero=no_nsp))
