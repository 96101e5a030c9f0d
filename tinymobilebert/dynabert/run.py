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
1.0) and one AdamW step (weight decay 0, as DynaBERT). Every ``eval_every`` steps each stage
logs every sub-network's dev accuracy; the original also keeps the checkpoint whose summed dev
metrics are best, while here a stage's model is its last step (dev accuracy picks nothing).

Resume: a stage with a summary.json is done and is read back; an unfinished stage continues from
its latest checkpoint (``Trainer.resume``: weights, optimizer, dropout generator, position in the
data), so the losses it logs are those of an uninterrupted run. The importance scores and the
augmented rows are read back from their files, never recomputed. run.json records the SHA-256
of each of ``--model``'s files (the teacher, or what it is fine-tuned into), and a resume
against changed files is refused.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from ..checkpoint import (model_fingerprint, read_config, read_json_file, read_safetensors, read_safetensors_dir,
                          write_json, write_safetensors)
from ..data import derived_rng, encode_examples, example_batches
from ..model import MobileBertForMaskedLM, MobileBertForSequenceClassification
from ..train import Trainer
from .augment import augment_examples
from .importance import Importance, compute_importance, plot_head_importance
from .rewire import rewire
from .step import (SubnetworkDistillation, SubnetworkFinetuning, TEACHER_WIDTHS, width_depth_subnetworks,
                   width_subnetworks)
from .table import format_table, subnetwork_table

AUGMENT = 7  # derived_rng stream tag of the augmentation draws
MODEL_FACT = "model_sha256"  # run.json facts: {file: SHA-256} of --model's files, checked on resume

DEFAULTS = dict(
    model=None, task="word_order", corpus="builtin", dev_fraction=None,
    widths=[1.0, 0.75, 0.5, 0.25], depths=[1.0, 0.75, 0.5],
    teacher_steps=300, teacher_lr=1e-3,  # fine-tuning a pretrained --model first (as `finetune`)
    width_steps=200, depth_steps=300, final_steps=0,
    batch_size=32, max_length=64, lr=5e-4, warmup=0,
    width_hidden_weight=0.1, depth_hidden_weight=1.0, stage2_teacher="full",
    importance_split="dev", importance_accumulate_gradients=False,
    augment=0, augment_mlm=None,
    eval_every=100, save_every=100, seed=0, latency_repeats=5,
)
SAFE_ON_RESUME = {"eval_every": "", "save_every": "", "latency_repeats": ""}
ENTRIES = ("teacher", "augmented.safetensors", "importance.safetensors", "head_importance.png", "stage1", "stage2",
           "stage3", "table.json", "table.md")


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
    if not os.path.isfile(os.path.join(folder, "summary.json")):  # new, or killed while fine-tuning: continue it
        finetune(folder, task, model_dir=model_dir, steps=s["teacher_steps"], batch_size=s["batch_size"],
                 max_length=s["max_length"], lr=s["teacher_lr"], seed=s["seed"], progress=progress, baseline=False,
                 resume=os.path.isdir(folder))
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
    """The scores of ``importance.safetensors``, computed (on the teacher) and written the first time."""
    path = os.path.join(out_dir, "importance.safetensors")
    if os.path.isfile(path):
        arrays = read_safetensors(path)
        return Importance(arrays["heads"], arrays["neurons"])
    imp = compute_importance(teacher, batches, accumulate_gradients=s["importance_accumulate_gradients"])
    write_safetensors(path, imp.to_arrays())
    try:
        plot_head_importance(imp.heads, os.path.join(out_dir, "head_importance.png"))
    except ImportError:
        pass  # matplotlib is optional
    return imp


