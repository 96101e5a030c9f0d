"""End-to-end runs: pretraining and fine-tuning on real text, as functions (evaluation: ``evaluation.py``).

The command line (``python -m tinymobilebert``) and the demo call these; so can a notebook.
Every run writes into one folder, which it claims through ``train.run_folder.RunFolder``:

    {out}/run.json             every setting that shapes the run, fingerprints of its inputs,
                               and the settings changed on resume
    {out}/vocab.txt            the WordPiece vocabulary (trained on the training documents)
    {out}/log.jsonl            one line per logged step / evaluation
    {out}/checkpoints/         resumable, verified checkpoints (weights, optimizer, RNG state)
    {out}/model/               the final model, a transformers directory (config, weights, vocab)
    {out}/token_importance.safetensors   with token dropping: the final importance table

A folder that holds a run is refused unless ``resume=True`` (continue it, exactly) or
``overwrite=True`` (delete it, then start). Keyword settings default to None, meaning "not
given": a new run takes ``PRETRAIN_DEFAULTS`` / ``FINETUNE_DEFAULTS``, a resumed run its record.
Settings are checked, and the data built, before anything is written.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np

from .checkpoint import model_fingerprint
from .config import PRESETS, MobileBertConfig, mobilebert_small_student
from .data import (PretrainingData, builtin_corpus, encode_examples, example_batches, load_corpus, load_glue,
                   next_sentence_task, sentence_order_task, train_dev_split, word_order_task)
from .data.bow import bow_baseline
from .model import MobileBertForPreTraining, MobileBertForSequenceClassification
from .model.plan import encoder_plan
from .optim import LAMB, AdamW, LinearWarmupDecay
from .token_dropping import TokenDropping, TokenImportance
from .tokenizer import BertTokenizer
from .train import Trainer
from .train.evaluate import evaluate_classification, evaluate_pretraining
from .train.run_folder import RunFolder
from .train.settings import (check_max_length, check_one_batch, check_training_settings, corpus_fingerprint,
                             resolve_warmup, task_fingerprint)

TASKS = {"word_order": word_order_task, "next_sentence": next_sentence_task, "sentence_order": sentence_order_task}
BUILTIN = "builtin"
IN_PYTHON = "(given in Python)"  # a corpus, task or tokenizer passed as an object: not rebuildable from run.json

PRETRAIN_DEFAULTS = dict(corpus=BUILTIN, exclude_documents=[], vocab=None, vocab_size=4000,
                         model="mobilebert_small_student", config={}, steps=800,
                         batch_size=32, max_length=64, lr=4e-3, warmup=None, optimizer="adamw", seed=0, nsp=True,
                         dev_fraction=0.05, eval_every=100, save_every=100, eval_batches=20, token_dropping=None,
                         split_layer=None)
FINETUNE_DEFAULTS = dict(task="word_order", corpus=BUILTIN, model=None, from_scratch=None, config={}, pooling="mean",
                         steps=300, batch_size=32, max_length=64, lr=1e-3, warmup=None, seed=0, dev_fraction=None,
                         eval_every=100, save_every=100, eval_batch_size=128)
WARMUP_FRACTION = {"pretrain": 0.075, "finetune": 0.1}  # 60 of pretrain's 800 steps, 30 of finetune's 300
SAFE_ON_RESUME = {"steps": "the learning-rate schedule now decays to 0 at the new last step",
                  "eval_every": "", "save_every": ""}
START_MODEL_FACT = "model_sha256"  # run.json facts: {file: SHA-256} of finetune's --model, checked on resume
FLAGS = {"nsp": "--no-nsp", "model": "--model", "from_scratch": "--from-scratch"}


def small_mobilebert(vocab_size: int, **overrides) -> MobileBertConfig:
    """The small MobileBERT the demo trains (``config.mobilebert_small_student``): the student's
    layout (bottleneck, shared Q/K input, stacked FFNs, NoNorm, ReLU) at laptop scale."""
    return mobilebert_small_student(**{**overrides, "vocab_size": vocab_size})


def preset_config(model: str, vocab_size: int, overrides: dict | None = None, what: str = "--model") -> MobileBertConfig:
    """``config.PRESETS[model]`` with the run's vocabulary size and ``overrides`` (errors name ``what``)."""
    if model not in PRESETS:
        raise ValueError(f"{what} {model!r}: unknown preset; choose one of {', '.join(sorted(PRESETS))}")
    if not isinstance(overrides or {}, dict):
        raise ValueError(f"{what} config overrides must be a JSON object of MobileBertConfig fields, got {overrides!r}")
    try:
        return PRESETS[model](**{**(overrides or {}), "vocab_size": vocab_size})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} {model} with {overrides}: {e}") from None


