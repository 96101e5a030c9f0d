"""Which teacher layer each student layer learns from, and whether a student and a teacher can
be paired for a given set of losses.

Ls student layers, Lt teacher layers. Layers are numbered from 0, as in the parameter names
(``encoder.layer.{i}``). Layer i's output is ``hidden_states[i + 1]`` (``hidden_states[0]`` is
the embedding output) and its scores are ``attention_scores[i]``.

A mapping is data: a tuple with one entry per student layer, the teacher layer it learns from
or None (no layer-wise loss on that layer). Presets:

* ``"uniform"``: student layer i -> teacher layer ceil((i + 1) Lt / Ls) - 1, i.e. in 1-based
  numbers l -> ceil(l Lt / Ls). Why: the teacher's depth is spread evenly over the student's;
  the student's last layer meets the teacher's last (both feed the heads); equal depths give the
  identity (MobileBERT's pairing, 24 to 24); an integer ratio k gives l -> k l (TinyBERT's
  g(m) = k m); no student layer maps to the embedding output.
* ``"last"``: only the student's last layer, to the teacher's last; the other layers get no
  layer-wise loss. Why: it assumes nothing about how the layers of models of different depth
  correspond (MiniLM transfers only the last layer's attention), and the last layer is what the
  heads read.
* an explicit sequence of length Ls, entries in [0, Lt) or None.

Validation: the length must be the student's layer count, every entry an int in range or
None, at least one entry not None, and the entries must be **non-decreasing** (repeats allowed:
a student deeper than its teacher needs them). A mapping that crosses (a lower student layer
imitating a higher teacher layer than a layer above it) is nearly always a mistake, such as a
list counted from the wrong end, so it is an error; the loss functions themselves take any
pair of tensors, for experiments that want one.

``distillation_plan`` checks a (student config, teacher config, mapping, losses) pairing and
returns the pairs to compare, or raises an error naming both models' sizes: attention transfer
needs the same head count (heads are paired one to one); hidden-state losses need the same
inter-block width, or ``projection=True`` for a learned projection (``HiddenProjection``, which
exists only during distillation); MLM distillation needs the same vocabulary, logit
distillation the same number of labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .projection import HiddenProjection

MAPPING_PRESETS = ("uniform", "last")
# loss name -> what it compares (what must match between the models)
LOSSES = {"fmt": "hidden states", "mv": "hidden states", "hidden_mse": "hidden states",
          "at": "attention scores", "mlm": "MLM logits", "logits": "classifier logits"}
HIDDEN_LOSSES = ("fmt", "mv", "hidden_mse")


@dataclass(frozen=True)
class LayerMapping:
    """teacher_layers[i] = the teacher layer student layer i learns from (or None)."""

    teacher_layers: tuple
    num_teacher_layers: int
    name: str = "explicit"

    def __post_init__(self):
        fn = "LayerMapping"
        Lt = self.num_teacher_layers
        if isinstance(Lt, bool) or not isinstance(Lt, (int, np.integer)) or Lt < 1:
            raise ValueError(f"{fn}: num_teacher_layers must be a positive integer, got {Lt!r}")
        entries = tuple(self.teacher_layers)
        if not entries:
            raise ValueError(f"{fn}: the mapping is empty (one entry per student layer expected)")
        for i, j in enumerate(entries):
            if j is None:
                continue
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < Lt:
                raise ValueError(f"{fn}: entry {i} (student layer {i}) must be a teacher layer in [0, {Lt}) or None, "
                                 f"got {j!r}")
        mapped = [(i, int(j)) for i, j in enumerate(entries) if j is not None]
        if not mapped:
            raise ValueError(f"{fn}: every entry is None; at least one student layer must learn from a teacher layer")
        for (i0, j0), (i1, j1) in zip(mapped, mapped[1:]):
            if j1 < j0:
                raise ValueError(f"{fn}: the mapping must be non-decreasing, but student layer {i0} -> teacher "
                                 f"layer {j0} and student layer {i1} -> teacher layer {j1} cross: {list(entries)}")
        object.__setattr__(self, "teacher_layers", tuple(None if j is None else int(j) for j in entries))

    @property
    def num_student_layers(self) -> int:
        return len(self.teacher_layers)

    def pairs(self) -> list[tuple[int, int]]:
        """[(student layer, teacher layer)] for the mapped layers; also the ``attention_scores`` indices."""
        return [(i, j) for i, j in enumerate(self.teacher_layers) if j is not None]

    def hidden_state_pairs(self, include_embeddings: bool = False) -> list[tuple[int, int]]:
        """[(student index, teacher index)] into ``hidden_states``: layer i's output is index i + 1.
        ``include_embeddings`` adds (0, 0), the embedding outputs (as DynaBERT does)."""
        return [(0, 0)] * bool(include_embeddings) + [(i + 1, j + 1) for i, j in self.pairs()]


def uniform_mapping(num_student_layers: int, num_teacher_layers: int) -> LayerMapping:
    """Student layer i -> teacher layer ceil((i + 1) Lt / Ls) - 1 (see the module notes)."""
    Ls, Lt = _layer_counts(num_student_layers, num_teacher_layers)
    return LayerMapping(tuple(((i + 1) * Lt + Ls - 1) // Ls - 1 for i in range(Ls)), Lt, "uniform")


def last_mapping(num_student_layers: int, num_teacher_layers: int) -> LayerMapping:
    """Only the student's last layer, to the teacher's last (see the module notes)."""
    Ls, Lt = _layer_counts(num_student_layers, num_teacher_layers)
    return LayerMapping((None,) * (Ls - 1) + (Lt - 1,), Lt, "last")


def layer_mapping(spec, num_student_layers: int, num_teacher_layers: int) -> LayerMapping:
    """A ``LayerMapping`` from a preset name ("uniform", "last"), an explicit sequence, or a mapping."""
    Ls, Lt = _layer_counts(num_student_layers, num_teacher_layers)
    if isinstance(spec, LayerMapping):
        mapping = spec
    elif isinstance(spec, str):
        if spec not in MAPPING_PRESETS:
            raise ValueError(f"layer_mapping: mapping must be one of {MAPPING_PRESETS} or a list of teacher layers, "
                             f"got {spec!r}")
        return (uniform_mapping if spec == "uniform" else last_mapping)(Ls, Lt)
    else:
        try:
            entries = tuple(spec)
        except TypeError:
            raise TypeError(f"layer_mapping: mapping must be a preset name {MAPPING_PRESETS} or a sequence of "
                            f"teacher layers (None for none), got {type(spec).__name__}") from None
        mapping = LayerMapping(entries, Lt)
    if mapping.num_student_layers != Ls or mapping.num_teacher_layers != Lt:
        raise ValueError(f"layer_mapping: the mapping has {mapping.num_student_layers} entries for "
                         f"{mapping.num_teacher_layers} teacher layers, but the student has {Ls} layers and "
                         f"the teacher {Lt}")
    return mapping


def _layer_counts(Ls, Lt):
    for name, v in (("num_student_layers", Ls), ("num_teacher_layers", Lt)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"layer_mapping: {name} must be a positive integer, got {v!r}")
    return int(Ls), int(Lt)


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class DistillationPlan:
    """What to compare between a student and a teacher, checked against both configs."""

    mapping: LayerMapping
    losses: tuple  # loss names, from LOSSES
    hidden_pairs: tuple  # ((student hidden_states index, teacher index), ...) for the hidden-state losses
    attention_pairs: tuple  # ((student layer, teacher layer), ...) for attention transfer
    projection: tuple | None  # (student width, teacher width) of the learned projection, or None
    student: str  # the student's sizes, for messages and logs
    teacher: str

    def make_projection(self, seed=0, dtype=np.float32) -> HiddenProjection | None:
        """The learned projection this plan needs (one, shared by every hidden state), or None."""
        if self.projection is None:
            return None
        return HiddenProjection(*self.projection, seed=seed, dtype=dtype)


def model_sizes(config) -> str:
    """The sizes that decide pairing, as one line (for error messages)."""
    return (f"hidden_size={config.hidden_size}, num_attention_heads={config.num_attention_heads}, "
            f"num_hidden_layers={config.num_hidden_layers}, vocab_size={config.vocab_size}")


def distillation_plan(student_config, teacher_config, mapping="uniform", losses=("fmt", "at", "mv"),
                      projection: bool = False, include_embeddings: bool = False) -> DistillationPlan:
    """Check that ``losses`` can compare this student with this teacher under ``mapping``.

    Parameters
    ----------
    student_config, teacher_config : MobileBertConfig
    mapping : "uniform" (default), "last", a sequence of teacher layers (None for none), or a LayerMapping
    losses : names from ``LOSSES``: "fmt", "mv", "hidden_mse" (hidden states), "at" (attention
        scores), "mlm" (MLM logits), "logits" (classifier logits)
    projection : bool
        Learn a student-width -> teacher-width projection for the hidden-state losses (needed when
        the widths differ). False (default): differing widths are an error.
    include_embeddings : bool
        Also compare the embedding outputs (hidden_states[0]) in the hidden-state losses.

    Returns
    -------
    DistillationPlan

    Raises
    ------
    ValueError
        Naming both models' sizes, when a loss cannot compare them.
    """
    fn = "distillation_plan"
    if isinstance(losses, str):
        losses = (losses,)
    losses = tuple(losses)
    unknown = [x for x in losses if x not in LOSSES]
    if unknown or not losses:
        raise ValueError(f"{fn}: losses must be a non-empty list of {tuple(LOSSES)}, got {list(losses)}")
    s, t = student_config, teacher_config
    where = f"student ({model_sizes(s)}) and teacher ({model_sizes(t)})"
    layer_map = layer_mapping(mapping, s.num_hidden_layers, t.num_hidden_layers)
    hidden = [x for x in losses if x in HIDDEN_LOSSES]
    if "at" in losses and s.num_attention_heads != t.num_attention_heads:
        raise ValueError(f"{fn}: cannot pair {where} for attention transfer: it compares heads one to one, but the "
                         f"student has {s.num_attention_heads} heads and the teacher {t.num_attention_heads}")
    if projection and not hidden:
        raise ValueError(f"{fn}: projection=True, but none of the losses {list(losses)} reads hidden states "
                         f"(a projection serves {HIDDEN_LOSSES})")
    if hidden and s.hidden_size != t.hidden_size and not projection:
        raise ValueError(f"{fn}: cannot pair {where} for {', '.join(hidden)}: the hidden states have widths "
                         f"{s.hidden_size} (student) and {t.hidden_size} (teacher); pass projection=True to learn a "
                         f"{s.hidden_size} -> {t.hidden_size} projection used only during distillation")
    if "mlm" in losses and s.vocab_size != t.vocab_size:
        raise ValueError(f"{fn}: cannot pair {where} for MLM distillation: the vocabularies differ "
                         f"({s.vocab_size} vs {t.vocab_size}; both must use the same tokenizer)")
    if "logits" in losses and s.num_labels != t.num_labels:
        raise ValueError(f"{fn}: cannot pair {where} for logit distillation: num_labels is {s.num_labels} "
                         f"(student) and {t.num_labels} (teacher)")
    return DistillationPlan(
        mapping=layer_map, losses=losses,
        hidden_pairs=tuple(layer_map.hidden_state_pairs(include_embeddings)) if hidden else (),
        attention_pairs=tuple(layer_map.pairs()) if "at" in losses else (),
        projection=(s.hidden_size, t.hidden_size) if projection else None,
        student=model_sizes(s), teacher=model_sizes(t))