def augmented_train(out_dir, train, model_dir, tokenizer, s) -> dict:
    """The training rows with ``s["augment"]`` MLM-replaced copies each (made once, then read back)."""
    path = os.path.join(out_dir, "augmented.safetensors")
    if os.path.isfile(path):
        return read_safetensors(path)
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
                progress_every, resume) -> dict:
    """One stage as a Trainer run in ``{out}/{name}``; a finished stage is read back instead."""
    folder = os.path.join(out_dir, name)
    done = os.path.join(folder, "summary.json")
    if os.path.isfile(done):  # as the uninterrupted run left it: the weights and the dropout stream
        summary = read_json_file(done)
        student.load_state_dict(read_safetensors_dir(os.path.join(folder, "model")))
        if "dropout_rng" in summary:  # (absent from runs of older versions)
            student.dropout_rng.bit_generator.state = summary["dropout_rng"]
        return summary
    from ..workflows import _optimizer

    opt = _optimizer(student.store, "adamw", s["lr"], steps, s["warmup"], weight_decay=0.0)  # as DynaBERT

    def batches(epoch, start):
        return example_batches(train, s["batch_size"], epoch, seed=s["seed"], start_batch=start, drop_last=True)

    trainer = Trainer(student, opt, batches, folder, max_steps=steps, step_fn=step_fn,
                      evaluate=lambda m: evaluate_all(m, dev_batches, subnetworks), eval_every=s["eval_every"],
                      save_every=s["save_every"], tokenizer=tokenizer, progress=progress, progress_every=progress_every,
                      description=f"dynabert {name}")
    if resume:
        trainer.resume()
    cpu0 = time.process_time()
    result = trainer.train()
    student.save_pretrained(os.path.join(folder, "model"), tokenizer=tokenizer)
    summary = {"stage": name, "steps": result["steps"], "seconds": result["seconds"],
               "cpu_seconds": time.process_time() - cpu0,
               "subnetworks": [list(x) for x in subnetworks], "last_dev": result["last_dev"],
               "dropout_rng": student.dropout_rng.bit_generator.state}
    write_json(done, summary)
    return summary


