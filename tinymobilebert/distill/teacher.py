"""The teacher's side of distillation: finding and loading it, its inference-lean pass, and what
the student copies from it.

Dimensions: B batch, T tokens, H inter-block width, A heads, M labelled positions, V vocabulary.

**The teacher is a constant.** It runs in eval mode (no dropout), with ``keep_cache=False`` (no
activation is kept for a backward pass that never comes: only the outputs asked for survive the
forward pass), no further than the last layer the step reads (``stop_after_layer``: a PKT
stage's paired layer), and nothing ever calls its ``backward``. Its MLM logits are made the released
code's way, ``head(temperature * h_last)`` (``distill.teacher_mlm_logits``), at the labelled
positions only.

**What the student copies** (JKT and PKT; google-research ``mobilebert/run_pretraining.py``,
``init_embedding``: student variables outside the encoder whose names the teacher checkpoint
also has): the word, position and token-type embeddings, the embedding transformation, the MLM
head (``cls.predictions.*``) and the NSP head (``cls.seq_relationship.*``), and a pooler when
both have one. The embedding norm is copied only when both models use the same normalisation:
the original student's ``FakeLayerNorm`` (NoNorm) has no counterpart in an IB-BERT teacher's
``LayerNorm``, so it keeps gamma 1, beta 0. Two quirks carried over on purpose: the copied MLM
transform was trained behind the teacher's GELU and runs behind the student's ReLU, and the NSP
head was trained on the teacher's tanh-pooled features.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np

from ..checkpoint import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, read_config
from ..model import MobileBertForPreTraining
from .logits import teacher_mlm_logits
from .schedules import layer_of


def resolve_model_dir(path, what: str = "--teacher") -> str:
    """The model directory of ``path``: ``path`` itself, or ``path/model`` (a run folder).

    Raises FileNotFoundError, one line naming ``what``, when neither holds config.json and weights.
    """
    if path is None or not os.path.isdir(str(path)):
        raise FileNotFoundError(f"{what} {path}: no such folder (give a run folder or a model directory)")
    for candidate in (os.path.join(path, "model"), path):
        if os.path.isfile(os.path.join(candidate, CONFIG_NAME)):
            if not any(os.path.isfile(os.path.join(candidate, n)) for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)):
                raise FileNotFoundError(f"{what} {path}: {candidate} has a {CONFIG_NAME} but no weights "
                                        f"({WEIGHTS_NAME}); was the run finished?")
            return candidate
    raise FileNotFoundError(f"{what} {path}: no trained model there (expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                            f"in it or in {os.path.join(str(path), 'model')})")


def load_teacher(path, what: str = "--teacher") -> MobileBertForPreTraining:
    """A pretraining teacher (MLM + NSP heads) in eval mode, with its tokenizer.

    ``path``: a model directory or a run folder holding ``model/``. Errors (one line each): no
    weights, no vocab.txt (the student must share the teacher's vocabulary), no MLM head.
    """
    folder = resolve_model_dir(path, what)
    read_config(folder)  # a clear error for a broken config.json before the weights are read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing head is reported below, in one line
        teacher = MobileBertForPreTraining.from_pretrained(folder)
    missing_heads = [n for n in teacher.load_report.initialized if n.startswith("cls.predictions")]
    if missing_heads:
        raise ValueError(f"{what} {path}: the checkpoint has no MLM head ({missing_heads[0]}, ...): the teacher "
                         "must be a pretrained model, not a fine-tuned classifier")
    if teacher.tokenizer is None:
        raise FileNotFoundError(f"{what} {path}: {folder} has no vocab.txt; the student needs the teacher's vocabulary")
    return teacher.eval()


class TeacherOutputs(NamedTuple):
    hidden_states: tuple | None  # L_t + 1 x (B, T, H) (fewer when stopped early), or None when not asked for
    attention_scores: tuple | None  # L_t x (B, A, T, T), masked and scaled (fewer when stopped early), or None
    mlm_logits: np.ndarray | None  # (M, V) at the labelled positions, or None
    mlm_rows: np.ndarray | None  # (M,) flat indices into B*T of those positions


def teacher_pass(teacher, batch: dict, *, hidden_states=False, attention_scores=False, mlm=False,
                 temperature: float = 1.0, stop_after_layer=None) -> TeacherOutputs:
    """Run the teacher once, inference-lean (see the module notes).

    Parameters
    ----------
    teacher : MobileBertForPreTraining
    batch : dict
        ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T) and, with ``mlm``,
        ``labels`` (B, T) (-100 where there is no prediction).
    hidden_states, attention_scores, mlm : bool
        Which outputs to return.
    temperature : float
        The original's distillation temperature: multiplies the final hidden states before the
        MLM head (1: the plain logits).
    stop_after_layer : int, optional
        Run the teacher's layers 0 .. this one only (``model.plan``), when no output of a layer
        above is read: the hidden states and scores then hold those layers. Not with ``mlm``
        (the MLM logits are read from the last layer).
    """
    if mlm and stop_after_layer is not None:
        raise ValueError("teacher_pass: mlm needs the teacher's last layer; stop_after_layer must be None with it, "
                         f"got {stop_after_layer!r}")
    teacher.eval()  # whatever a caller did to it: no dropout, ever
    B, T = np.shape(batch["input_ids"])
    no_rows = np.full((B, T), -100, np.int64)  # the head's own pass scores no position
    out = teacher.forward(batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"), labels=no_rows,
                          output_hidden_states=hidden_states, output_attention_scores=attention_scores,
                          keep_cache=False, mlm_positions="labelled", stop_after_layer=stop_after_layer)
    logits = rows = None
    if mlm:
        rows = np.flatnonzero(np.asarray(batch["labels"]).reshape(-1) != -100)  # (M,)
        logits = teacher_mlm_logits(teacher, out.last_hidden_state, temperature, rows)  # (M, V)
    return TeacherOutputs(out.hidden_states, out.attention_scores, logits, rows)


# ------------------------------------------------------------------------------ copying
def copied_names(student, teacher) -> list[str]:
    """Student tensors that JKT/PKT copy from the teacher (see the module notes), in student order."""
    same_norm = student.config.normalization_type == teacher.config.normalization_type
    names = []
    for name in student.params:
        if layer_of(name) is not None or name not in teacher.params:
            continue
        if ".embeddings.LayerNorm." in "." + name and not same_norm:
            continue
        names.append(name)
    return names


def copy_from_teacher(student, teacher) -> list[str]:
    """Copy the embeddings and heads into the student (see the module notes); returns their names.

    Raises ValueError naming every tensor whose shapes differ (another vocabulary, embedding
    width or position count), before anything is copied.
    """
    names = copied_names(student, teacher)
    bad = [f"{n} {teacher.params[n].shape} (teacher) vs {student.params[n].shape} (student)" for n in names
           if teacher.params[n].shape != student.params[n].shape]
    if bad:
        raise ValueError("cannot copy the teacher's embeddings and heads into the student, shapes differ: "
                         + "; ".join(bad) + " (the student needs the teacher's vocabulary, embedding_size, "
                         "max_position_embeddings and type_vocab_size)")
    for n in names:
        student.params[n][...] = teacher.params[n]
    return names
