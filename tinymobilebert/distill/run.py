"""A distillation run, end to end: ``python -m tinymobilebert distill`` and ``distill.distill(...)``.

The run folder is a pretraining run's (``workflows`` module notes): ``run.json`` (every
setting, the teacher's path among them, a fingerprint of the text, and the SHA-256 of each of
the teacher's files: a resume against a teacher retrained in place is refused), ``distillation.json``
(the full configuration those settings give: the schedule's stages, both models' configs, the
layer mapping, the tensors copied from the teacher, the optimizer), ``log.jsonl`` (every loss
term each step, weighted and unweighted,
next to each layer group's learning rate; see ``steps.py``), ``checkpoints/`` (the student and
its optimizer, exact resume), ``vocab.txt`` and ``model/`` (the student in transformers' layout,
which ``finetune`` and transformers load). Nothing of the teacher is saved.

One optimizer (LAMB as the original used it: no bias correction, weight decay 0.01 and no trust
ratio for norms and biases, global-norm clipping at 1.0, moments gated to 0 where the lr is 0)
runs the whole schedule; ``TransferSchedule`` gives its base lr and per-tensor multipliers, and
its moments are reset where PD starts. Task distillation (``distill_task``) fine-tunes a
classifier from a fine-tuned teacher's logits.
"""

from __future__ import annotations

import os
import time

from ..checkpoint import model_fingerprint, write_json
from ..data import PretrainingData, encode_examples, example_batches
from ..model import MobileBertForPreTraining, MobileBertForSequenceClassification
from ..optim import LAMB
from ..train import Trainer
from ..train.evaluate import evaluate_classification, evaluate_pretraining
from .mapping import distillation_plan
from .schedules import STRATEGIES, LossWeights, TransferSchedule
from .steps import LAYERWISE_LOSSES, DistillationStep, TaskDistillationStep, check_layerwise_losses, check_step_options
from .teacher import copy_from_teacher, load_teacher, resolve_model_dir

# google-research mobilebert/optimization.py: excluded from weight decay and the trust ratio
LAMB_EXCLUDE = ["teacher", "LayerNorm", "layer_norm", "bias", "FakeLayerNorm"]
CONFIG_NAME = "distillation.json"  # the run's full configuration, beside run.json (the settings)
TEACHER_FACT = "teacher_sha256"  # run.json facts: {file: SHA-256} of the teacher's files, checked on resume
STUDENT_FACT = "student_sha256"  # ... of task distillation's starting student

DEFAULTS = dict(strategy="pkt", pd=True, student="mobilebert_small_student", student_config={}, steps_per_layer=60,
                pd_steps=400, lr=1.5e-3, pd_lr=None, pd_warmup=None, batch_size=32, max_length=64, seed=0,
                losses=list(LAYERWISE_LOSSES), mapping="uniform", weights=[100.0, 1.0, 5000.0, 5.0], alpha=0.5,
                temperature=1.0, at_form="original", mv_teacher_layers="same", padding_aware=False, corpus=None,
                dev_fraction=0.05, split_seed=None, eval_every=100, save_every=100, eval_batches=20,
                token_dropping=None, split_layer=None)


def student_config(name, vocab_size: int, overrides: dict | None = None):
    """A student config from a preset name in ``config.PRESETS`` with the teacher's vocabulary
    (``--student-config`` overrides)."""
    from ..workflows import preset_config

    return preset_config(name, vocab_size, overrides, what="--student")


def lamb_for(store, schedule: TransferSchedule, weight_decay=0.01, max_grad_norm=1.0) -> LAMB:
    """LAMB as MobileBERT's distillation used it, driven by ``schedule`` (see the module notes)."""
    return LAMB(store, lr=1.0, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay, no_decay=LAMB_EXCLUDE,
                exclude_from_layer_adaptation=LAMB_EXCLUDE, bias_correction=False, schedule=schedule.base_lr,
                lr_multipliers=schedule.lr_multiplier, freeze_moments_when_lr_zero=True, max_grad_norm=max_grad_norm)