# ------------------------------------------------------------------------------------ the run
def run_dynabert(out_dir, model_dir=None, task=None, *, corpus=None, resume=False, overwrite=False, progress=None,
                 progress_every=None, log=None, **settings) -> dict:
    """Run DynaBERT end to end (see the module notes). Returns the summary (also in summary.json).

    ``model_dir``: a fine-tuned classifier or a pretrained directory. ``task``: a task name or
    GLUE-style path (built from ``corpus`` and the seed), or a ``data.Task``. ``settings``
    override ``DEFAULTS``; None means "not given". The folder is claimed as every run's is
    (``train.run_folder``): a folder holding a run needs ``resume`` (continue it with its
    recorded settings) or ``overwrite`` (delete it first).
    """
    from ..atomic import write_text_atomic
    from ..train.progress import notify
    from ..train.run_folder import RunFolder
    from ..train.settings import check_max_length, check_one_batch, task_fingerprint
    from ..workflows import IN_PYTHON, TASKS, _path_setting, build_run_task

    log = notify if log is None else log
    task_obj = task if task is not None and not isinstance(task, (str, os.PathLike)) else None
    if task is None or task_obj is not None:
        task_spec = None if task is None else IN_PYTHON
    else:
        task_spec = os.fspath(task) if os.fspath(task) in TASKS else _path_setting(task)
    given = dict(settings, model=_path_setting(model_dir), task=task_spec, corpus=_path_setting(corpus))
    given["augment_mlm"] = _path_setting(given.get("augment_mlm"))
    for key in ("widths", "depths"):
        if given.get(key) is not None:
            given[key] = _multipliers(given[key], key)
    run = RunFolder(out_dir, "dynabert", given, DEFAULTS, resume=resume, overwrite=overwrite,
                    safe_to_change=SAFE_ON_RESUME, entries=ENTRIES)
    s = run.settings
    check_settings(s)
    if s["model"] is None:
        raise ValueError("dynabert needs --model: a fine-tuned classifier or a pretrained directory")
    if s["task"] == IN_PYTHON and task_obj is None:
        raise ValueError(f"the run in {out_dir} was given its task as a Task object: pass the same Task to resume it")
    task = task_obj if task_obj is not None else build_run_task(s)
    check_max_length(s["max_length"], read_config(s["model"]))
    check_one_batch(task, s["batch_size"])
    model_files = model_fingerprint(s["model"])  # a resumed run must read the model it started from
    run.check_same_model(MODEL_FACT, "--model", s["model"], model_files, role="model")
    run.start(facts={"task_sha256": task_fingerprint(task), MODEL_FACT: model_files})
    t0, cpu0 = time.perf_counter(), time.process_time()

    teacher_dir = prepare_teacher(out_dir, s["model"], task, s, progress)
    teacher = _load_classifier(teacher_dir)
    tok = teacher.tokenizer
    if tok is None:
        raise ValueError(f"{teacher_dir} has no vocab.txt: the task's text cannot be tokenized")
    train = encode_examples(task.train, tok, s["max_length"])
    dev = encode_examples(task.dev, tok, s["max_length"])

    def dev_batches():
        return example_batches(dev, 128, 0, shuffle=False)

    teacher_dev = evaluate_subnetwork(teacher, dev_batches)
    log(f"dynabert: teacher {teacher_dir}: dev accuracy {teacher_dev.get('accuracy', float('nan')):.4f}")
    distill_train = augmented_train(out_dir, train, s["model"], tok, s) if s["augment"] else train

    split = dev if s["importance_split"] == "dev" else train
    imp = load_or_compute_importance(out_dir, teacher, example_batches(split, s["batch_size"], 0, shuffle=False), s)
    student = _load_classifier(teacher_dir, seed=s["seed"])
    rewire(student, imp.heads, imp.neurons)

    def stage(name, step_fn, steps, data, subnetworks):
        return train_stage(name, out_dir, student, step_fn, steps, data, dev_batches, subnetworks, s, tok, progress,
                           progress_every, run.resuming)

    stage1 = width_subnetworks(s["widths"])
    stages = {"stage1": stage("stage1", SubnetworkDistillation(teacher, stage1, s["width_hidden_weight"]),
                              s["width_steps"], distill_train, stage1)}
    stage2 = width_depth_subnetworks(s["widths"], s["depths"])
    teacher2 = _load_classifier(teacher_dir)
    teacher2.load_state_dict(student.state_dict())  # the stage-1 model, frozen
    stages["stage2"] = stage("stage2", SubnetworkDistillation(teacher2, stage2, s["depth_hidden_weight"],
                                                              teacher_width=s["stage2_teacher"]),
                             s["depth_steps"], distill_train, stage2)
    if s["final_steps"]:
        stages["stage3"] = stage("stage3", SubnetworkFinetuning(stage2), s["final_steps"], train, stage2)

    rows = subnetwork_table(student, stage2, lambda m, w, d: evaluate_subnetwork(m, dev_batches, w, d),
                            seq_len=s["max_length"], latency_repeats=s["latency_repeats"])
    write_json(os.path.join(out_dir, "table.json"), rows)
    write_text_atomic(os.path.join(out_dir, "table.md"), format_table(rows) + "\n")
    summary = {"task": task.name, "teacher": teacher_dir, "teacher_dev": teacher_dev, "stages": stages,
               "table": rows, "settings": dict(s), "seconds": time.perf_counter() - t0,
               "cpu_seconds": time.process_time() - cpu0}
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def check_settings(s: dict) -> None:
    """Errors that name the flag, before anything is written."""
    from ..train.settings import check_lr, check_training_settings, check_whole, flag

    check_training_settings(s)
    check_lr(s, "teacher_lr")
    for name in ("teacher_steps", "width_steps", "depth_steps"):
        check_whole(s, name, 1)
    for name in ("final_steps", "warmup", "augment", "latency_repeats"):
        check_whole(s, name, 0)
    stages = {"width_steps": s["width_steps"], "depth_steps": s["depth_steps"]}
    if s["final_steps"]:
        stages["final_steps"] = s["final_steps"]
    if s["warmup"] > min(stages.values()):
        raise ValueError(f"--warmup {s['warmup']} is longer than a stage ("
                         + ", ".join(f"{flag(k)} {v}" for k, v in stages.items()) + ")")
    s["widths"], s["depths"] = _multipliers(s["widths"], "widths"), _multipliers(s["depths"], "depths")
    if s["stage2_teacher"] not in TEACHER_WIDTHS:
        raise ValueError(f"--stage2-teacher must be one of {TEACHER_WIDTHS}, got {s['stage2_teacher']!r}")
    if s["importance_split"] not in ("dev", "train"):
        raise ValueError(f"--importance-split must be dev or train, got {s['importance_split']!r}")
    for name in ("width_hidden_weight", "depth_hidden_weight"):
        if not isinstance(s[name], (int, float)) or not s[name] >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {s[name]!r}")


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