# ------------------------------------------------------------------------------------ data
def load_documents(corpus=None, exclude=()):
    """The built-in corpus (standard-library docstrings) or a user's text file or folder, without
    the documents named in ``exclude``."""
    if corpus in (None, BUILTIN):
        docs = builtin_corpus()
    elif not os.path.exists(corpus):
        raise FileNotFoundError(f"--corpus {corpus} does not exist (a .txt/.md file or a folder of them)")
    else:
        docs = load_corpus(corpus)
    exclude = set(exclude)
    return [d for d in docs if d.name not in exclude] if exclude else docs


def _path_setting(path):
    return None if path is None else os.path.abspath(os.fspath(path)) if path != BUILTIN else BUILTIN


def _optimizer(store, name, lr, steps, warmup, weight_decay=0.01, max_grad_norm=1.0):
    schedule = LinearWarmupDecay(warmup_steps=warmup, total_steps=steps)
    cls = {"adamw": AdamW, "lamb": LAMB}[name]
    return cls(store, lr=lr, weight_decay=weight_decay, schedule=schedule, max_grad_norm=max_grad_norm)


def _run_settings(run: RunFolder, command: str) -> dict:
    s = run.settings
    check_training_settings(s)
    s["warmup"] = resolve_warmup(s["warmup"], s["steps"], WARMUP_FRACTION[command])
    if not isinstance(s["config"], dict):
        raise ValueError(f"--config must be a JSON object of MobileBertConfig fields, got {s['config']!r}")
    preset = s["model"] if command == "pretrain" else "mobilebert_small_student"  # finetune's model is a folder
    if preset not in PRESETS:
        raise ValueError(f"--model {preset!r}: unknown preset; choose one of {', '.join(sorted(PRESETS))}")
    try:
        preset_config(preset, 1000, s["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"--config {json.dumps(s['config'])}: {e}") from None
    return s


# ------------------------------------------------------------------------------------ pretrain
def pretraining_split(docs, dev_fraction, seed, nsp):
    """(train, dev) documents, with errors that say how the held-out split left too little."""
    if not docs:
        raise ValueError("the corpus holds no prose sentences: nothing to pretrain on")
    train_docs, dev_docs = train_dev_split(docs, dev_fraction=dev_fraction, seed=seed)
    held = f"the held-out split (--dev-fraction {dev_fraction}) takes whole documents"
    if dev_fraction > 0 and not dev_docs:
        raise ValueError(f"the corpus has only 1 document, and {held}, so none is left to hold out: give more "
                         "documents (several files, or texts separated by two empty lines), or --dev-fraction 0 to "
                         "train without a held-out evaluation")
    if nsp and len(train_docs) < 2:
        raise ValueError(f"next-sentence pairs need at least two documents, and the training split has "
                         f"{len(train_docs)} of the corpus's {len(docs)} ({held}): give more documents, or --no-nsp")
    if nsp and dev_fraction > 0 and len(dev_docs) < 2:
        raise ValueError(f"next-sentence pairs need at least two documents, and the held-out split has "
                         f"{len(dev_docs)} of {len(docs)}: raise --dev-fraction, or --no-nsp, or --dev-fraction 0 "
                         "for no held-out evaluation")
    return train_docs, dev_docs


def pretraining_data(train_docs, dev_docs, tok, s):
    """(train, dev or None) ``PretrainingData`` of a run's settings; an error when either is too small."""
    train = PretrainingData(train_docs, tok, max_length=s["max_length"], seed=s["seed"], nsp=s["nsp"])
    if train.num_batches(s["batch_size"]) < 1:
        raise ValueError(f"the training split gives {train.num_examples} examples, fewer than one batch "
                         f"(--batch-size {s['batch_size']}): give more text, or a smaller --batch-size")
    if not dev_docs:
        return train, None
    dev = PretrainingData(dev_docs, tok, max_length=s["max_length"], seed=s["seed"] + 1, nsp=s["nsp"])
    if dev.num_examples == 0:
        raise ValueError(f"the held-out split ({len(dev_docs)} documents, --dev-fraction {s['dev_fraction']}) gives "
                         "no examples: raise --dev-fraction, or --dev-fraction 0 for no held-out evaluation")
    return train, dev


def pretraining_dev_batches(dev_data, batch_size, eval_batches):
    """The held-out batches every evaluation of a run sees: the same masking (epoch 0), in order."""

    def batches():
        for k, batch in enumerate(dev_data.batches(batch_size, 0, shuffle=False, drop_last=False)):
            if eval_batches is not None and k >= eval_batches:
                break
            yield batch

    return batches


def _pretraining_tokenizer(out_dir, run, train_docs, s) -> BertTokenizer:
    """A resumed run's own vocab.txt; else ``--vocab``, else one trained on the training documents."""
    own = os.path.join(out_dir, "vocab.txt")
    if run.resuming and os.path.isfile(own):
        return BertTokenizer.from_pretrained(own)
    if s["vocab"] is not None:
        return BertTokenizer.from_pretrained(s["vocab"])
    return BertTokenizer.train((x for d in train_docs for x in d.sentences), vocab_size=s["vocab_size"])


def pretrain(out_dir, *, corpus=None, docs=None, exclude_documents=None, vocab=None, vocab_size=None,
             model: str | None = None, config: dict | None = None, steps=None, batch_size=None, max_length=None, lr=None, warmup=None,
             optimizer=None, seed=None, nsp=None, dev_fraction=None, eval_every=None, save_every=None,
             eval_batches=None, resume=False, overwrite=False, progress=None, progress_every=None,
             token_dropping=None, split_layer=None) -> dict:
    """Pretrain a MobileBERT with MLM (+ NSP) on real text. Returns a summary dict.

    The text is ``docs`` (a list of Documents) if given, else ``corpus`` (a path; None or
    "builtin" for the built-in corpus), less the documents named in ``exclude_documents``;
    ``dev_fraction`` of it (whole documents) is held out for the MLM evaluation. ``model`` names
    a preset of ``config.PRESETS`` (default ``mobilebert_small_student``; its teacher is
    ``ib_bert_small_teacher``) and ``config`` holds MobileBertConfig fields overriding the
    preset's; ``warmup`` defaults to 7.5%
    of ``steps``. See the module notes for ``resume`` / ``overwrite``.

    ``token_dropping`` (a keep ratio in (0, 1], e.g. 0.5): the tokens of lowest importance skip
    the layers after ``split_layer`` (default L/2 - 1) up to the last (``token_dropping``);
    held-out metrics are then logged both without dropping (``mlm_loss``, ...) and with it
    (``dropping_mlm_loss``, ...), the summary holds the final table (``"token_importance"``),
    also written to ``{out}/token_importance.safetensors``. The saved model is a plain model.
    """
    given = dict(corpus=IN_PYTHON if docs is not None else _path_setting(corpus), exclude_documents=exclude_documents,
                 vocab=_path_setting(vocab), vocab_size=vocab_size, model=model, config=config, steps=steps,
                 batch_size=batch_size,
                 max_length=max_length, lr=lr, warmup=warmup, optimizer=optimizer, seed=seed, nsp=nsp,
                 dev_fraction=dev_fraction, eval_every=eval_every, save_every=save_every, eval_batches=eval_batches,
                 token_dropping=token_dropping, split_layer=split_layer)
    run = RunFolder(out_dir, "pretrain", given, PRETRAIN_DEFAULTS, resume=resume, overwrite=overwrite,
                    safe_to_change=SAFE_ON_RESUME, flags=FLAGS)
    s = _run_settings(run, "pretrain")
    if s["optimizer"] not in ("adamw", "lamb"):
        raise ValueError(f"--optimizer must be adamw or lamb, got {s['optimizer']!r}")
    t0 = time.perf_counter()
    docs = load_documents(s["corpus"], s["exclude_documents"]) if docs is None else \
        [d for d in docs if d.name not in set(s["exclude_documents"])]
    train_docs, dev_docs = pretraining_split(docs, s["dev_fraction"], s["seed"], s["nsp"])
    tok = _pretraining_tokenizer(out_dir, run, train_docs, s)
    cfg = preset_config(s["model"], len(tok), s["config"])
    check_max_length(s["max_length"], cfg)
    dropping = _token_dropping(s, cfg, tok)
    train_data, dev_data = pretraining_data(train_docs, dev_docs, tok, s)
    prep_seconds = time.perf_counter() - t0
    model = MobileBertForPreTraining(cfg, seed=s["seed"])
    opt = _optimizer(model.store, s["optimizer"], s["lr"], s["steps"], s["warmup"])
    B = s["batch_size"]
    run.start(facts={"corpus_sha256": corpus_fingerprint(docs), "documents": len(docs)})
    tok.save_pretrained(out_dir)

    def batches(epoch, start):
        for batch in train_data.batches(B, epoch, start_batch=start):
            yield {**batch, "mlm_positions": "labelled"}

    evaluate = None
    if dev_data is not None:
        dev_batches = pretraining_dev_batches(dev_data, B, s["eval_batches"])

        def evaluate(m):
            return evaluate_with_dropping(m, dev_batches, dropping)

    trainer = Trainer(model, opt, batches, out_dir, max_steps=s["steps"], evaluate=evaluate,
                      eval_every=s["eval_every"], save_every=s["save_every"], tokenizer=tok, progress=progress,
                      progress_every=progress_every, description="pretrain", step_fn=dropping,
                      extra_state={"token_importance": dropping} if dropping is not None else None)
    resumed = trainer.resume() if run.resuming else False
    result = trainer.train()
    model.save_pretrained(os.path.join(out_dir, "model"), tokenizer=tok)
    if dropping is not None:
        result["token_importance"] = save_token_importance(dropping, out_dir)
    return {"out_dir": os.fspath(out_dir), "parameters": model.num_parameters(), "vocab_size": len(tok),
            "train_examples": train_data.num_examples, "dev_examples": dev_data.num_examples if dev_data else 0,
            "documents": len(docs), "prep_seconds": prep_seconds, "resumed": resumed, "settings": dict(s), **result}


def _token_dropping(s, cfg, tok):
    """The run's ``TokenDropping`` step, or None; its settings checked before anything is written."""
    keep, split = s["token_dropping"], s["split_layer"]
    if keep is None:
        if split is not None:
            raise ValueError(f"--split-layer {split} needs --token-dropping (the share of tokens to keep)")
        return None
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"--token-dropping must be a share of tokens kept in (0, 1], got {keep!r}")
    try:
        encoder_plan(cfg, token_dropping=True, split_layer=split)
    except ValueError as e:
        raise ValueError(f"--split-layer: {e}") from None
    return TokenDropping(TokenImportance.from_tokenizer(tok), keep=float(keep), split_layer=split)


def evaluate_with_dropping(model, dev_batches, dropping=None) -> dict:
    """Held-out MLM metrics without dropping and, with ``dropping`` (a TokenDropping), also on the
    same batches with the tokens it would drop (``dropping_mlm_loss``, ...); nothing is learned."""
    metrics = evaluate_pretraining(model, dev_batches)
    if dropping is not None:
        with_dropping = evaluate_pretraining(model, lambda: dropping.with_dropping(dev_batches()))
        metrics.update({f"dropping_{k}": v for k, v in with_dropping.items() if k != "masked_tokens"})
    return metrics


def save_token_importance(dropping, out_dir):
    """Write a run's final importance table to ``{out_dir}/token_importance.safetensors``; returns it."""
    dropping.importance.save(os.path.join(out_dir, "token_importance.safetensors"))
    return dropping.importance


# ------------------------------------------------------------------------------------ fine-tune
def load_task(task, docs=None, seed=0, dev_fraction=None, **kw):
    """A Task: "word_order", "next_sentence", "sentence_order" (built from ``docs``), or a path
    to GLUE-style TSV/CSV data (``load_glue``). ``dev_fraction`` (None: the task's default) is
    the share of documents (of rows, for a file without a dev file) held out for dev."""
    if dev_fraction is not None:
        kw["dev_fraction"] = dev_fraction
    if task in TASKS:
        return TASKS[task](docs if docs is not None else builtin_corpus(), seed=seed, **kw)
    if isinstance(task, (str, os.PathLike)) and os.path.exists(task):
        return load_glue(task, seed=seed, **kw)
    raise ValueError(f"--task must be one of {sorted(TASKS)} or a path to GLUE-style data, got {task!r}")


def build_run_task(s: dict):
    """The task a fine-tuning run's settings name (``evaluate`` rebuilds it the same way)."""
    docs = load_documents(s["corpus"]) if s["task"] in TASKS else None
    try:
        return load_task(s["task"], docs, seed=s["seed"], dev_fraction=s["dev_fraction"])
    except ValueError as e:
        if "no dev examples" in str(e) or "no training examples" in str(e):
            raise ValueError(f"{e}; the dev split takes whole documents (--dev-fraction, default 0.2)") from None
        raise


def with_label_names(config: MobileBertConfig, labels) -> MobileBertConfig:
    """``config`` with transformers' ``id2label`` / ``label2id`` for the task's label names."""
    names = [str(x) for x in labels] if labels else [f"LABEL_{i}" for i in range(config.num_labels)]
    extra = {**config.extra, "id2label": {str(i): n for i, n in enumerate(names)},
             "label2id": {n: i for i, n in enumerate(names)}}
    return config.replace(extra=extra)


def _classifier(s, task, tokenizer, run, out_dir):
    """(model, tokenizer) to fine-tune: from ``s["model"]`` (a pretrained directory) or from scratch.

    A resumed run uses its own vocab.txt, even if the one it started from has changed since.
    """
    own = os.path.join(out_dir, "vocab.txt")
    if run.resuming and os.path.isfile(own):
        tokenizer = BertTokenizer.from_pretrained(own)
    if s["model"] is not None:
        with warnings.catch_warnings():  # the new classifier is expected to be initialised
            warnings.simplefilter("ignore")
            model = MobileBertForSequenceClassification.from_pretrained(
                s["model"], num_labels=task.num_labels, classifier_pooling=s["pooling"], seed=s["seed"])
        tokenizer = tokenizer or model.tokenizer
        if tokenizer is None:
            raise ValueError(f"--model {s['model']} has no vocab.txt; fine-tuning needs the model's tokenizer")
    else:
        if tokenizer is None and s["from_scratch"] in (None, IN_PYTHON):
            raise ValueError("fine-tuning from scratch needs a vocabulary (--from-scratch VOCAB) or a --model")
        tokenizer = tokenizer or BertTokenizer.from_pretrained(s["from_scratch"])
        cfg = small_mobilebert(len(tokenizer), num_labels=task.num_labels, classifier_pooling=s["pooling"],
                               **s["config"])
        model = MobileBertForSequenceClassification(cfg, seed=s["seed"])
    model.config = with_label_names(model.config, task.labels)
    return model, tokenizer


def finetune(out_dir, task=None, *, corpus=None, model_dir=None, from_scratch=None, tokenizer=None,
             config: dict | None = None, steps=None, batch_size=None, max_length=None, lr=None, warmup=None, seed=None,
             dev_fraction=None, eval_every=None, save_every=None, pooling=None, resume=False, overwrite=False,
             progress=None, progress_every=None, baseline=True) -> dict:
    """Fine-tune a classifier on ``task``: a task name or GLUE-style path (built from ``corpus``
    and ``seed``), or a ``Task``. From ``model_dir`` (a pretrained directory) or, without one,
    from scratch with ``small_mobilebert``'s layout (``config`` overrides) and the vocabulary
    ``from_scratch`` (a vocab.txt) or ``tokenizer``. ``warmup`` defaults to 10% of ``steps``.
    Returns a summary with the dev accuracy and, with ``baseline``, the bag-of-words baseline's.
    """
    task_obj = task if task is not None and not isinstance(task, (str, os.PathLike)) else None
    if task is None or task_obj is not None:
        task_spec = None if task is None else IN_PYTHON
    else:
        task_spec = os.fspath(task) if os.fspath(task) in TASKS else _path_setting(task)
    given = dict(task=task_spec, corpus=_path_setting(corpus), model=_path_setting(model_dir),
                 from_scratch=IN_PYTHON if tokenizer is not None and model_dir is None else _path_setting(from_scratch),
                 config=config, pooling=pooling, steps=steps, batch_size=batch_size, max_length=max_length, lr=lr,
                 warmup=warmup, seed=seed, dev_fraction=dev_fraction, eval_every=eval_every, save_every=save_every)
    run = RunFolder(out_dir, "finetune", given, FINETUNE_DEFAULTS, resume=resume, overwrite=overwrite,
                    safe_to_change=SAFE_ON_RESUME, flags=FLAGS)
    s = _run_settings(run, "finetune")
    if s["pooling"] not in ("mean", "cls"):
        raise ValueError(f"--pooling must be mean or cls, got {s['pooling']!r}")
    if s["task"] == IN_PYTHON and task_obj is None:
        raise ValueError(f"the run in {out_dir} was given its task as a Task object: pass the same Task to resume it")
    task = task_obj if task_obj is not None else build_run_task(s)
    if task.num_labels < 2:
        raise ValueError(f"task {task.name} has {task.num_labels} class: a classifier needs at least two")
    start_files = None if s["model"] is None else model_fingerprint(s["model"])  # what a resume must start from
    if start_files is not None:
        run.check_same_model(START_MODEL_FACT, "--model", s["model"], start_files, role="pretrained model")
    model, tokenizer = _classifier(s, task, tokenizer, run, out_dir)
    check_max_length(s["max_length"], model.config)
    train = encode_examples(task.train, tokenizer, s["max_length"])
    dev = encode_examples(task.dev, tokenizer, s["max_length"])
    check_one_batch(task, s["batch_size"])
    opt = _optimizer(model.store, "adamw", s["lr"], s["steps"], s["warmup"])
    facts = {"task_sha256": task_fingerprint(task)}
    if start_files is not None:
        facts[START_MODEL_FACT] = start_files
    run.start(facts=facts)
    tokenizer.save_pretrained(out_dir)

    def batches(epoch, start):
        return example_batches(train, s["batch_size"], epoch, seed=s["seed"], start_batch=start, drop_last=True)

    def dev_batches():
        return example_batches(dev, s["eval_batch_size"], 0, shuffle=False)

    trainer = Trainer(model, opt, batches, out_dir, max_steps=s["steps"], evaluate=lambda m: evaluate_classification(
        m, dev_batches), eval_every=s["eval_every"], save_every=s["save_every"], tokenizer=tokenizer,
        progress=progress, progress_every=progress_every, description=f"finetune {task.name}")
    resumed = trainer.resume() if run.resuming else False
    result = trainer.train()
    model.save_pretrained(os.path.join(out_dir, "model"), tokenizer=tokenizer)
    summary = {"task": task.name, "train_examples": len(task.train), "dev_examples": len(task.dev),
               "dev_accuracy": result["last_dev"]["accuracy"], "parameters": model.num_parameters(),
               "resumed": resumed, "settings": dict(s), **result}
    if baseline:
        summary["bow_dev_accuracy"] = bow_baseline(task, tokenizer, seed=s["seed"])["dev_accuracy"]
    labels = np.array([e.label for e in task.dev])
    summary["majority_dev_accuracy"] = float(np.bincount(labels).max() / len(labels))
    from .checkpoint import write_json

    write_json(os.path.join(out_dir, "summary.json"), _jsonable(summary))
    return summary


def _jsonable(d):
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def evaluate(model_dir, task=None, corpus=None, max_length=None, batch_size=None, seed=None, dev_fraction=None,
             report=None) -> dict:
    """Evaluate a saved model on its run's held-out data, as the run did: ``evaluation.evaluate``."""
    from .evaluation import evaluate as evaluate_as_the_run_did

    return evaluate_as_the_run_did(model_dir, task=task, corpus=corpus, max_length=max_length, batch_size=batch_size,
                                   seed=seed, dev_fraction=dev_fraction, report=report)
