"""``python -m tinymobilebert distill``: the arguments and the call (the work is in ``run.py``).

Two modes. Pre-training distillation (the default): a student preset learns from a pretrained
teacher (``pretrain --model ib_bert_small_teacher``) by PKT, JKT or AKT, then PD, where
``--token-dropping`` lets the student drop tokens (PKT, JKT or PD alone). Task
distillation (``--task``): a pretrained student directory is fine-tuned from a fine-tuned
teacher's logits.
"""

from __future__ import annotations

import argparse

from .run import DEFAULTS
from .steps import LAYERWISE_LOSSES

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
    bad = [x for x in names if x not in LAYERWISE_LOSSES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--losses takes fmt, at, mv (comma-separated), got {text!r}")
    return names


def add_parser(sub) -> None:
    """The ``distill`` sub-command (flags default to "not given", as every training command's)."""
    from ..cli import _add_output_flags, _config_overrides, _keep_ratio

    p = sub.add_parser(
        "distill", help="distil a MobileBERT student from an IB-BERT teacher (PKT/JKT/AKT, then PD)",
        description="Knowledge transfer as MobileBERT trains: layer-wise transfer of feature maps (FMT), attention "
                    "(AT) and hidden-state mean/variance, progressively (pkt: one stage per layer, learning-rate "
                    "gates 0/1/0.1 with a warm-up in every stage), jointly (jkt) or as auxiliary terms of PD (akt), "
                    "then pre-training distillation (PD: MLM against 0.5 one-hot + 0.5 teacher softmax, plus NSP). "
                    "--token-dropping: the student drops its least important tokens in PD (Hou et al. 2022). "
                    "With --task: task distillation of a fine-tuned teacher's logits. Resumable with --resume.")
    p.add_argument("--teacher", help="the teacher: a run folder (pretrain --model ib_bert_small_teacher) or a model "
                   "directory; with --task, a fine-tuned classifier (required; recorded for --resume)")
    p.add_argument("--out", required=True, help="the run folder (run.json, distillation.json, log.jsonl, "
                   "checkpoints/, model/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest intact "
                   "checkpoint, with its recorded settings")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out, then start a new one")
    p.add_argument("--strategy", choices=["pkt", "jkt", "akt", "pd"],
                   help="pkt (progressive, default), jkt (joint), akt (auxiliary, no layer-wise stage), pd (PD only)")
    p.add_argument("--no-pd", dest="pd", action="store_const", const=False,
                   help="stop after the layer-wise stage (pkt, jkt)")
    p.add_argument("--student", help=f"a config preset (default {D['student']}); with --task, a pretrained "
                   "student directory (e.g. a distill run's folder)")
    p.add_argument("--student-config", type=_config_overrides,
                   help="student config fields overriding the preset's, as JSON (inline or a file)")
    p.add_argument("--steps-per-layer", type=int,
                   help=f"PKT steps per stage, one stage per layer; JKT runs layers x this (default {D['steps_per_layer']})")
    p.add_argument("--pd-steps", type=int, help=f"PD steps (default {D['pd_steps']})")
    p.add_argument("--lr", type=float, help=f"base lr of the layer-wise stage (default {D['lr']}; each layer's is "
                   "3 x bg x gate times this); with --task, the peak lr (default 1e-3)")
    p.add_argument("--pd-lr", type=float, help="peak lr of PD (default: --lr)")
    p.add_argument("--pd-warmup", type=int, help="PD warm-up steps (default 10%% of --pd-steps)")
    p.add_argument("--losses", type=_losses, help="layer-wise terms: fmt,at,mv (default all)")
    p.add_argument("--mapping", type=_mapping,
                   help="student layer -> teacher layer: uniform (default), last, or a list like 1,3,5,7")
    p.add_argument("--weights", type=_float_list(4),
                   help="FMT,AT,mean,variance weights before division by the layer count (default 100,1,5000,5)")
    p.add_argument("--alpha", type=float,
                   help="ground-truth share of the MLM target in PD; with --task, of the gold labels (default 0.5)")
    p.add_argument("--temperature", type=float,
                   help="PD: multiplies the teacher's last hidden states before its MLM head (the original's); "
                        "--task: divides both logits (default 1)")
    p.add_argument("--at-form", choices=["original", "kl"],
                   help="attention transfer as cross-entropy (original, default) or KL (same gradient)")
    p.add_argument("--mv-teacher-layers", choices=["same", "all"],
                   help="mean/variance against the paired teacher layer (same, default) or all of them (the "
                        "released code)")
    p.add_argument("--padding-aware", action="store_const", const=True, help="leave padding out of the layer-wise terms")
    p.add_argument("--token-dropping", type=_keep_ratio, metavar="KEEP",
                   help="token dropping in PD: the student keeps this share of each sequence's tokens (e.g. 0.5) in "
                        "the layers after the split, the teacher reads them all (not with akt, --no-pd or --task; "
                        "default: no dropping)")
    p.add_argument("--split-layer", type=int, metavar="N",
                   help="token dropping's split layer in the student (default: layers/2 - 1)")
    p.add_argument("--corpus", help="a .txt/.md file or folder (default: the built-in corpus)")
    p.add_argument("--dev-fraction", type=float, help="share of the text held out (default 0.05)")
    p.add_argument("--split-seed", type=int, help="which documents are held out (default --seed: keep the teacher's)")
    p.add_argument("--task", help="task distillation on word_order, next_sentence, sentence_order or GLUE-style data")
    p.add_argument("--steps", type=int, help="--task: optimizer steps (default 300)")
    p.add_argument("--batch-size", type=int, help="sequences per step (default 32)")
    p.add_argument("--max-length", type=int, help="tokens per sequence (default 64)")
    p.add_argument("--seed", type=int, help="initialisation, data order and masking (default 0)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps, 0: only at the end (default 100)")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps, 0: only at the end (default 100)")
    _add_output_flags(p)


def run(args) -> dict:
    """Run the parsed ``distill`` command; prints a one-line summary and returns the run's summary."""
    from . import run as runs

    progress = False if args.no_progress else None
    common = dict(resume=args.resume, overwrite=args.overwrite, progress=progress, progress_every=args.progress_every)
    if args.task is not None:
        for flag, value in (("--token-dropping", args.token_dropping), ("--split-layer", args.split_layer)):
            if value is not None:
                raise ValueError(f"{flag} is for pre-training distillation (PD); task distillation (--task) does "
                                 "not drop tokens")
        r = runs.distill_task(args.out, args.task, args.teacher, args.student, alpha=args.alpha,
                              temperature=args.temperature, steps=args.steps, batch_size=args.batch_size,
                              max_length=args.max_length, lr=args.lr, seed=args.seed, corpus=args.corpus,
                              dev_fraction=args.dev_fraction, eval_every=args.eval_every, save_every=args.save_every,
                              **common)
        print(f"{r['task']}: dev accuracy {r['dev_accuracy']:.3f} (teacher {r['teacher_dev_accuracy']:.3f}); "
              f"model in {args.out}/model")
        return r
    r = runs.distill(args.out, args.teacher, strategy=args.strategy, pd=args.pd, student=args.student,
                     student_config=args.student_config, steps_per_layer=args.steps_per_layer, pd_steps=args.pd_steps,
                     lr=args.lr, pd_lr=args.pd_lr, pd_warmup=args.pd_warmup, losses=args.losses, mapping=args.mapping,
                     weights=args.weights, alpha=args.alpha, temperature=args.temperature, at_form=args.at_form,
                     mv_teacher_layers=args.mv_teacher_layers, padding_aware=args.padding_aware, corpus=args.corpus,
                     dev_fraction=args.dev_fraction, split_seed=args.split_seed, batch_size=args.batch_size,
                     max_length=args.max_length, seed=args.seed, eval_every=args.eval_every,
                     save_every=args.save_every, token_dropping=args.token_dropping, split_layer=args.split_layer,
                     **common)
    dev = r["last_dev"] or {}
    print(f"distilled {r['parameters']:,} parameters ({' -> '.join(r['stages'])}) in {r['seconds']:.0f}s: held-out "
          f"MLM accuracy {dev.get('mlm_accuracy', float('nan')):.3f} (teacher {r['teacher_dev']['mlm_accuracy']:.3f}); "
          f"model in {args.out}/model")
    if "token_importance" in r:
        print(f"held-out with token dropping: MLM accuracy {dev.get('dropping_mlm_accuracy', float('nan')):.3f}; "
              f"importance table in {args.out}/token_importance.safetensors")
    return r
