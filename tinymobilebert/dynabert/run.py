"""The whole DynaBERT recipe as one resumable run: teacher, importance, rewiring, two stages, the table.

``python -m tinymobilebert dynabert`` calls ``run_dynabert``. A run folder holds

    run.json                      the settings (a resumed run keeps them)
    teacher/                      only when --model is a pretrained (not fine-tuned) directory:
                                  the fine-tuning run that makes the teacher (its model/ is it)
    augmented.safetensors         the augmented training rows (only with --augment)
    importance.safetensors        head (L, A) and neuron (L, F, M) importance; head_importance.png
    stage1/ stage2/ [stage3/]     one Trainer run each: log.jsonl, checkpoints/, model/, summary.json
    table.json, table.md          the width x depth table; summary.json: everything in one place

Stages (``step.py`` has the losses): the teacher is the fine-tuned full model, in eval mode
throughout; the student starts as its copy, rewired by importance (computed on the teacher, dev
set by default as in the original). Stage 1 distils into every width at full depth (hidden-state
weight 0.1), stage 2 into every (width, depth) from the stage-1 model, whose copy at full size
(or, with ``stage2_teacher="student"``, at the student's width) is the teacher (weight 1.0).
Stage 3, off by default, fine-tunes every sub-network on the labels. In every stage the
sub-networks' losses on a batch are summed into the same gradients, then one clip (global norm
1.0) and one AdamW step (weight decay 0, as DynaBERT).

Resume: a stage with a summary.json is done and is read back; an unfinished stage continues from
its latest checkpoint (``Trainer.resume``: weights, optimizer, dropout generator, position in the
data), so the losses it logs are those of an uninterrupted run. The importance scores and the
augmented rows are read back from their files, never recomputed.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from ..checkpoint import read_config, read_safetensors_dir, write_json, write_safetensors
from ..data import derived_rng, encode_examples, example_batches
from ..model import MobileBertForMaskedLM, MobileBertForSequenceClassification
from ..optim import AdamW, LinearWarmupDecay
from ..train import Trainer
from .augment import augment_examples
from .importance import Importance, compute_importance, plot_head_importance
from .rewire import rewire
from .step import (SubnetworkDistillation, SubnetworkFinetuning, TEACHER_WIDTHS, width_depth_subnetworks,
                   width_subnetworks)
from .table import format_table, subnetwork_table

AUGMENT = 7  # derived_rng stream tag of the augmentation draws

DEFAULTS = dict(
    widths=(0.25, 0.5, 0.75, 1.0), depths=(0.5, 0.75, 1.0),
    teacher_steps=300, teacher_lr=1e-3,  # fine-tuning a pretrained --model first (as `finetune`)
    width_steps=200, depth_steps=300, final_steps=0,
    batch_size=32, max_length=64, lr=5e-4, warmup=0,
    width_hidden_weight=0.1, depth_hidden_weight=1.0, stage2_teacher="full",
    importance_split="dev", importance_accumulate_gradients=False,
    augment=0, augment_mlm=None,
    eval_every=100, save_every=100, seed=0, latency_repeats=5,
)


# ------------------------------------------------------------------------------------ pieces
def _load_classifier(path, **changes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a pretrained directory's new classifier head is expected
        return MobileBertForSequenceClassification.from_pretrained(path, **changes)


def is_classifier_dir(path) -> bool:
    """True when ``path`` holds a sequence classifier (its architectures say so)."""
    arch = read_config(path).extra.get("architectures") or [""]
    return arch[0].endswith("ForSequenceClassification")


def prepare_teacher(out_dir, model_dir, task, s, progress) -> str:
    """The teacher's model directory: ``model_dir`` if it is a fine-tuned classifier, else the result
    of fine-tuning it on the task in ``{out}/teacher`` (done once; a finished one is reused)."""
    if is_classifier_dir(model_dir):
        labels = read_config(model_dir).num_labels
        if labels != task.num_labels:
            raise ValueError(f"--model {model_dir} is a classifier with {labels} labels, but task {task.name} has "
                             f"{task.num_labels}; give a classifier of this task or a pretrained directory")
        return model_dir
    from ..workflows import finetune

    folder = os.path.join(out_dir, "teacher")
    if not os.path.isfile(os.path.join(folder, "summary.json")):
        finetune(folder, task, model_dir=model_dir, steps=s["teacher_steps"], warmup=s["teacher_steps"] // 10,
                 batch_size=s["batch_size"],
                 max_length=s["max_length"], lr=s["teacher_lr"], seed=s["seed"], progress=progress, baseline=False)
    return os.path.join(folder, "model")


def evaluate_subnetwork(model, dev_batches, width_mult=1.0, depth_mult=1.0) -> dict:
    """{"accuracy", "loss"} of the sub-network (w, d) over the dev batches (eval mode)."""
    model.eval()
    correct = count = 0
    loss = 0.0
    for batch in dev_batches():
        out = model.forward(**batch, width_mult=width_mult, depth_mult=depth_mult, keep_cache=False)
        n = len(batch["labels"])
        loss += float(out.loss) * n
        if model.config.num_labels > 1:
            correct += int((out.logits.argmax(axis=1) == batch["labels"]).sum())
        count += n
    result = {"loss": loss / count}
    if model.config.num_labels > 1:
        result["accuracy"] = correct / count
    return result


def evaluate_all(model, dev_batches, subnetworks) -> dict:
    """Every sub-network's dev accuracy ("accuracy_w{w}_d{d}") and their mean ("accuracy")."""
    metrics = {}
    for w, d in subnetworks:
        r = evaluate_subnetwork(model, dev_batches, w, d)
        metrics[f"accuracy_w{w:g}_d{d:g}"] = r.get("accuracy", -r["loss"])
    metrics["accuracy"] = float(np.mean(list(metrics.values())))
    return metrics


