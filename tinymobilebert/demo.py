"""The demo: the whole pipeline on the built-in corpus, in a few minutes on a laptop.

1. Documents: the Python standard library's docstrings (no download). The fine-tuning task's
   dev documents are set aside first, so pretraining never reads a dev sentence.
2. A WordPiece vocabulary trained on the pretraining documents.
3. A small MobileBERT pretrained with masked-LM and next-sentence prediction; held-out MLM
   accuracy is measured on documents it never trained on.
4. Fine-tuning on a task that needs word order (a bag of words is at chance by construction),
   from the pretrained weights and, for comparison, from scratch with the same steps; plus the
   bag-of-words logistic regression baseline.
5. A summary (also in {out}/summary.json) and the curves ({out}/curves.png).
"""

from __future__ import annotations

import os
import time

from . import workflows as wf
from .checkpoint import write_json

DEFAULTS = {"pretrain_steps": 1000, "finetune_steps": 200}


def run_demo(out_dir="runs/demo", *, seed=0, pretrain_steps=None, finetune_steps=None, task="word_order",
             progress=None, print_fn=print) -> dict:
    """Run the demo (see the module notes); returns the summary dict."""
    t0 = time.perf_counter()
    pretrain_steps = pretrain_steps or DEFAULTS["pretrain_steps"]
    finetune_steps = finetune_steps or DEFAULTS["finetune_steps"]
    docs = wf.load_documents(None)
    the_task = wf.load_task(task, docs, seed=seed)
    dev_names = set(the_task.documents["dev"])
    pretrain_docs = [d for d in docs if d.name not in dev_names]
    print_fn(f"corpus: {len(docs)} documents ({sum(len(d.text) for d in docs) / 1e6:.1f} MB); task {the_task.name}: "
             f"{len(the_task.train)} train / {len(the_task.dev)} dev examples from separate documents")

    pre = wf.pretrain(os.path.join(out_dir, "pretrain"), docs=pretrain_docs, steps=pretrain_steps, seed=seed,
                      eval_every=max(pretrain_steps // 4, 1), save_every=max(pretrain_steps // 2, 1), progress=progress)
    pre_dev = pre["last_dev"]
    print_fn(f"pretrained {pre['parameters']:,} parameters for {pre['steps']} steps ({pre['seconds']:.0f}s): "
             f"held-out MLM accuracy {pre_dev['mlm_accuracy']:.3f}, NSP accuracy {pre_dev.get('nsp_accuracy', 0):.3f}")

    tok = wf.BertTokenizer.from_pretrained(os.path.join(out_dir, "pretrain", "vocab.txt"))
    ft = wf.finetune(os.path.join(out_dir, "finetune_pretrained"), the_task,
                     model_dir=os.path.join(out_dir, "pretrain", "model"), steps=finetune_steps, seed=seed,
                     eval_every=max(finetune_steps // 4, 1), progress=progress)
    scratch = wf.finetune(os.path.join(out_dir, "finetune_scratch"), the_task, tokenizer=tok, steps=finetune_steps,
                          seed=seed, eval_every=max(finetune_steps // 4, 1), progress=progress, baseline=False)
    summary = {
        "parameters": pre["parameters"], "vocab_size": pre["vocab_size"],
        "pretrain": {"steps": pre["steps"], "seconds": pre["seconds"], "first_loss": _first_loss(out_dir),
                     "last_loss": pre["last_train"]["loss"], "held_out_mlm_accuracy": pre_dev["mlm_accuracy"],
                     "held_out_mlm_loss": pre_dev["mlm_loss"], "held_out_nsp_accuracy": pre_dev.get("nsp_accuracy")},
        "task": the_task.name,
        "dev_accuracy": {"pretrained": ft["dev_accuracy"], "from_scratch": scratch["dev_accuracy"],
                         "bag_of_words": ft["bow_dev_accuracy"], "majority": ft["majority_dev_accuracy"]},
        "finetune_seconds": ft["seconds"] + scratch["seconds"],
        "total_seconds": time.perf_counter() - t0,
    }
    write_json(os.path.join(out_dir, "summary.json"), wf._jsonable(summary))
    try:
        from .train.plot import plot_runs

        plot_runs([os.path.join(out_dir, r) for r in ("pretrain", "finetune_pretrained", "finetune_scratch")],
                  os.path.join(out_dir, "curves.png"), title="tinymobilebert demo")
    except ImportError:
        pass
    acc = summary["dev_accuracy"]
    print_fn("")
    print_fn(f"  model            MobileBERT, {summary['parameters']:,} parameters, vocabulary {summary['vocab_size']}")
    print_fn(f"  pretraining      loss {summary['pretrain']['first_loss']:.2f} -> {summary['pretrain']['last_loss']:.2f}; "
             f"held-out MLM accuracy {summary['pretrain']['held_out_mlm_accuracy']:.1%}")
    print_fn(f"  {the_task.name:16s} dev accuracy: pretrained {acc['pretrained']:.1%} | from scratch "
             f"{acc['from_scratch']:.1%} | bag of words {acc['bag_of_words']:.1%} | majority {acc['majority']:.1%}")
    print_fn(f"  time             {summary['total_seconds']:.0f}s in all; results in {out_dir}")
    return summary


def _first_loss(out_dir):
    from .train import read_log

    train = [r for r in read_log(os.path.join(out_dir, "pretrain")) if r["split"] == "train"]
    return train[0]["loss"] if train else float("nan")
