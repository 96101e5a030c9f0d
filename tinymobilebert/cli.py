"""The command line: ``python -m tinymobilebert {demo,pretrain,finetune,evaluate,plot,dynabert,bench}``.

Every sub-command has ``--help``. The work itself lives in ``workflows`` and ``demo``; this file
only turns arguments into calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _add_common(p, steps, lr, warmup):
    p.add_argument("--out", required=True, help="the run folder (log.jsonl, checkpoints/, model/)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per sequence, specials included (default 64)")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--warmup", type=int, default=warmup, help=f"linear warm-up steps (default {warmup})")
    p.add_argument("--seed", type=int, default=0, help="seeds data, masking, initialisation, dropout (default 0)")
    p.add_argument("--eval-every", type=int, default=100, help="evaluate every N steps (default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config_overrides(text):
    if text is None:
        return {}
    if os.path.isfile(text):
        with open(text) as f:
            return json.load(f)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"--config must be a JSON file or a JSON object, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tinymobilebert",
                                     description="MobileBERT from scratch in NumPy + Numba: train, fine-tune, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("demo", help="the whole pipeline on the built-in corpus in a few minutes",
                       description="Build a vocabulary on the built-in corpus (the Python standard library's "
                                   "docstrings), pretrain a small MobileBERT with MLM and NSP, fine-tune it on a "
                                   "task that needs word order, and compare with the same model trained from "
                                   "scratch and a bag-of-words baseline.")
    p.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=None, help="override the pretraining length")
    p.add_argument("--finetune-steps", type=int, default=None, help="override the fine-tuning length")
    p.add_argument("--task", default="word_order", help="fine-tuning task (default word_order)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("pretrain", help="pretrain a MobileBERT with MLM and NSP",
                       description="Pretrain on the built-in corpus or your text. Resumable: rerun with --resume.")
    _add_common(p, steps=800, lr=4e-3, warmup=60)
    p.add_argument("--corpus", default=None, help="a .txt/.md file or a folder of them (default: built-in corpus)")
    p.add_argument("--vocab", default=None, help="a vocab.txt (or folder holding one); default: train one")
    p.add_argument("--vocab-size", type=int, default=4000, help="size of the trained vocabulary (default 4000)")
    p.add_argument("--config", default=None, type=_config_overrides,
                   help='MobileBertConfig fields as JSON (a file or inline, e.g. \'{"num_hidden_layers": 6}\')')
    p.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    p.add_argument("--no-nsp", action="store_true", help="MLM only (single segments)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")

    p = sub.add_parser("finetune", help="fine-tune a sequence classifier",
                       description="Fine-tune a pretrained model (--model) or train one from scratch "
                                   "(--from-scratch with a vocabulary) on a task.")
    _add_common(p, steps=300, lr=1e-3, warmup=30)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a pretrained model directory (e.g. RUN/model)")
    src.add_argument("--from-scratch", metavar="VOCAB", help="train from scratch with this vocab.txt")
    p.add_argument("--task", default="word_order",
                   help="word_order, next_sentence, sentence_order, or a GLUE-style TSV/CSV file or folder")
    p.add_argument("--corpus", default=None, help="text to build word_order/next_sentence/sentence_order from")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean", help="classifier pooling (default mean)")
    p.add_argument("--config", default=None, type=_config_overrides, help="config overrides for --from-scratch")

    p = sub.add_parser("evaluate", help="evaluate a model directory",
                       description="Held-out MLM accuracy on a corpus (a pretraining model) or accuracy on a "
                                   "task's dev set (a classifier).")
    p.add_argument("--model", required=True, help="a model directory")
    p.add_argument("--task", default=None, help="a task (classifier); without it, MLM on --corpus")
    p.add_argument("--corpus", default=None, help="text for the MLM evaluation or the task (default built-in)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("plot", help="plot loss and metric curves of runs to a PNG",
                       description="Training losses and held-out metrics of one or more runs (their log.jsonl).")
    p.add_argument("runs", nargs="+", help="run folders or log.jsonl files")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default curves.png)")
    p.add_argument("--smooth", type=int, default=20, help="moving-average window for training losses")

    from .dynabert.command import add_parser as add_dynabert_parser

    add_dynabert_parser(sub)

    sub.add_parser("bench", help="benchmarks against PyTorch and the NumPy twins (see benchmarks/README.md)",
                   add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .benchmark import main as bench_main

        bench_main(argv[1:])  # returns the results dict, not an exit status
        return 0
    args = build_parser().parse_args(argv)
    progress = False if getattr(args, "no_progress", False) else None
    if args.command == "dynabert":
        from .dynabert.command import run_command

        run_command(args, progress)
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, seed=args.seed, pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                 task=args.task, progress=progress)
        return 0
    from . import workflows as wf

    if args.command == "pretrain":
        r = wf.pretrain(args.out, corpus=args.corpus, vocab=args.vocab, vocab_size=args.vocab_size, config=args.config,
                        steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                        warmup=args.warmup, optimizer=args.optimizer, seed=args.seed, eval_every=args.eval_every,
                        save_every=args.save_every, resume=args.resume, progress=progress, nsp=not args.no_nsp)
        dev = r["last_dev"] or {}
        print(f"pretrained {r['parameters']:,} parameters for {r['steps']} steps in {r['seconds']:.0f}s; "
              f"held-out MLM accuracy {dev.get('mlm_accuracy', float('nan')):.3f}; model in {args.out}/model")
    elif args.command == "finetune":
        from .tokenizer import BertTokenizer

        docs = wf.load_documents(args.corpus) if args.task in wf.TASKS else None
        task = wf.load_task(args.task, docs, seed=args.seed)
        tok = BertTokenizer.from_pretrained(args.from_scratch) if args.from_scratch else None
        r = wf.finetune(args.out, task, model_dir=args.model, tokenizer=tok, config=args.config, steps=args.steps,
                        batch_size=args.batch_size, max_length=args.max_length, lr=args.lr, warmup=args.warmup,
                        seed=args.seed, eval_every=args.eval_every, pooling=args.pooling, progress=progress)
        print(f"{r['task']}: dev accuracy {r['dev_accuracy']:.3f} (bag of words {r['bow_dev_accuracy']:.3f}, "
              f"majority {r['majority_dev_accuracy']:.3f}); model in {args.out}/model")
    elif args.command == "evaluate":
        print(json.dumps(wf.evaluate(args.model, task=args.task, corpus=args.corpus, max_length=args.max_length,
                                     batch_size=args.batch_size, seed=args.seed), indent=2))
    elif args.command == "plot":
        from .train.plot import plot_runs

        print(plot_runs(args.runs, args.out, smooth_window=args.smooth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