def load_or_compute_importance(out_dir, teacher, batches, s) -> Importance:
    path = os.path.join(out_dir, "importance.safetensors")
    if os.path.isfile(path):
        arrays = read_safetensors_dir_file(path)
        return Importance(arrays["heads"], arrays["neurons"])
    imp = compute_importance(teacher, batches, accumulate_gradients=s["importance_accumulate_gradients"])
    write_safetensors(path, imp.to_arrays())
    try:
        plot_head_importance(imp.heads, os.path.join(out_dir, "head_importance.png"))
    except ImportError:
        pass  # matplotlib is optional
    return imp


def read_safetensors_dir_file(path) -> dict:
    from safetensors.numpy import load_file

    return dict(load_file(path))


def augmented_train(out_dir, train, model_dir, tokenizer, s) -> dict:
    """The training rows with ``s["augment"]`` MLM-replaced copies each (made once, then read back)."""
    path = os.path.join(out_dir, "augmented.safetensors")
    if os.path.isfile(path):
        return read_safetensors_dir_file(path)
    mlm_dir = s["augment_mlm"] or model_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlm = MobileBertForMaskedLM.from_pretrained(mlm_dir)
    if any(n.startswith("cls.predictions") for n in mlm.load_report.initialized):
        raise ValueError(f"--augment needs a model with an MLM head, and {mlm_dir} has none (a fine-tuned classifier?); "
                         "give the pretrained directory with --augment-mlm")
    rows = augment_examples(train, mlm, tokenizer, s["augment"], derived_rng(AUGMENT, s["seed"]))
    write_safetensors(path, rows)
    return rows


def train_stage(name, out_dir, student, step_fn, steps, train, dev_batches, subnetworks, s, tokenizer, progress,
                resume) -> dict:
    """One stage as a Trainer run in ``{out}/{name}``; a finished stage is read back instead."""
    folder = os.path.join(out_dir, name)
    done = os.path.join(folder, "summary.json")
    if os.path.isfile(done):
        student.load_state_dict(read_safetensors_dir(os.path.join(folder, "model")), strict=False)
        import json

        with open(done) as f:
            return json.load(f)
    opt = AdamW(student.store, lr=s["lr"], weight_decay=0.0, max_grad_norm=1.0,
                schedule=LinearWarmupDecay(warmup_steps=s["warmup"], total_steps=steps))

    def batches(epoch, start):
        return example_batches(train, s["batch_size"], epoch, seed=s["seed"], start_batch=start, drop_last=True)

    trainer = Trainer(student, opt, batches, folder, max_steps=steps, step_fn=step_fn,
                      evaluate=lambda m: evaluate_all(m, dev_batches, subnetworks), eval_every=s["eval_every"],
                      save_every=s["save_every"], tokenizer=tokenizer, progress=progress, description=f"dynabert {name}")
    if resume:
        trainer.resume()
    cpu0 = time.process_time()
    result = trainer.train()
    student.save_pretrained(os.path.join(folder, "model"), tokenizer=tokenizer)
    summary = {"stage": name, "steps": result["steps"], "seconds": result["seconds"],
               "cpu_seconds": time.process_time() - cpu0,
               "subnetworks": [list(x) for x in subnetworks], "last_dev": result["last_dev"]}
    write_json(done, summary)
    return summary


