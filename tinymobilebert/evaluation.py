"""Evaluating a saved model the way its run did: held-out MLM metrics, or a classifier's dev accuracy.

``evaluate(model_dir)`` finds the run that wrote the model (``RUN/model`` or a checkpoint
``RUN/checkpoints/step-N``) and rebuilds the run's held-out data from its run.json: the same
corpus (less the same excluded documents), split, seed, masking, maximum length, batch size and
number of batches; or, for a classifier, the same task, dev split and evaluation batch size.
With the same batches, and the thread count the run's last evaluation logged (BLAS sums in
another order on another count), the figures are those of the run's log, exactly. The batch size matters:
rows are padded to the longest row of their batch, and with transformers' trigram input the
last real token reads its [PAD] neighbour, so another batch size gives (slightly) other figures.

The runs whose record is read: ``pretrain`` and ``distill`` (held-out MLM), and ``finetune``,
task distillation (``distill --task``, recorded as ``distill_task``) and ``dynabert`` (a
classifier's task, corpus, dev fraction, seed and maximum length; ``finetune`` records its
evaluation batch size, the other two evaluate at 128 rows, the default). A run folder may be given for its model: ``RUN/model``, or for a ``dynabert`` run its
last stage's (``RUN/stage2/model``, ``stage3`` with ``--final-steps``). A DynaBERT model is the
supernet: it is evaluated at full width and depth, and the report and the result say so (each
sub-network's dev accuracy is in the run's table.md); ``RUN/stageN/model`` and its checkpoints
``RUN/stageN/checkpoints/step-N`` are found to belong to the run too.

Arguments given override the record, and the report says so; a model that no run wrote is
evaluated with the defaults (built-in corpus, batch size 32, max length 64, seed 0), said too.
If the corpus (or task) text has changed since the run, a warning says the figures cannot match.
"""

from __future__ import annotations

import os
import warnings

from .checkpoint import CONFIG_NAME, read_config
from .data import PretrainingData, encode_examples, example_batches
from .model import MobileBertForPreTraining, MobileBertForSequenceClassification
from .threads import restored, set_threads
from .train.evaluate import evaluate_classification, evaluate_pretraining
from .train.run_folder import find_run_of, read_run_record
from .train.settings import corpus_fingerprint, task_fingerprint
from .train.trainer import LOG_NAME, read_log
from .workflows import (BUILTIN, IN_PYTHON, TASKS, _path_setting, build_run_task, load_documents,
                        pretraining_dev_batches, pretraining_split)

MLM_DEFAULTS = dict(corpus=BUILTIN, exclude_documents=[], max_length=64, batch_size=32, seed=0, dev_fraction=0.05,
                    nsp=True, eval_batches=None)
CLASSIFIER_DEFAULTS = dict(task=None, corpus=BUILTIN, max_length=64, eval_batch_size=128, seed=0, dev_fraction=None)
MLM_RUNS = ("pretrain", "distill", None)  # None: a record of an older version (the settings alone)
CLASSIFIER_RUNS = ("finetune", "distill_task", "dynabert")  # the last two evaluate at eval_batch_size's default
DYNABERT_STAGES = ("stage1", "stage2", "stage3")
SUPERNET_NOTE = "the DynaBERT supernet at full width and depth"