def check_pairing(student_cfg, teacher_cfg, s: dict, what="--teacher"):
    """The DistillationPlan of these settings, or a one-line error naming both models' sizes."""
    losses = tuple(s["losses"]) + (("mlm",) if s["pd"] or s["strategy"] in ("akt", "pd") else ())
    try:
        plan = distillation_plan(student_cfg, teacher_cfg, s["mapping"], losses)
    except ValueError as e:
        note = ""
        if student_cfg.hidden_size != teacher_cfg.hidden_size:
            note = (" (distill pairs models MobileBERT's way, with the same hidden_size and num_attention_heads, "
                    "and copies the embeddings; distill.HiddenProjection serves narrower students from Python)")
        raise ValueError(f"{what}: {e}{note}") from None
    check_layerwise_losses(s["strategy"], plan.losses, "--losses", "--strategy pd")
    if s["strategy"] == "pkt":
        unmapped = [i for i, j in enumerate(plan.mapping.teacher_layers) if j is None]
        if unmapped:
            raise ValueError(f"--mapping: PKT trains one student layer per stage, so every layer needs a teacher "
                             f"layer; layers {unmapped} have none")
    return plan


def build_schedule(s: dict, num_layers: int) -> TransferSchedule:
    strategy = s["strategy"]
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not s["pd"] and strategy in ("akt", "pd"):
        raise ValueError(f"--no-pd: {strategy.upper()} is pre-training distillation itself; use it with PKT or JKT")
    pd_steps = s["pd_steps"] if s["pd"] or strategy in ("akt", "pd") else 0
    warmup = s["pd_warmup"] if s["pd_warmup"] is not None else round(0.1 * pd_steps)
    return TransferSchedule(strategy, num_layers, s["steps_per_layer"] if strategy in ("pkt", "jkt") else 0, pd_steps,
                            lr=s["lr"], pd_lr=s["pd_lr"], pd_warmup=warmup)


