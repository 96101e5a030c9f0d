"""The model configuration: transformers' ``MobileBertConfig`` fields, plus named presets.

Field names and defaults are transformers' (``configuration_mobilebert.py``), so a
``config.json`` written by transformers loads here and ours loads there. A few fields exist only
here; they name conventions where the original TensorFlow code and transformers differ, or
options transformers does not have, and their defaults reproduce transformers.

One config describes three layouts:

* MobileBERT (the student): ``use_bottleneck=True``, intra-block width 128 < inter-block 512;
* IB-BERT (the teacher): ``use_bottleneck=True`` with the intra-block width *larger* than the
  inter-block width and neither bottleneck-attention flag, so Q, K, V read the raw block input;
* plain BERT: ``use_bottleneck=False``, ``trigram_input=False``, ``embedding_size=hidden_size``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("relu", "relu6", "gelu", "gelu_new", "gelu_pytorch_tanh", "tanh")
NORMALIZATIONS = ("no_norm", "layer_norm")
MODEL_TYPES = ("mobilebert", "bert")

# transformers' BertConfig fields we read and write (the rest of a BERT config is kept in `extra`)
BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
               "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
               "tie_word_embeddings")
# fields that exist only here; written to config.json too (transformers keeps unknown keys)
OWN_FIELDS = ("embedding_layer_norm_eps", "output_layer_norm_eps", "masked_attention_score", "trigram_padding_aware",
              "classifier_pooling", "attention_head_size")


@dataclass
class MobileBertConfig:
    """Hyper-parameters of MobileBERT, IB-BERT and BERT, with transformers' names.

    ``true_hidden_size`` (the width inside a block) is derived: ``intra_bottleneck_size`` when
    ``use_bottleneck`` else ``hidden_size``.
    """

    vocab_size: int = 30522
    hidden_size: int = 512  # inter-block width H
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512  # FFN width
    hidden_act: str = "relu"  # MobileBERT's OPT swaps GELU for ReLU (Table 7: 2x faster)
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    embedding_size: int = 128  # E, the factorised word-embedding width
    trigram_input: bool = True  # concat(next, current, previous) embeddings -> 3E
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128  # I, the width inside a block
    use_bottleneck_attention: bool = False  # Q, K, V all read the bottleneck (MobileBERT-TINY)
    key_query_shared_bottleneck: bool = True  # Q, K share a second bottleneck; V reads raw input
    num_feedforward_networks: int = 4  # stacked FFNs per block
    normalization_type: str = "no_norm"  # NoNorm: y = x * gamma + beta (OPT, Table 7)
    classifier_activation: bool = True  # pooler = tanh(dense(h[:, 0])); False: just h[:, 0]
    classifier_dropout: float | None = None  # None: hidden_dropout_prob
    tie_word_embeddings: bool = True
    num_labels: int = 2  # sequence-classification head
    # ---- options that exist only here; defaults reproduce transformers ----
    # transformers builds the embedding norm and MobileBertOutput's norm without `eps`, so with
    # layer_norm they use PyTorch's default 1e-5 rather than layer_norm_eps.
    embedding_layer_norm_eps: float = 1e-5
    output_layer_norm_eps: float = 1e-5
    # None: add finfo(dtype).min to masked scores (transformers). A number v: *replace* masked
    # scores by v (the original TF code uses -6.0, "quantization friendly").
    masked_attention_score: float | None = None
    # transformers' trigram window reads the [PAD] embedding next to the last real token, so
    # outputs change with padding. True: neighbours that are padding count as zeros, as at the
    # sequence edges, which makes outputs padding-invariant. Off for parity.
    trigram_padding_aware: bool = False
    # what the pooler reads: "cls" = the first token's hidden state (transformers); "mean" = the
    # mean over real tokens, which fine-tunes small models markedly better from little data
    classifier_pooling: str = "cls"
    # the width d of one attention head. None: true_hidden_size // num_attention_heads, as in
    # transformers. A number lets a block run fewer heads of the same width than its block
    # width holds (a DynaBERT sub-network extracted at width w < 1: Q/K/V have heads * d rows),
    # which neither transformers config can express (see ``dynabert.extract``)
    attention_head_size: int | None = None
    # "mobilebert", or "bert" for a plain-BERT layout stored as transformers' BERT: parameter
    # names then start with "bert." and config dicts use BertConfig's fields
    model_type: str = "mobilebert"
    # keys of a config.json we do not use, kept so they are written back unchanged
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------------ derived sizes
    @property
    def true_hidden_size(self) -> int:
        """Width inside a block: the intra-bottleneck size when bottlenecks are used."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def head_size(self) -> int:
        """The width d of one attention head: ``attention_head_size`` if set, else
        true_hidden_size // num_attention_heads."""
        if self.attention_head_size is not None:
            return self.attention_head_size
        return self.true_hidden_size // self.num_attention_heads

    @property
    def all_head_size(self) -> int:
        """Width of Q, K, V and of the attention output's input: heads x head width (transformers'
        name). Equals true_hidden_size unless ``attention_head_size`` says otherwise."""
        return self.num_attention_heads * self.head_size

    @property
    def attention_input_size(self) -> int:
        """Width of the tensor Q and K read (the value reads ``value_input_size``)."""
        if self.use_bottleneck and (self.use_bottleneck_attention or self.key_query_shared_bottleneck):
            return self.true_hidden_size
        return self.hidden_size

    @property
    def value_input_size(self) -> int:
        if self.use_bottleneck and self.use_bottleneck_attention:
            return self.true_hidden_size
        return self.hidden_size

    @property
    def uses_embedding_transformation(self) -> bool:
        return self.trigram_input or self.embedding_size != self.hidden_size

    @property
    def is_plain_bert(self) -> bool:
        return not self.use_bottleneck and not self.trigram_input and self.embedding_size == self.hidden_size

    # ------------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config cannot describe a model."""

        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(f"MobileBertConfig: {msg}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                     "embedding_size", "intra_bottleneck_size", "num_feedforward_networks", "num_labels"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 f"{name} must be a positive integer, got {v!r}")
        need(self.num_hidden_layers >= 1, "num_hidden_layers must be >= 1")
        need(self.hidden_act in ACTIVATIONS,
             f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        need(self.normalization_type in NORMALIZATIONS,
             f"normalization_type must be one of {NORMALIZATIONS}, got {self.normalization_type!r}")
        if self.attention_head_size is None:
            need(self.true_hidden_size % self.num_attention_heads == 0,
                 f"the block width true_hidden_size={self.true_hidden_size} "
                 f"({'intra_bottleneck_size' if self.use_bottleneck else 'hidden_size'}) must be divisible "
                 f"by num_attention_heads={self.num_attention_heads} (or set attention_head_size)")
        else:
            v = self.attention_head_size
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 f"attention_head_size must be None or a positive integer, got {v!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            need(0.0 <= v < 1.0, f"{name} must be in [0, 1), got {v!r}")
        need(self.classifier_dropout is None or 0.0 <= self.classifier_dropout < 1.0,
             f"classifier_dropout must be None or in [0, 1), got {self.classifier_dropout!r}")
        for name in ("layer_norm_eps", "embedding_layer_norm_eps", "output_layer_norm_eps"):
            v = getattr(self, name)
            need(v > 0, f"{name} must be > 0, got {v!r}")
        need(self.initializer_range > 0, f"initializer_range must be > 0, got {self.initializer_range!r}")
        need(self.hidden_size >= self.embedding_size,
             f"embedding_size={self.embedding_size} must not exceed hidden_size={self.hidden_size} "
             "(the MLM head scores the first embedding_size features against the tied embeddings)")
        need(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size,
             f"pad_token_id={self.pad_token_id} must be None or in [0, vocab_size={self.vocab_size})")
        need(self.masked_attention_score is None or math.isfinite(self.masked_attention_score),
             f"masked_attention_score must be None or a finite number, got {self.masked_attention_score!r}")
        if self.use_bottleneck_attention:
            need(self.use_bottleneck, "use_bottleneck_attention needs use_bottleneck=True")
        need(self.model_type in MODEL_TYPES, f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        need(self.classifier_pooling in ("cls", "mean"),
             f"classifier_pooling must be 'cls' or 'mean', got {self.classifier_pooling!r}")
        if self.model_type == "bert":
            need(self.is_plain_bert and self.num_feedforward_networks == 1
                 and self.normalization_type == "layer_norm" and self.classifier_activation,
                 "model_type='bert' needs the plain-BERT layout (use_bottleneck=False, trigram_input=False, "
                 "embedding_size=hidden_size, num_feedforward_networks=1, layer_norm, classifier_activation=True)")

    # ------------------------------------------------------------------------ transformers dicts
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MobileBertConfig":
        """Build from a transformers ``config.json`` dict; unknown keys are kept in ``extra``.

        A ``model_type: "bert"`` dict (transformers' ``BertConfig``) becomes the plain-BERT layout.
        ``true_hidden_size`` is derived, so a stored value is checked, not used.
        """
        if not isinstance(d, dict):
            raise TypeError(f"MobileBertConfig.from_dict expects a dict, got {type(d).__name__}")
        d = dict(d)
        model_type = d.pop("model_type", "mobilebert")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"MobileBertConfig.from_dict: model_type {model_type!r} is not supported "
                             f"(expected one of {MODEL_TYPES})")
        if model_type == "bert":
            return cls._from_bert_dict(d)
        known = set(cls.field_names()) - {"model_type"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        if "id2label" in d and "num_labels" not in kwargs and isinstance(d["id2label"], dict):
            kwargs["num_labels"] = len(d["id2label"])
        stored_true = d.pop("true_hidden_size", None)
        cfg = cls(**kwargs, extra=d)
        if stored_true is not None and stored_true != cfg.true_hidden_size:
            raise ValueError(
                f"MobileBertConfig: config dict has true_hidden_size={stored_true}, but its other fields "
                f"give {cfg.true_hidden_size} (intra_bottleneck_size if use_bottleneck else hidden_size)")
        return cfg

    @classmethod
    def _from_bert_dict(cls, d: dict[str, Any]) -> "MobileBertConfig":
        for key, allowed in (("position_embedding_type", ("absolute",)), ("is_decoder", (False,)),
                             ("add_cross_attention", (False,))):
            if key in d and d[key] not in allowed:
                raise ValueError(f"MobileBertConfig.from_dict: BERT config with {key}={d[key]!r} is not supported "
                                 f"(only {allowed[0]!r})")
        kwargs = {k: d.pop(k) for k in list(d) if k in BERT_FIELDS or k in OWN_FIELDS}
        if "id2label" in d and isinstance(d["id2label"], dict):
            kwargs["num_labels"] = len(d["id2label"])
        base = bert_base()
        hidden = kwargs.get("hidden_size", base.hidden_size)
        eps = kwargs.get("layer_norm_eps", base.layer_norm_eps)
        layout = {"embedding_size": hidden, "intra_bottleneck_size": hidden,
                  "embedding_layer_norm_eps": eps, "output_layer_norm_eps": eps}
        return base.replace(**{**layout, **kwargs}, extra=d)

    def to_dict(self) -> dict[str, Any]:
        """A transformers-style dict: MobileBertConfig's fields (with the derived
        ``true_hidden_size``), or BertConfig's for ``model_type="bert"``; plus this library's own
        fields and the kept unknown keys."""
        d = dict(self.extra)
        names = self.field_names() if self.model_type == "mobilebert" else BERT_FIELDS + OWN_FIELDS
        for name in names:
            d[name] = getattr(self, name)
        if self.model_type == "mobilebert":
            d["true_hidden_size"] = self.true_hidden_size
        d.pop("num_labels", None)
        if self.num_labels != 2 or "id2label" in d:
            if not (isinstance(d.get("id2label"), dict) and len(d["id2label"]) == self.num_labels):
                d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
                d["label2id"] = {v: int(k) for k, v in d["id2label"].items()}
        d["model_type"] = self.model_type
        return d

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def replace(self, **changes) -> "MobileBertConfig":
        """A copy with some fields changed (validated)."""
        changes.setdefault("extra", dict(self.extra))
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------- presets
# Paper-size layouts (facts: ../shared/spec/mobilebert.md section 1) and small ones for tests.


def mobilebert(**overrides) -> MobileBertConfig:
    """The released MobileBERT student (``google/mobilebert-uncased``): 24 x (512/128), 4 FFNs."""
    return MobileBertConfig(**{"classifier_activation": False, **overrides})


def mobilebert_tiny(**overrides) -> MobileBertConfig:
    """MobileBERT-TINY: Q, K, V all read the bottleneck, 2 stacked FFNs."""
    return MobileBertConfig(**{"use_bottleneck_attention": True, "key_query_shared_bottleneck": False,
                               "num_feedforward_networks": 2, "classifier_activation": False, **overrides})


def ib_bert_large(**overrides) -> MobileBertConfig:
    """The IB-BERT_LARGE teacher: inter-block 512, intra-block 1024, 4 heads, one FFN of 4096.

    GELU is the tanh form (``gelu_new``), which is what the original TF code's ``gelu`` computes.
    """
    return MobileBertConfig(**{
        "intermediate_size": 4096, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.1,
        "intra_bottleneck_size": 1024, "use_bottleneck_attention": False,
        "key_query_shared_bottleneck": False, "num_feedforward_networks": 1,
        "normalization_type": "layer_norm", "classifier_activation": True, **overrides})


def bert_base(**overrides) -> MobileBertConfig:
    """Plain BERT-base: no bottleneck, no trigram, one FFN, LayerNorm, GELU (exact erf).

    ``model_type="bert"``: its parameters are named, and saved, as transformers' BERT.
    """
    return MobileBertConfig(**{"model_type": "bert",
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "embedding_size": 768, "trigram_input": False, "use_bottleneck": False,
        "intra_bottleneck_size": 768, "use_bottleneck_attention": False,
        "key_query_shared_bottleneck": False, "num_feedforward_networks": 1,
        "normalization_type": "layer_norm", "classifier_activation": True,
        # BERT builds every norm with layer_norm_eps
        "embedding_layer_norm_eps": 1e-12, "output_layer_norm_eps": 1e-12, **overrides})


def tiny(**overrides) -> MobileBertConfig:
    """A test-sized MobileBERT student (key-query-shared bottleneck, 2 stacked FFNs)."""
    return mobilebert(**{"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "intermediate_size": 24, "embedding_size": 16,
                         "intra_bottleneck_size": 16, "num_feedforward_networks": 2,
                         "max_position_embeddings": 64, **overrides})


def ib_bert_tiny(**overrides) -> MobileBertConfig:
    """A test-sized IB-BERT teacher: intra-block width (48) larger than inter-block (32)."""
    return ib_bert_large(**{"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "intermediate_size": 64, "embedding_size": 16,
                            "intra_bottleneck_size": 48, "max_position_embeddings": 64, **overrides})


def bert_tiny(**overrides) -> MobileBertConfig:
    """A test-sized plain BERT."""
    return bert_base(**{"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "intermediate_size": 48, "embedding_size": 32,
                        "intra_bottleneck_size": 32, "max_position_embeddings": 64, **overrides})


# The laptop-scale pair of the demo and of ``distill``: the same inter-block width (128), head
# count (4), depth (4), embedding width (64) and vocabulary (set at run time to the trained
# WordPiece vocabulary's size), as MobileBERT and IB-BERT_LARGE share theirs, so feature maps and
# attentions pair one to one and the embeddings and heads copy across. With the demo's ~4000
# words the student has 1.03M parameters and the teacher 2.42M (the student has 0.42x).


def mobilebert_small_student(**overrides) -> MobileBertConfig:
    """The laptop-scale MobileBERT student: 128 between blocks, 64 inside, 4 layers, 2 stacked FFNs.

    Mean pooling for classifiers (fine-tunes small models from little data markedly better).
    """
    return mobilebert(**{"vocab_size": 4000, "hidden_size": 128, "embedding_size": 64, "intra_bottleneck_size": 64,
                         "num_attention_heads": 4, "intermediate_size": 256, "num_hidden_layers": 4,
                         "num_feedforward_networks": 2, "max_position_embeddings": 128,
                         "classifier_pooling": "mean", **overrides})


def ib_bert_small_teacher(**overrides) -> MobileBertConfig:
    """The laptop-scale IB-BERT teacher of ``mobilebert_small_student``: 128 between blocks, 192
    inside (an inverted bottleneck), one FFN of 768, LayerNorm, GELU, 4 layers, 4 heads."""
    return ib_bert_large(**{"vocab_size": 4000, "hidden_size": 128, "embedding_size": 64,
                            "intra_bottleneck_size": 192, "num_attention_heads": 4, "intermediate_size": 768,
                            "num_hidden_layers": 4, "max_position_embeddings": 128, "classifier_pooling": "mean",
                            **overrides})


PRESETS = {f.__name__: f for f in (mobilebert, mobilebert_tiny, ib_bert_large, bert_base,
                                   tiny, ib_bert_tiny, bert_tiny, mobilebert_small_student,
                                   ib_bert_small_teacher)}