def locate(path) -> tuple[str, str | None, dict | None, str | None]:
    """(model directory, run folder, its record, folder of the log the model comes from) of a
    model directory or a run folder (see the module notes); run and record None for a model no
    run wrote."""
    path = os.fspath(path)
    record = read_run_record(path) if not os.path.isfile(os.path.join(path, CONFIG_NAME)) else None
    if record is not None:  # a run folder: its model
        stage = ("stage3" if record["settings"].get("final_steps") else "stage2") \
            if record["command"] == "dynabert" else ""
        model_dir = os.path.join(path, stage, "model")
        if not os.path.isfile(os.path.join(model_dir, CONFIG_NAME)):
            raise FileNotFoundError(f"{path} is a {record['command'] or 'training'} run folder without {model_dir} "
                                    "(not finished?): give a model directory or a checkpoint")
        return model_dir, path, record, os.path.join(path, stage)
    here = os.path.abspath(path)  # a dynabert stage's first (its log is the stage's): RUN/stageN/model, .../step-N
    for stage_dir in (os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        run_dir = os.path.dirname(stage_dir)
        record = read_run_record(run_dir) if os.path.basename(stage_dir) in DYNABERT_STAGES else None
        if record is not None and record["command"] == "dynabert":
            return path, run_dir, record, stage_dir
    run_dir, record = find_run_of(path)
    if run_dir is not None:
        return path, run_dir, record, run_dir
    return path, None, None, None


def _settings(defaults: dict, recorded: dict, given: dict) -> tuple[dict, dict]:
    """(settings to use, {name: (recorded, given)} where a given one differs from the record)."""
    base = {**defaults, **{k: recorded[k] for k in defaults if k in recorded}}
    given = {k: v for k, v in given.items() if v is not None}
    differ = {k: (base[k], v) for k, v in given.items() if base[k] != v}
    return {**base, **given}, differ


def _describe(what: str, used: dict, differ: dict, run_dir) -> str:
    source = f"settings of the run in {run_dir} (run.json)" if run_dir else "defaults (no run.json beside the model)"
    shown = ", ".join(f"{k}={v!r}" for k, v in used.items() if k != "exclude_documents")
    if used.get("exclude_documents"):
        shown += f", {len(used['exclude_documents'])} documents excluded"
    text = f"evaluate: {what} with {source}: {shown}"
    if differ and run_dir:
        text += "; given, unlike the run: " + ", ".join(f"{k} {new!r} (run: {old!r})" for k, (old, new) in differ.items())
    return text


def _warn_if_changed(kind: str, recorded_facts: dict, key: str, now: str) -> None:
    if key in recorded_facts and recorded_facts[key] != now:
        warnings.warn(f"the {kind} has changed since the run (fingerprint {now}, recorded {recorded_facts[key]}): "
                      "the figures cannot match the run's log", UserWarning, stacklevel=3)


def evaluate(model_dir, task=None, corpus=None, max_length=None, batch_size=None, seed=None, dev_fraction=None,
             report=None) -> dict:
    """Held-out MLM metrics of a pretraining model, or a classifier's dev accuracy (see the module notes).

    Parameters
    ----------
    model_dir : str
        A model directory (``RUN/model``, a checkpoint, or any transformers directory), or a run
        folder (its model; a dynabert run's last stage's).
    task : str or None
        A task name or GLUE-style path: evaluate a classifier on it (default: its run's task).
    corpus, max_length, batch_size, seed, dev_fraction : override the run's settings.
    report : callable str -> None, or None
        Receives one line saying which data and settings were used.

    Returns
    -------
    dict
        The metrics, ``"used"`` (the settings used), ``"run"`` (the run folder, or None), and for
        a DynaBERT model ``"subnetwork"`` ({"width_mult": 1.0, "depth_mult": 1.0}: the full one).
    """
    model_dir, run_dir, record, log_dir = locate(model_dir)
    threads = _logged_threads(log_dir)
    if threads is None:
        return _evaluate(model_dir, run_dir, record, task, corpus, max_length, batch_size, seed, dev_fraction, report)
    if report:  # BLAS sums in another order on another thread count: the run's count repeats its figures
        report = (lambda line, say=report: say(f"{line}; threads {threads}, as the run's last evaluation"))
    with restored():
        set_threads(threads)
        return _evaluate(model_dir, run_dir, record, task, corpus, max_length, batch_size, seed, dev_fraction, report)


def _logged_threads(log_dir):
    """The thread count of the run's last held-out evaluation (its log's last dev record), or None."""
    if log_dir is None or not os.path.isfile(os.path.join(log_dir, LOG_NAME)):
        return None
    dev = [r for r in read_log(log_dir) if r.get("split") == "dev"]
    return dev[-1].get("threads") if dev else None


def _evaluate(model_dir, run_dir, record, task, corpus, max_length, batch_size, seed, dev_fraction, report) -> dict:
    arch = read_config(model_dir).extra.get("architectures", [""])[0]
    command = record["command"] if record else None
    if task is not None or arch.endswith("ForSequenceClassification"):
        recorded = record["settings"] if command in CLASSIFIER_RUNS else {}
        run_dir = run_dir if command in CLASSIFIER_RUNS else None
        if command == "dynabert" and report is not None:
            table = os.path.join(run_dir, "table.md")
            report = (lambda line, say=report: say(f"{line}; the model is {SUPERNET_NOTE} (every sub-network's dev "
                                                   f"accuracy: {table})"))
        result = _evaluate_classifier(model_dir, run_dir, recorded, record["facts"] if run_dir else {}, report,
                                      dict(task=_task_setting(task), corpus=_path_setting(corpus),
                                           max_length=max_length, eval_batch_size=batch_size, seed=seed,
                                           dev_fraction=dev_fraction))
        if command == "dynabert":
            result["subnetwork"] = {"width_mult": 1.0, "depth_mult": 1.0}
        return result
    if not arch.endswith("ForPreTraining"):
        raise ValueError(f"{model_dir} holds a {arch or 'model'}; give --task to evaluate a classifier")
    recorded = record["settings"] if command in MLM_RUNS and record else {}
    if command == "distill" and recorded.get("split_seed") is not None:  # a student held out its teacher's split
        recorded = {**recorded, "seed": recorded["split_seed"]}
    run_dir = run_dir if recorded else None
    return _evaluate_mlm(model_dir, run_dir, recorded, record["facts"] if run_dir else {}, report,
                         dict(corpus=_path_setting(corpus), max_length=max_length, batch_size=batch_size, seed=seed,
                              dev_fraction=dev_fraction))


def _task_setting(task):
    if task is None:
        return None
    return os.fspath(task) if os.fspath(task) in TASKS else _path_setting(task)


def _evaluate_mlm(model_dir, run_dir, recorded, facts, report, given) -> dict:
    s, differ = _settings(MLM_DEFAULTS, recorded, given)
    if s["corpus"] == IN_PYTHON:
        raise ValueError(f"the run in {run_dir} was given its documents in Python, so they cannot be rebuilt: "
                         "give --corpus")
    model = MobileBertForPreTraining.from_pretrained(model_dir)
    if model.tokenizer is None:
        raise ValueError(f"{model_dir} has no vocab.txt; the MLM evaluation needs the model's tokenizer")
    docs = load_documents(s["corpus"], s["exclude_documents"])
    if "corpus" not in differ:
        _warn_if_changed("corpus", facts, "corpus_sha256", corpus_fingerprint(docs))
    _, dev_docs = pretraining_split(docs, s["dev_fraction"], s["seed"], s["nsp"])
    if not dev_docs:
        raise ValueError("the run held no documents out (--dev-fraction 0): give --dev-fraction to evaluate on "
                         "some (they may have been trained on)")
    if report:
        report(_describe("held-out masked-LM", s, differ, run_dir))
    dev = PretrainingData(dev_docs, model.tokenizer, max_length=s["max_length"], seed=s["seed"] + 1, nsp=s["nsp"])
    metrics = evaluate_pretraining(model, pretraining_dev_batches(dev, s["batch_size"], s["eval_batches"]))
    return {**metrics, "used": s, "run": run_dir}


def _evaluate_classifier(model_dir, run_dir, recorded, facts, report, given) -> dict:
    s, differ = _settings(CLASSIFIER_DEFAULTS, recorded, given)
    if s["task"] in (None, IN_PYTHON):
        why = "was given its task as a Task object" if s["task"] == IN_PYTHON else (
            f"is not recorded (only the records of {', '.join(CLASSIFIER_RUNS)} runs name one)")
        raise ValueError(f"{model_dir} holds a classifier whose task {why}: give --task")
    task = build_run_task(s)
    if "task" not in differ and "corpus" not in differ:
        _warn_if_changed("task data", facts, "task_sha256", task_fingerprint(task))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MobileBertForSequenceClassification.from_pretrained(model_dir)
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"{model_dir} classifies into {model.config.num_labels} classes, task {task.name} has "
                         f"{task.num_labels}")
    if model.tokenizer is None:
        raise ValueError(f"{model_dir} has no vocab.txt; evaluating a classifier needs the model's tokenizer")
    if report:
        report(_describe(f"{task.name} dev accuracy", s, differ, run_dir))
    dev = encode_examples(task.dev, model.tokenizer, s["max_length"])
    metrics = evaluate_classification(model, lambda: example_batches(dev, s["eval_batch_size"], 0, shuffle=False))
    return {"task": task.name, **metrics, "used": s, "run": run_dir}