def distill(out_dir, teacher=None, *, docs=None, resume=False, overwrite=False, progress=None, progress_every=None,
            **settings) -> dict:
    """Distil a student from ``teacher`` (a run folder or model directory); returns a summary.

    Settings (defaults in ``DEFAULTS``; None or left out: "not given", so a resumed run keeps its
    recorded value): ``strategy`` ("pkt", "jkt", "akt", "pd"), ``pd`` (run PD after PKT/JKT),
    ``student`` (a preset name) and ``student_config`` (field overrides), ``steps_per_layer``
    (PKT's S; JKT runs L S steps), ``pd_steps``, ``lr`` (layer-wise stage), ``pd_lr`` /
    ``pd_warmup`` (default: ``lr`` / 10% of PD), ``losses`` (subset of fmt, at, mv), ``mapping``
    ("uniform", "last" or a list), ``weights`` (FMT, AT, beta, gamma before division by L),
    ``alpha`` (PD's ground-truth share), ``temperature``, ``at_form``, ``mv_teacher_layers``
    ("same" or "all": the released code's statistics over every teacher layer), ``padding_aware``,
    ``batch_size``, ``max_length``, ``seed``, ``corpus`` / ``docs`` (the text; the built-in corpus
    by default), ``dev_fraction`` and ``split_seed`` (which documents are held out: by default
    ``seed``'s split, as ``pretrain`` draws it; keep the teacher's, so the student is never
    evaluated on text the teacher learned), ``eval_every``, ``save_every``, ``eval_batches``.

    ``token_dropping`` (a keep ratio in (0, 1], e.g. 0.5) and ``split_layer`` (default L/2 - 1):
    token dropping in the student's PD steps (``steps.py`` module notes; not with AKT, nor with
    ``pd=False``). Checked as ``pretrain``'s; the importance table is saved in every checkpoint,
    held-out metrics are logged without and with dropping (``dropping_mlm_loss``, ...), and the
    final table goes to ``{out}/token_importance.safetensors`` (the summary's
    ``"token_importance"``). The saved student is a plain model.

    The folder is claimed as ``pretrain``'s (``train/run_folder.py``): ``resume`` continues a run
    exactly, ``overwrite`` replaces one; anything else in a folder holding a run is an error.
    """
    from ..train.run_folder import RunFolder
    from ..train.settings import check_max_length, check_training_settings, corpus_fingerprint, flag
    from ..workflows import (BUILTIN, IN_PYTHON, _jsonable, _path_setting, _token_dropping, evaluate_with_dropping,
                             load_documents, pretraining_dev_batches, pretraining_split, save_token_importance)

    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"distill: unknown settings {unknown}; known: {sorted(DEFAULTS)}")
    t0 = time.perf_counter()
    given = {**settings, "teacher": None if teacher is None else os.path.abspath(resolve_model_dir(teacher)),
             "corpus": IN_PYTHON if docs is not None else _path_setting(settings.get("corpus"))}
    run = RunFolder(out_dir, "distill", given, {**DEFAULTS, "teacher": None, "corpus": BUILTIN}, resume=resume,
                    overwrite=overwrite, safe_to_change=("eval_every", "save_every"), entries=(CONFIG_NAME,))
    s = run.settings
    if s["teacher"] is None:
        raise ValueError("--teacher is required: a pretrained teacher's run folder or model directory")
    teacher_files = model_fingerprint(s["teacher"])  # a resumed run must read the teacher it started with
    run.check_same_model(TEACHER_FACT, "--teacher", s["teacher"], teacher_files)
    check_training_settings({k: s[k] for k in ("batch_size", "eval_every", "save_every", "eval_batches", "seed",
                                               "max_length", "dev_fraction")})
    check_step_options(s["alpha"], s["temperature"], s["at_form"], s["mv_teacher_layers"], s["weights"],
                       fn="distill", name=flag)
    teacher_model = load_teacher(s["teacher"])
    tok = teacher_model.tokenizer
    cfg = student_config(s["student"], len(tok), s["student_config"])
    plan = check_pairing(cfg, teacher_model.config, s)
    schedule = build_schedule(s, cfg.num_hidden_layers)
    dropping = _token_dropping(s, cfg, tok)  # None without --token-dropping
    if dropping is not None and s["strategy"] == "akt":
        raise ValueError("--token-dropping does not combine with --strategy akt: AKT's PD carries the layer-wise "
                         "terms, which compare full per-layer maps (use pkt, jkt or pd)")
    if dropping is not None and not s["pd"] and s["strategy"] != "pd":
        raise ValueError("--token-dropping drops tokens in PD only, and --no-pd leaves no PD stage")
    student = MobileBertForPreTraining(cfg, seed=s["seed"])
    copied = copy_from_teacher(student, teacher_model) if schedule.copies_from_teacher else []
    if docs is None:
        if s["corpus"] == IN_PYTHON:
            raise ValueError(f"the run in {out_dir} was given its documents in Python: pass the same docs to resume it")
        docs = load_documents(s["corpus"])
    split_seed = s["seed"] if s["split_seed"] is None else s["split_seed"]
    train_docs, dev_docs = pretraining_split(docs, s["dev_fraction"], split_seed, nsp=True)
    train_data = PretrainingData(train_docs, tok, max_length=s["max_length"], seed=s["seed"], nsp=True)
    # the held-out masking of the teacher's pretrain run with the same split (its seed + 1)
    dev_data = PretrainingData(dev_docs, tok, max_length=s["max_length"], seed=split_seed + 1, nsp=True) \
        if dev_docs else None
    if train_data.num_batches(s["batch_size"]) < 1:
        raise ValueError(f"the training split gives {train_data.num_examples} examples, fewer than one batch "
                         f"(--batch-size {s['batch_size']})")
    for model_cfg in (cfg, teacher_model.config):
        check_max_length(s["max_length"], model_cfg)
    run.start(facts={"corpus_sha256": corpus_fingerprint(docs), "documents": len(docs), TEACHER_FACT: teacher_files})
    write_json(os.path.join(out_dir, CONFIG_NAME), {
        "schedule": schedule.describe(), "student_config": cfg.to_dict(), "teacher_config": teacher_model.config.to_dict(),
        "copied_from_teacher": copied, "mapping": list(plan.mapping.teacher_layers), "losses": list(plan.losses),
        "optimizer": {"name": "LAMB", "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01,
                      "excluded": LAMB_EXCLUDE, "bias_correction": False, "max_grad_norm": 1.0,
                      "freeze_moments_when_lr_zero": True}})
    tok.save_pretrained(out_dir)
    opt = lamb_for(student.store, schedule)
    step_fn = DistillationStep(teacher_model, schedule, plan, opt, LossWeights(*s["weights"]), alpha=s["alpha"],
                               temperature=s["temperature"], at_form=s["at_form"],
                               mv_teacher_layers=s["mv_teacher_layers"], padding_aware=s["padding_aware"],
                               token_dropping=dropping)
    B = s["batch_size"]

    def batches(epoch, start):
        return train_data.batches(B, epoch, start_batch=start)

    dev_batches = pretraining_dev_batches(dev_data, B, s["eval_batches"]) if dev_data is not None else None
    teacher_dev = evaluate_pretraining(teacher_model, dev_batches) if dev_batches is not None else None
    evaluate = (lambda m: evaluate_with_dropping(m, dev_batches, dropping)) if dev_batches is not None else None
    trainer = Trainer(student, opt, batches, out_dir, max_steps=schedule.total_steps,
                      evaluate=evaluate, eval_every=s["eval_every"],
                      save_every=s["save_every"], tokenizer=tok, progress=progress, progress_every=progress_every,
                      description=schedule.stage_name, step_fn=step_fn,
                      extra_state={"token_importance": dropping} if dropping is not None else None)
    resumed = trainer.resume() if run.resuming else False
    result = trainer.train()
    student.save_pretrained(os.path.join(out_dir, "model"), tokenizer=tok)
    importance = save_token_importance(dropping, out_dir) if dropping is not None else None
    summary = {"out_dir": os.fspath(out_dir), "strategy": s["strategy"], "stages": [st.name for st in schedule.stages],
               "parameters": student.num_parameters(), "teacher_parameters": teacher_model.num_parameters(),
               "teacher_dev": teacher_dev, "resumed": resumed, "settings": dict(s),
               "total_seconds": time.perf_counter() - t0, **result}
    if importance is not None:
        summary["token_importance"] = "token_importance.safetensors"  # summary.json names the file
    write_json(os.path.join(out_dir, "summary.json"), _jsonable(summary))
    if importance is not None:
        summary["token_importance"] = importance  # the returned summary holds the table, as pretrain's
    return summary


