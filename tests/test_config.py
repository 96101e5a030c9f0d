"""MobileBertConfig: transformers' names and defaults, dict round trips, validation, presets."""

import json
import math

import pytest

from tinymobilebert import MobileBertConfig, MobileBertForPreTraining
from tinymobilebert.config import PRESETS, bert_base, ib_bert_large, mobilebert, mobilebert_tiny
from tinymobilebert.model.shapes import encoder_shapes

# transformers' MobileBertConfig defaults (configuration_mobilebert.py)
TRANSFORMERS_DEFAULTS = dict(
    vocab_size=30522, hidden_size=512, num_hidden_layers=24, num_attention_heads=4, intermediate_size=512,
    hidden_act="relu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0, embedding_size=128,
    trigram_input=True, use_bottleneck=True, intra_bottleneck_size=128, use_bottleneck_attention=False,
    key_query_shared_bottleneck=True, num_feedforward_networks=4, normalization_type="no_norm",
    classifier_activation=True, classifier_dropout=None, tie_word_embeddings=True)


def test_defaults_are_transformers():
    cfg = MobileBertConfig()
    for k, v in TRANSFORMERS_DEFAULTS.items():
        assert getattr(cfg, k) == v, k
    assert cfg.true_hidden_size == 128
    assert MobileBertConfig(use_bottleneck=False).true_hidden_size == 512


def test_from_dict_keeps_unknown_keys_and_round_trips():
    d = {"model_type": "mobilebert", "architectures": ["MobileBertForPreTraining"], "hidden_size": 64,
         "intra_bottleneck_size": 32, "embedding_size": 16, "num_attention_heads": 2, "true_hidden_size": 32,
         "transformers_version": "4.6.0.dev0", "some_future_field": {"a": 1}}
    cfg = MobileBertConfig.from_dict(d)
    assert cfg.hidden_size == 64 and cfg.true_hidden_size == 32
    out = cfg.to_dict()
    assert out["architectures"] == ["MobileBertForPreTraining"] and out["some_future_field"] == {"a": 1}
    assert out["true_hidden_size"] == 32 and out["model_type"] == "mobilebert"
    assert MobileBertConfig.from_dict(json.loads(cfg.to_json_string())) == cfg


def test_from_dict_reads_num_labels_from_id2label():
    cfg = MobileBertConfig.from_dict({"id2label": {"0": "a", "1": "b", "2": "c"}})
    assert cfg.num_labels == 3


def test_from_dict_rejects_inconsistent_true_hidden_size():
    with pytest.raises(ValueError, match="true_hidden_size=256"):
        MobileBertConfig.from_dict({"true_hidden_size": 256})


@pytest.mark.parametrize("changes, message", [
    (dict(intra_bottleneck_size=130), "divisible by num_attention_heads"),
    (dict(use_bottleneck=False, hidden_size=30), "divisible by num_attention_heads"),
    (dict(hidden_act="swish"), "hidden_act must be one of"),
    (dict(normalization_type="batch_norm"), "normalization_type must be one of"),
    (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob must be in \[0, 1\)"),
    (dict(vocab_size=0), "vocab_size must be a positive integer"),
    (dict(num_hidden_layers=2.5), "num_hidden_layers must be a positive integer"),
    (dict(embedding_size=1024), "embedding_size=1024 must not exceed hidden_size"),
    (dict(pad_token_id=40000), "pad_token_id=40000"),
    (dict(use_bottleneck=False, use_bottleneck_attention=True), "use_bottleneck_attention needs use_bottleneck"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps must be > 0"),
    (dict(masked_attention_score=float("-inf")), "masked_attention_score"),
])
def test_validation_messages(changes, message):
    with pytest.raises(ValueError, match=message):
        MobileBertConfig(**changes)


def count(shapes):
    return sum(math.prod(s) for s in shapes.values())


def test_preset_parameter_counts():
    """Counts computed from transformers' shapes (spec section 3); the paper reports 25.3M/15.1M/293M/109M."""
    assert count(encoder_shapes(mobilebert(), "", False)) == 24_581_888
    assert count(encoder_shapes(mobilebert_tiny(), "", False)) == 15_485_696
    assert count(MobileBertForPreTraining.parameter_shapes(mobilebert())) == 36_597_564
    assert count(encoder_shapes(ib_bert_large(), "", False)) == 294_205_184
    assert count(encoder_shapes(bert_base(), "", True)) == 109_482_240


def test_teacher_preset_is_an_inverted_bottleneck():
    t = ib_bert_large()
    assert t.intra_bottleneck_size == 1024 > t.hidden_size == 512
    assert t.num_attention_heads == 4 and t.head_size == 256
    assert t.attention_input_size == 512 and t.value_input_size == 512  # Q, K, V read the raw input
    assert t.intermediate_size == 4096 and t.num_feedforward_networks == 1
    assert t.normalization_type == "layer_norm" and t.hidden_act.startswith("gelu")


def test_bert_base_is_plain():
    b = bert_base()
    assert b.is_plain_bert and not b.uses_embedding_transformation
    assert b.embedding_layer_norm_eps == b.output_layer_norm_eps == b.layer_norm_eps


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    PRESETS[name]().validate()
