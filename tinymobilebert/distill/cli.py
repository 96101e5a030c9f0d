"""``python -m tinymobilebert distill``: the arguments and the call (the work is in ``run.py``).

Two modes. Pre-training distillation (the default): a student preset learns from a pretrained
teacher (``pretrain --model ib_bert_small_teacher``) by PKT, JKT or AKT, then PD. Task
distillation (``--task``): a pretrained student directory is fine-tuned from a fine-tuned
teacher's logits.
"""

from __future__ import annotations

import argparse
import json
import os

from .run import DEFAULTS

D = DEFAULTS


def _int_list(text):
    try:
        return [None if x.strip().lower() == "none" else int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers (or none), got {text!r}") from None


def _mapping(text):
    return text if text in ("uniform", "last") else _int_list(text)


def _float_list(n):
    def parse(text):
        try:
            values = [float(x) for x in text.split(",")]
        except ValueError:
            values = []
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return values
    return parse


def _losses(text):
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in ("fmt", "at", "mv")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--losses takes fmt, at, mv (comma-separated), got {text!r}")
    return names


def _json_object(text):
    if os.path.isfile(text):
        with open(text) as f:
            return json.load(f)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object or a JSON file, got {text!r}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "distill", help="distil a MobileBERT student from an IB-BERT teacher (PKT/JKT/AKT, then PD)",
        description="Knowledge transfer as MobileBERT trains: layer-wise transfer of feature maps (FMT), attention "
                    "(AT) and hidden-state mean/variance, progressively (pkt: one stage per layer, learning-rate "
                    "gates 0/1/0.1 with a warm-up in every stage), jointly (jkt) or as auxiliary terms of PD (akt), "
                    "then pre-training distillation (PD: MLM against 0.5 one-hot + 0.5 teacher softmax, plus NSP). "
                    "With --task: task distillation of a fine-tuned teacher's logits. Resumable with --resume.")
    p.add_argument("--teacher", required=True, help="the teacher: a run folder (pretrain --model "
                   "ib_bert_small_teacher) or a model directory; with --task, a fine-tuned classifier")
    p.add_argument("--out", required=True, help="the run folder (run.json, log.jsonl, checkpoints/, model/)")
    p.add_argument("--strategy", choices=["pkt", "jkt", "akt", "pd"], default=D["strategy"],
                   help="pkt (progressive, default), jkt (joint), akt (auxiliary, no layer-wise stage), pd (PD only)")
    p.add_argument("--no-pd", action="store_true", help="stop after the layer-wise stage (pkt, jkt)")
    p.add_argument("--student", default=None, help=f"a config preset (default {D['student']}); with --task, "
                   "a pretrained student directory (e.g. a distill run's folder)")
    p.add_argument("--student-config", type=_json_object, default=None,
                   help="student config fields overriding the preset's, as JSON (inline or a file)")
    p.add_argument("--steps-per-layer", type=int, default=D["steps_per_layer"],
                   help=f"PKT steps per stage, one stage per layer; JKT runs layers x this (default {D['steps_per_layer']})")
    p.add_argument("--pd-steps", type=int, default=D["pd_steps"], help=f"PD steps (default {D['pd_steps']})")
    p.add_argument("--lr", type=float, default=D["lr"], help=f"base lr of the layer-wise stage (default {D['lr']}; "
                   "each layer's is 3 x bg x gate times this)")
    p.add_argument("--pd-lr", type=float, default=None, help="peak lr of PD (default: --lr)")
    p.add_argument("--pd-warmup", type=int, default=None, help="PD warm-up steps (default 10%% of --pd-steps)")
    p.add_argument("--losses", type=_losses, default=D["losses"], help="layer-wise terms: fmt,at,mv (default all)")
    p.add_argument("--mapping", type=_mapping, default=D["mapping"],
                   help="student layer -> teacher layer: uniform (default), last, or a list like 1,3,5,7")
    p.add_argument("--weights", type=_float_list(4), default=D["weights"],
                   help="FMT,AT,mean,variance weights before division by the layer count (default 100,1,5000,5)")
    p.add_argument("--alpha", type=float, default=D["alpha"],
                   help="ground-truth share of the MLM target in PD; with --task, of the gold labels (default 0.5)")
    p.add_argument("--temperature", type=float, default=D["temperature"],
                   help="PD: multiplies the teacher's last hidden states before its MLM head (the original's); "
                        "--task: divides both logits (default 1)")
    p.add_argument("--at-form", choices=["original", "kl"], default=D["at_form"],
                   help="attention transfer as cross-entropy (original) or KL (same gradient)")
    p.add_argument("--mv-teacher-layers", choices=["same", "all"], default=D["mv_teacher_layers"],
                   help="mean/variance against the paired teacher layer (same) or all of them (the released code)")
    p.add_argument("--padding-aware", action="store_true", help="leave padding out of the layer-wise terms")
    p.add_argument("--corpus", default=None, help="a .txt/.md file or folder (default: the built-in corpus)")
    p.add_argument("--task", default=None, help="task distillation on word_order, next_sentence, sentence_order or "
                   "GLUE-style data")
    p.add_argument("--steps", type=int, default=300, help="--task: optimizer steps (default 300)")
    p.add_argument("--batch-size", type=int, default=D["batch_size"])
    p.add_argument("--max-length", type=int, default=D["max_length"])
    p.add_argument("--seed", type=int, default=D["seed"])
    p.add_argument("--eval-every", type=int, default=D["eval_every"])
    p.add_argument("--save-every", type=int, default=D["save_every"])
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> dict:
    """Run the parsed ``distill`` command; prints a one-line summary and returns the run's summary."""
    from . import run as runs

    progress = False if args.no_progress else None
    if args.task is not None:
        from .. import workflows as wf

        if args.student is None:
            raise ValueError("--task needs --student: a pretrained student directory (e.g. a distill run's folder)")
        docs = wf.load_documents(args.corpus) if args.task in wf.TASKS else None
        task = wf.load_task(args.task, docs, seed=args.seed)
        r = runs.distill_task(args.out, task, args.teacher, args.student, alpha=args.alpha,
                              temperature=args.temperature, steps=args.steps, batch_size=args.batch_size,
                              max_length=args.max_length, seed=args.seed, eval_every=args.eval_every, progress=progress)
        print(f"{r['task']}: dev accuracy {r['dev_accuracy']:.3f} (teacher {r['teacher_dev_accuracy']:.3f}); "
              f"model in {args.out}/model")
        return r
    r = runs.distill(args.out, args.teacher, resume=args.resume, progress=progress, strategy=args.strategy,
                     pd=not args.no_pd, student=args.student or D["student"], student_config=args.student_config or {},
                     steps_per_layer=args.steps_per_layer, pd_steps=args.pd_steps, lr=args.lr, pd_lr=args.pd_lr,
                     pd_warmup=args.pd_warmup, losses=args.losses, mapping=args.mapping, weights=args.weights,
                     alpha=args.alpha, temperature=args.temperature, at_form=args.at_form,
                     mv_teacher_layers=args.mv_teacher_layers, padding_aware=args.padding_aware, corpus=args.corpus,
                     batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                     eval_every=args.eval_every, save_every=args.save_every)
    dev = r["last_dev"] or {}
    print(f"distilled {r['parameters']:,} parameters ({' -> '.join(r['stages'])}) in {r['seconds']:.0f}s: held-out "
          f"MLM accuracy {dev.get('mlm_accuracy', float('nan')):.3f} (teacher {r['teacher_dev']['mlm_accuracy']:.3f}); "
          f"model in {args.out}/model")
    return r