TASK_DEFAULTS = dict(task="word_order", corpus="builtin", teacher=None, student=None, alpha=0.5, temperature=1.0,
                     steps=300, batch_size=32, max_length=64, lr=1e-3, warmup=None, seed=0, dev_fraction=None,
                     eval_every=100, save_every=100)


def distill_task(out_dir, task=None, teacher=None, student=None, *, resume=False, overwrite=False, progress=None,
                 progress_every=None, **settings) -> dict:
    """Task distillation: fine-tune ``student`` (a pretrained model directory, e.g. a distilled
    student's run folder) on ``task`` from ``teacher`` (a fine-tuned classifier) with
    ``TaskDistillationStep``: soft cross-entropy on the teacher's logits, plus the gold labels
    with weight ``alpha`` (0: pure distillation). ``task``: a name, a GLUE-style path, or a Task.
    Settings and the run folder as ``workflows.finetune`` (``TASK_DEFAULTS``; warm-up 10%)."""
    import warnings

    from ..train.run_folder import RunFolder
    from ..train.settings import (check_max_length, check_one_batch, check_training_settings, resolve_warmup,
                                  task_fingerprint)
    from ..workflows import IN_PYTHON, TASKS, _jsonable, _optimizer, _path_setting, build_run_task

    unknown = sorted(set(settings) - set(TASK_DEFAULTS))
    if unknown:
        raise TypeError(f"distill_task: unknown settings {unknown}; known: {sorted(TASK_DEFAULTS)}")
    task_obj = task if task is not None and not isinstance(task, (str, os.PathLike)) else None
    spec = IN_PYTHON if task_obj is not None else (None if task is None else (
        os.fspath(task) if os.fspath(task) in TASKS else _path_setting(task)))
    given = {**settings, "task": spec, "corpus": _path_setting(settings.get("corpus")),
             "teacher": None if teacher is None else os.path.abspath(resolve_model_dir(teacher, "--teacher")),
             "student": None if student is None else os.path.abspath(resolve_model_dir(student, "--student"))}
    run = RunFolder(out_dir, "distill_task", given, TASK_DEFAULTS, resume=resume, overwrite=overwrite,
                    safe_to_change=("eval_every", "save_every"))
    s = run.settings
    for name in ("teacher", "student"):
        if s[name] is None:
            raise ValueError(f"--{name} is required for task distillation")
    teacher_files, student_files = model_fingerprint(s["teacher"]), model_fingerprint(s["student"])
    run.check_same_model(TEACHER_FACT, "--teacher", s["teacher"], teacher_files)
    run.check_same_model(STUDENT_FACT, "--student", s["student"], student_files, role="student")
    check_training_settings(s)
    s["warmup"] = resolve_warmup(s["warmup"], s["steps"], 0.1)
    if s["task"] == IN_PYTHON and task_obj is None:
        raise ValueError(f"the run in {out_dir} was given its task as a Task object: pass the same Task to resume it")
    task = task_obj if task_obj is not None else build_run_task(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = MobileBertForSequenceClassification.from_pretrained(s["teacher"])
        if any(n.startswith("classifier.") for n in t.load_report.initialized):
            raise ValueError(f"--teacher {s['teacher']}: it has no classifier; task distillation needs a fine-tuned "
                             "teacher (finetune --model ...)")
        if t.config.num_labels != task.num_labels:
            raise ValueError(f"--teacher {s['teacher']}: it has {t.config.num_labels} labels, task {task.name} has "
                             f"{task.num_labels}")
        st = MobileBertForSequenceClassification.from_pretrained(s["student"], num_labels=task.num_labels,
                                                                 classifier_pooling=t.config.classifier_pooling,
                                                                 seed=s["seed"])
    step_fn = TaskDistillationStep(t, s["alpha"], s["temperature"])
    check_one_batch(task, s["batch_size"])
    for model_cfg in (st.config, t.config):
        check_max_length(s["max_length"], model_cfg)
    tok = st.tokenizer or t.tokenizer
    if tok is None or (t.tokenizer is not None and st.tokenizer is not None and t.tokenizer.vocab != st.tokenizer.vocab):
        raise ValueError("task distillation needs one vocabulary: the teacher's and the student's vocab.txt differ "
                         "(or neither has one)")
    train = encode_examples(task.train, tok, s["max_length"])
    dev = encode_examples(task.dev, tok, s["max_length"])
    B = s["batch_size"]
    opt = _optimizer(st.store, "adamw", s["lr"], s["steps"], s["warmup"])
    run.start(facts={"task_sha256": task_fingerprint(task), TEACHER_FACT: teacher_files, STUDENT_FACT: student_files})
    tok.save_pretrained(out_dir)

    def dev_batches():
        return example_batches(dev, 128, 0, shuffle=False)

    trainer = Trainer(st, opt, lambda e, k: example_batches(train, B, e, seed=s["seed"], start_batch=k, drop_last=True),
                      out_dir, max_steps=s["steps"], evaluate=lambda m: evaluate_classification(m, dev_batches),
                      eval_every=s["eval_every"], save_every=s["save_every"], tokenizer=tok, progress=progress,
                      progress_every=progress_every, description=f"distil {task.name}",
                      step_fn=step_fn)
    resumed = trainer.resume() if run.resuming else False
    result = trainer.train()
    st.save_pretrained(os.path.join(out_dir, "model"), tokenizer=tok)
    summary = {"task": task.name, "dev_accuracy": result["last_dev"]["accuracy"],
               "teacher_dev_accuracy": evaluate_classification(t, dev_batches)["accuracy"],
               "parameters": st.num_parameters(), "resumed": resumed, "settings": dict(s), **result}
    write_json(os.path.join(out_dir, "summary.json"), _jsonable(summary))
    return summary