# ------------------------------------------------------------------------------------ the run
def run_dynabert(out_dir, model_dir, task, *, resume=False, progress=None, log=print, **settings) -> dict:
    """Run DynaBERT end to end (see the module notes). Returns the summary (also in summary.json).

    ``task`` is a ``data.Task``; ``settings`` override ``DEFAULTS`` (a resumed run keeps its
    recorded settings).
    """
    import json

    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"run_dynabert: unknown settings {sorted(unknown)}")
    record = os.path.join(out_dir, "run.json")
    if os.path.isfile(record) and not resume:
        raise FileExistsError(f"{out_dir} already holds a dynabert run; give --resume to continue it or another --out")
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if resume and os.path.isfile(record):
        with open(record) as f:
            s = {**s, **json.load(f)["settings"]}
    s["widths"], s["depths"] = _multipliers(s["widths"], "widths"), _multipliers(s["depths"], "depths")
    if s["stage2_teacher"] not in TEACHER_WIDTHS:
        raise ValueError(f"stage2_teacher must be one of {TEACHER_WIDTHS}, got {s['stage2_teacher']!r}")
    if s["importance_split"] not in ("dev", "train"):
        raise ValueError(f"importance_split must be 'dev' or 'train', got {s['importance_split']!r}")
    os.makedirs(out_dir, exist_ok=True)
    write_json(record, {"command": "dynabert", "settings": {**s, "model": os.path.abspath(model_dir),
                                                             "task": task.name}})
    t0, cpu0 = time.perf_counter(), time.process_time()

    teacher_dir = prepare_teacher(out_dir, model_dir, task, s, progress)
    teacher = _load_classifier(teacher_dir)
    tok = teacher.tokenizer
    if tok is None:
        raise ValueError(f"{teacher_dir} has no vocab.txt: the task's text cannot be tokenized")
    train = encode_examples(task.train, tok, s["max_length"])
    dev = encode_examples(task.dev, tok, s["max_length"])

    def dev_batches():
        return example_batches(dev, 128, 0, shuffle=False)

    teacher_dev = evaluate_subnetwork(teacher, dev_batches)
    log(f"teacher ({teacher_dir}): dev accuracy {teacher_dev.get('accuracy', float('nan')):.4f}")
    distill_train = augmented_train(out_dir, train, model_dir, tok, s) if s["augment"] else train

    split = dev if s["importance_split"] == "dev" else train
    imp = load_or_compute_importance(
        out_dir, teacher, example_batches(split, s["batch_size"], 0, shuffle=False), s)
    student = _load_classifier(teacher_dir, seed=s["seed"])
    rewire(student, imp.heads, imp.neurons)

    stage1 = width_subnetworks(s["widths"])
    stages = {"stage1": train_stage(
        "stage1", out_dir, student, SubnetworkDistillation(teacher, stage1, s["width_hidden_weight"]),
        s["width_steps"], distill_train, dev_batches, stage1, s, tok, progress, resume)}
    stage2 = width_depth_subnetworks(s["widths"], s["depths"])
    teacher2 = _load_classifier(teacher_dir)
    teacher2.load_state_dict(student.state_dict())  # the stage-1 model, frozen
    stages["stage2"] = train_stage(
        "stage2", out_dir, student,
        SubnetworkDistillation(teacher2, stage2, s["depth_hidden_weight"], teacher_width=s["stage2_teacher"]),
        s["depth_steps"], distill_train, dev_batches, stage2, s, tok, progress, resume)
    if s["final_steps"]:
        stages["stage3"] = train_stage("stage3", out_dir, student, SubnetworkFinetuning(stage2), s["final_steps"],
                                       train, dev_batches, stage2, s, tok, progress, resume)

    rows = subnetwork_table(student, stage2, lambda m, w, d: evaluate_subnetwork(m, dev_batches, w, d),
                            seq_len=s["max_length"], latency_repeats=s["latency_repeats"])
    write_json(os.path.join(out_dir, "table.json"), rows)
    table = format_table(rows)
    from ..atomic import write_text_atomic

    write_text_atomic(os.path.join(out_dir, "table.md"), table + "\n")
    summary = {"task": task.name, "teacher": teacher_dir, "teacher_dev": teacher_dev, "stages": stages,
               "table": rows, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def _multipliers(values, name) -> list:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    try:
        out = sorted({float(v) for v in values}, reverse=True)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be a comma list of numbers in (0, 1], got {values!r}") from None
    if not out or any(not 0.0 < v <= 1.0 for v in out):
        raise ValueError(f"--{name} must be a comma list of numbers in (0, 1], got {values!r}")
    return out
