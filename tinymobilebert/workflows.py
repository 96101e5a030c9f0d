"""End-to-end runs: pretraining, fine-tuning and evaluation on real text, as functions.

The command line (``python -m tinymobilebert``) and the demo call these; so can a notebook.
Every run writes into one folder:

    {out}/vocab.txt            the WordPiece vocabulary (trained on the training documents)
    {out}/run.json             the run's settings, so ``resume=True`` rebuilds the same data
    {out}/log.jsonl            one line per logged step / evaluation
    {out}/checkpoints/         resumable checkpoints (weights, optimizer, RNG state)
    {out}/model/               the final model, a transformers directory (config, weights, vocab)
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from .checkpoint import write_json
from .config import PRESETS, MobileBertConfig, mobilebert_small_student
from .data import (PretrainingData, builtin_corpus, encode_examples, example_batches, load_corpus, load_glue,
                   next_sentence_task, sentence_order_task, train_dev_split, word_order_task)
from .data.bow import bow_baseline
from .model import MobileBertForPreTraining, MobileBertForSequenceClassification
from .optim import LAMB, AdamW, LinearWarmupDecay
from .tokenizer import BertTokenizer
from .train import Trainer
from .train.evaluate import evaluate_classification, evaluate_pretraining

TASKS = {"word_order": word_order_task, "next_sentence": next_sentence_task, "sentence_order": sentence_order_task}


def small_mobilebert(vocab_size: int, **overrides) -> MobileBertConfig:
    """The small MobileBERT the demo trains (``config.mobilebert_small_student``): the student's
    layout (bottleneck, shared Q/K input, stacked FFNs, NoNorm, ReLU) at laptop scale."""
    return mobilebert_small_student(**{**overrides, "vocab_size": vocab_size})


def preset_config(model: str, vocab_size: int, overrides: dict | None = None) -> MobileBertConfig:
    """``config.PRESETS[model]`` with the run's vocabulary size and ``overrides``."""
    if model not in PRESETS:
        raise ValueError(f"--model {model!r}: unknown preset; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[model](**{**(overrides or {}), "vocab_size": vocab_size})


# ------------------------------------------------------------------------------------ data
def load_documents(corpus=None):
    """The built-in corpus (standard-library docstrings) or a user's text file or folder."""
    return builtin_corpus() if corpus in (None, "builtin") else load_corpus(corpus)


def tokenizer_for(out_dir, train_docs, vocab=None, vocab_size=4000) -> BertTokenizer:
    """The run's tokenizer: ``{out}/vocab.txt`` if present (a resumed run), else ``vocab`` (a
    vocab.txt or a folder holding one), else a WordPiece vocabulary trained on ``train_docs``."""
    own = os.path.join(out_dir, "vocab.txt")
    if os.path.isfile(own):
        return BertTokenizer.from_pretrained(own)
    if vocab is not None:
        tok = BertTokenizer.from_pretrained(vocab)
    else:
        tok = BertTokenizer.train((s for d in train_docs for s in d.sentences), vocab_size=vocab_size)
    tok.save_pretrained(out_dir)
    return tok


def _settings(out_dir, settings: dict, resume: bool) -> dict:
    """Record the run's settings; on resume, the recorded ones win (the data must be rebuilt alike)."""
    path = os.path.join(out_dir, "run.json")
    if resume and os.path.isfile(path):
        with open(path) as f:
            return {**settings, **json.load(f)}
    write_json(path, settings)
    return settings


def _optimizer(store, name, lr, steps, warmup, weight_decay=0.01, max_grad_norm=1.0):
    schedule = LinearWarmupDecay(warmup_steps=warmup, total_steps=steps)
    cls = {"adamw": AdamW, "lamb": LAMB}[name]
    return cls(store, lr=lr, weight_decay=weight_decay, schedule=schedule, max_grad_norm=max_grad_norm)


# ------------------------------------------------------------------------------------ pretrain
def pretrain(out_dir, *, corpus=None, docs=None, vocab=None, vocab_size=4000, model: str = "mobilebert_small_student",
             config: dict | None = None, steps=800,
             batch_size=32, max_length=64, lr=4e-3, warmup=60, optimizer="adamw", seed=0, eval_every=100,
             save_every=100, eval_batches=20, resume=False, progress=None, nsp=True, dev_fraction=0.05) -> dict:
    """Pretrain a MobileBERT with MLM (+ NSP) on real text. Returns a summary dict.

    The text is ``docs`` (a list of Documents) if given, else ``corpus`` (a path; None for the
    built-in corpus); ``dev_fraction`` of its documents are held out for the MLM evaluation.
    ``model`` names a preset of ``config.PRESETS`` (the student ``mobilebert_small_student`` by
    default; ``ib_bert_small_teacher`` is its teacher); ``config`` holds MobileBertConfig fields
    overriding the preset's.
    """
    preset_config(model, 8, config)  # an unknown preset or field fails here, before anything is written
    os.makedirs(out_dir, exist_ok=True)
    s = _settings(out_dir, dict(corpus=corpus, vocab_size=vocab_size, model=model, config=config or {}, steps=steps,
                                batch_size=batch_size, max_length=max_length, lr=lr, warmup=warmup,
                                optimizer=optimizer, seed=seed, nsp=nsp, dev_fraction=dev_fraction), resume)
    t0 = time.perf_counter()
    docs = docs if docs is not None else load_documents(s["corpus"])
    train_docs, dev_docs = train_dev_split(docs, dev_fraction=s["dev_fraction"], seed=s["seed"])
    tok = tokenizer_for(out_dir, train_docs, vocab, s["vocab_size"])
    cfg = preset_config(s.get("model", "mobilebert_small_student"), len(tok), s["config"])
    train_data = PretrainingData(train_docs, tok, max_length=s["max_length"], seed=s["seed"], nsp=s["nsp"])
    dev_data = PretrainingData(dev_docs, tok, max_length=s["max_length"], seed=s["seed"] + 1, nsp=s["nsp"])
    prep_seconds = time.perf_counter() - t0
    model = MobileBertForPreTraining(cfg, seed=s["seed"])
    opt = _optimizer(model.store, s["optimizer"], s["lr"], s["steps"], s["warmup"])
    B = s["batch_size"]

    def batches(epoch, start):
        for batch in train_data.batches(B, epoch, start_batch=start):
            yield {**batch, "mlm_positions": "labelled"}

    def dev_batches():  # the same held-out masking at every evaluation (epoch 0)
        for k, batch in enumerate(dev_data.batches(B, 0, shuffle=False, drop_last=False)):
            if k >= eval_batches:
                break
            yield batch

    trainer = Trainer(model, opt, batches, out_dir, max_steps=s["steps"], evaluate=lambda m: evaluate_pretraining(
        m, dev_batches), eval_every=eval_every, save_every=save_every, tokenizer=tok, progress=progress,
        description="pretrain")
    resumed = trainer.resume() if resume else False
    result = trainer.train()
    model.save_pretrained(os.path.join(out_dir, "model"), tokenizer=tok)
    return {"out_dir": out_dir, "parameters": model.num_parameters(), "vocab_size": len(tok),
            "train_examples": train_data.num_examples, "dev_examples": dev_data.num_examples,
            "documents": len(docs), "prep_seconds": prep_seconds, "resumed": resumed, **result}


# ------------------------------------------------------------------------------------ fine-tune
def load_task(task, docs=None, seed=0, **kw):
    """A Task: "word_order", "next_sentence", "sentence_order" (built from ``docs``), or a path
    to GLUE-style TSV/CSV data (``load_glue``)."""
    if task in TASKS:
        return TASKS[task](docs if docs is not None else builtin_corpus(), seed=seed, **kw)
    if isinstance(task, str) and os.path.exists(task):
        return load_glue(task, seed=seed)
    raise ValueError(f"task must be one of {sorted(TASKS)} or a path to GLUE-style data, got {task!r}")


def finetune(out_dir, task, *, model_dir=None, tokenizer=None, config: dict | None = None, steps=300,
             batch_size=32, max_length=64, lr=1e-3, warmup=30, seed=0, eval_every=100, pooling="mean",
             progress=None, baseline=True) -> dict:
    """Fine-tune a classifier on ``task`` (a Task). From ``model_dir`` (a pretrained directory)
    or, without one, from scratch with ``small_mobilebert``'s layout (``config`` overrides).
    Returns a summary with the dev accuracy and, with ``baseline``, the bag-of-words baseline's."""
    os.makedirs(out_dir, exist_ok=True)
    if model_dir is not None:
        import warnings

        with warnings.catch_warnings():  # the new classifier is expected to be initialised
            warnings.simplefilter("ignore")
            model = MobileBertForSequenceClassification.from_pretrained(
                model_dir, num_labels=task.num_labels, classifier_pooling=pooling, seed=seed)
        tokenizer = tokenizer or model.tokenizer
    else:
        if tokenizer is None:
            raise ValueError("finetune from scratch needs a tokenizer")
        cfg = small_mobilebert(len(tokenizer), num_labels=task.num_labels, classifier_pooling=pooling,
                               **(config or {}))
        model = MobileBertForSequenceClassification(cfg, seed=seed)
    train = encode_examples(task.train, tokenizer, max_length)
    dev = encode_examples(task.dev, tokenizer, max_length)
    opt = _optimizer(model.store, "adamw", lr, steps, warmup)

    def batches(epoch, start):
        return example_batches(train, batch_size, epoch, seed=seed, start_batch=start, drop_last=True)

    def dev_batches():
        return example_batches(dev, 128, 0, shuffle=False)

    trainer = Trainer(model, opt, batches, out_dir, max_steps=steps, evaluate=lambda m: evaluate_classification(
        m, dev_batches), eval_every=eval_every, tokenizer=tokenizer, progress=progress, description=f"finetune {task.name}")
    result = trainer.train()
    model.save_pretrained(os.path.join(out_dir, "model"), tokenizer=tokenizer)
    summary = {"task": task.name, "train_examples": len(task.train), "dev_examples": len(task.dev),
               "dev_accuracy": result["last_dev"]["accuracy"], "parameters": model.num_parameters(), **result}
    if baseline:
        summary["bow_dev_accuracy"] = bow_baseline(task, tokenizer, seed=seed)["dev_accuracy"]
    labels = np.array([e.label for e in task.dev])
    summary["majority_dev_accuracy"] = float(np.bincount(labels).max() / len(labels))
    write_json(os.path.join(out_dir, "summary.json"), _jsonable(summary))
    return summary


def _jsonable(d):
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# ------------------------------------------------------------------------------------ evaluate
def evaluate(model_dir, task=None, corpus=None, max_length=64, batch_size=64, seed=0) -> dict:
    """Held-out MLM metrics of a pretraining model on a corpus's dev documents, or a classifier's
    dev accuracy on ``task``."""
    import warnings

    from .checkpoint import read_config

    arch = read_config(model_dir).extra.get("architectures", [""])[0]
    if task is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = MobileBertForSequenceClassification.from_pretrained(model_dir)
        docs = load_documents(corpus) if task in TASKS else None
        t = load_task(task, docs, seed=seed)
        dev = encode_examples(t.dev, model.tokenizer, max_length)
        return {"task": t.name, **evaluate_classification(model, lambda: example_batches(dev, batch_size, 0,
                                                                                          shuffle=False))}
    if not arch.endswith("ForPreTraining"):
        raise ValueError(f"{model_dir} holds a {arch or 'model'}; give --task to evaluate a classifier")
    model = MobileBertForPreTraining.from_pretrained(model_dir)
    if model.tokenizer is None:
        raise ValueError(f"{model_dir} has no vocab.txt; the MLM evaluation needs the model's tokenizer")
    _, dev_docs = train_dev_split(load_documents(corpus), dev_fraction=0.05, seed=seed)
    data = PretrainingData(dev_docs, model.tokenizer, max_length=max_length, seed=seed + 1)
    return evaluate_pretraining(model, lambda: data.batches(batch_size, 0, shuffle=False, drop_last=False))
