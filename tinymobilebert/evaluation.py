"""Evaluating a saved model the way its run did: held-out MLM metrics, or a classifier's dev accuracy.

``evaluate(model_dir)`` finds the run that wrote the model (``RUN/model`` or a checkpoint
``RUN/checkpoints/step-N``) and rebuilds the run's held-out data from its run.json: the same
corpus (less the same excluded documents), split, seed, masking, maximum length, batch size and
number of batches; or, for a classifier, the same task, dev split and evaluation batch size.
With the same batches, and the thread count the run's last evaluation logged (BLAS sums in
another order on another count), the figures are those of the run's log, exactly. The batch size matters:
rows are padded to the longest row of their batch, and with transformers' trigram input the
last real token reads its [PAD] neighbour, so another batch size gives (slightly) other figures.

Arguments given override the record, and the report says so; a model that no run wrote is
evaluated with the defaults (built-in corpus, batch size 32, max length 64, seed 0), said too.
If the corpus (or task) text has changed since the run, a warning says the figures cannot match.
"""

from __future__ import annotations

import os
import warnings

from .checkpoint import read_config
from .data import PretrainingData, encode_examples, example_batches
from .model import MobileBertForPreTraining, MobileBertForSequenceClassification
from .threads import restored, set_threads
from .train.evaluate import evaluate_classification, evaluate_pretraining
from .train.run_folder import find_run_of
from .train.settings import corpus_fingerprint, task_fingerprint
from .train.trainer import LOG_NAME, read_log
from .workflows import (BUILTIN, IN_PYTHON, TASKS, _path_setting, build_run_task, load_documents,
                        pretraining_dev_batches, pretraining_split)

MLM_DEFAULTS = dict(corpus=BUILTIN, exclude_documents=[], max_length=64, batch_size=32, seed=0, dev_fraction=0.05,
                    nsp=True, eval_batches=None)
CLASSIFIER_DEFAULTS = dict(task=None, corpus=BUILTIN, max_length=64, eval_batch_size=128, seed=0, dev_fraction=None)


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
        A model directory (``RUN/model``, a checkpoint, or any transformers directory).
    task : str or None
        A task name or GLUE-style path: evaluate a classifier on it (default: its run's task).
    corpus, max_length, batch_size, seed, dev_fraction : override the run's settings.
    report : callable str -> None, or None
        Receives one line saying which data and settings were used.

    Returns
    -------
    dict
        The metrics, ``"used"`` (the settings used) and ``"run"`` (the run folder, or None).
    """
    model_dir = os.fspath(model_dir)
    run_dir, record = find_run_of(model_dir)
    threads = _logged_threads(run_dir)
    if threads is None:
        return _evaluate(model_dir, run_dir, record, task, corpus, max_length, batch_size, seed, dev_fraction, report)
    if report:  # BLAS sums in another order on another thread count: the run's count repeats its figures
        report = (lambda line, say=report: say(f"{line}; threads {threads}, as the run's last evaluation"))
    with restored():
        set_threads(threads)
        return _evaluate(model_dir, run_dir, record, task, corpus, max_length, batch_size, seed, dev_fraction, report)


def _logged_threads(run_dir):
    """The thread count of the run's last held-out evaluation (its log's last dev record), or None."""
    if run_dir is None or not os.path.isfile(os.path.join(run_dir, LOG_NAME)):
        return None
    dev = [r for r in read_log(run_dir) if r.get("split") == "dev"]
    return dev[-1].get("threads") if dev else None


def _evaluate(model_dir, run_dir, record, task, corpus, max_length, batch_size, seed, dev_fraction, report) -> dict:
    arch = read_config(model_dir).extra.get("architectures", [""])[0]
    command = record["command"] if record else None
    if task is not None or arch.endswith("ForSequenceClassification"):
        recorded = record["settings"] if command == "finetune" else {}
        run_dir = run_dir if command == "finetune" else None
        return _evaluate_classifier(model_dir, run_dir, recorded, record["facts"] if run_dir else {}, report,
                                    dict(task=_task_setting(task), corpus=_path_setting(corpus), max_length=max_length,
                                         eval_batch_size=batch_size, seed=seed, dev_fraction=dev_fraction))
    if not arch.endswith("ForPreTraining"):
        raise ValueError(f"{model_dir} holds a {arch or 'model'}; give --task to evaluate a classifier")
    recorded = record["settings"] if command in ("pretrain", "distill", None) and record else {}
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
        why = "was given its task as a Task object" if s["task"] == IN_PYTHON else "is not recorded (only a finetune run's record is read for it)"
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
