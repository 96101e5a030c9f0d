"""The command line: ``python -m tinymobilebert {demo,pretrain,distill,finetune,evaluate,plot,dynabert,bench,inspect}``.

Every sub-command has ``--help``. The work itself lives in ``workflows``, ``evaluation`` and
``demo``; this file only turns arguments into calls, and failures into one line on stderr,
``error: <what went wrong, naming the flag>``, with exit status 1 (2 for a command line argparse
rejects). ``--debug``, or the environment variable ``TINYMOBILEBERT_DEBUG=1``, shows the
traceback instead. Settings flags default to "not given" (their defaults are in the help), so that
``--resume`` can tell a flag the user gave from one left out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

# Errors that describe the user's input or files; any other exception is a bug, and says so.
_EXPECTED = (ValueError, OSError, KeyError, FloatingPointError)


def _threads(text):
    from .threads import check_policy

    try:
        return check_policy(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _config_overrides(text):
    if os.path.isfile(text):
        with open(text) as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as e:
                raise argparse.ArgumentTypeError(f"{text} is not valid JSON ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"expected a JSON file or a JSON object, got {text!r}") from None


_config_overrides.__name__ = "JSON"  # argparse names the type in its messages


def _keep_ratio(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share of tokens kept in (0, 1], got {text!r}")
    return value


_keep_ratio.__name__ = "share"


def _add_run_flags(p, command, steps, lr):
    """The flags every training command shares (defaults None: "not given", see the module notes)."""
    fraction = {"pretrain": "7.5%%", "finetune": "10%%"}[command]
    p.add_argument("--out", required=True, help="the run folder (run.json, log.jsonl, checkpoints/, model/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest intact "
                                                         "checkpoint, with its recorded settings")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out, then start a new one")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default {steps}; may be raised on --resume)")
    p.add_argument("--batch-size", type=int, help="sequences per step (default 32)")
    p.add_argument("--max-length", type=int, help="tokens per sequence, specials included (default 64)")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {lr})")
    p.add_argument("--warmup", type=int, help=f"linear warm-up steps (default {fraction} of --steps)")
    p.add_argument("--seed", type=int, help="seeds data, masking, initialisation, dropout (default 0)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps, 0: only at the end (default 100)")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps, 0: only at the end (default 100)")
    p.add_argument("--config", type=_config_overrides,
                   help='MobileBertConfig fields as JSON (a file or inline, e.g. \'{"num_hidden_layers": 6}\')')
    _add_output_flags(p)


def _add_output_flags(p):
    p.add_argument("--threads", default="auto", type=_threads, metavar="N|auto",
                   help="threads for BLAS and the kernels: a number, or 'auto' (default) to pick the fastest by "
                        "timing steps as the machine's load changes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--progress-every", type=int, default=None, metavar="N",
                   help="with output redirected, a progress line every N steps (default: every 5%% of the run)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tinymobilebert",
                                     description="MobileBERT from scratch in NumPy + Numba: train, fine-tune, evaluate. "
                                                 "Errors are one line; --debug (or TINYMOBILEBERT_DEBUG=1) shows the "
                                                 "traceback.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("demo", help="MobileBERT's story on the built-in corpus in a few minutes",
                       description="Pretrain a small IB-BERT teacher on the built-in corpus (the Python standard "
                                   "library's docstrings; reused by later runs into the same folder), distil a "
                                   "MobileBERT student from it (progressive knowledge transfer, then pre-training "
                                   "distillation), train the same student with MLM alone for the same CPU budget, "
                                   "fine-tune all of them on a task that needs word order, and print one table with a "
                                   "bag-of-words baseline. Writes summary.json (figures, times, machine, threads).")
    p.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--quick", action="store_const", const=True, default=None,
                   help="a shorter teacher, budget and fine-tuning (under 3 minutes)")
    p.add_argument("--budget", type=int, default=None, metavar="STEPS",
                   help="each student's budget: the CPU time of this many steps of the student trained alone "
                        "(default 300, --quick 100; see distill/budget.py)")
    p.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's pretraining length")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps at each of three learning "
                   "rates (default 150, --quick 50)")
    p.add_argument("--task", default=None, help="fine-tuning task (default word_order)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.add_argument("--overwrite", action="store_true", help="delete the demo's earlier results in --out first "
                   "(its teacher is kept and reused)")
    _add_output_flags(p)

    p = sub.add_parser("pretrain", help="pretrain a MobileBERT with MLM and NSP",
                       description="Pretrain on the built-in corpus or your text. Resumable: rerun with --resume.")
    _add_run_flags(p, "pretrain", steps=800, lr=4e-3)
    p.add_argument("--corpus", help="a .txt/.md file or a folder of them (default: built-in corpus)")
    p.add_argument("--dev-fraction", type=float, help="share of the text, in whole documents, held out for the "
                                                      "MLM evaluation; 0: none (default 0.05)")
    p.add_argument("--vocab", help="a vocab.txt (or folder holding one); default: train one")
    p.add_argument("--vocab-size", type=int, help="size of the trained vocabulary (default 4000)")
    p.add_argument("--model", metavar="PRESET", help="a config preset: mobilebert_small_student (default), its "
                   "teacher ib_bert_small_teacher, or any of tinymobilebert.config.PRESETS (--config overrides it)")
    p.add_argument("--optimizer", choices=["adamw", "lamb"], help="default adamw")
    p.add_argument("--no-nsp", dest="nsp", action="store_const", const=False, help="MLM only (single segments)")
    p.add_argument("--token-dropping", type=_keep_ratio, metavar="KEEP",
                   help="token dropping: keep this share of each sequence's tokens (e.g. 0.5) in the layers after "
                        "the split; the rest rejoin before the last layer (default: no dropping)")
    p.add_argument("--split-layer", type=int, metavar="N", help="token dropping's split layer (default: layers/2 - 1)")

    p = sub.add_parser("finetune", help="fine-tune a sequence classifier",
                       description="Fine-tune a pretrained model (--model) or train one from scratch "
                                   "(--from-scratch with a vocabulary) on a task. Resumable: rerun with --resume.")
    _add_run_flags(p, "finetune", steps=300, lr=1e-3)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="a pretrained model directory (e.g. RUN/model)")
    src.add_argument("--from-scratch", metavar="VOCAB", help="train from scratch with this vocab.txt")
    p.add_argument("--task", help="word_order (default), next_sentence, sentence_order, or a GLUE-style TSV/CSV "
                                  "file or folder")
    p.add_argument("--corpus", help="text to build word_order/next_sentence/sentence_order from (default built-in)")
    p.add_argument("--dev-fraction", type=float, help="share held out for dev: documents of a built task (default "
                                                      "0.2), rows of a file without a dev file (default 0.1)")
    p.add_argument("--pooling", choices=["mean", "cls"], help="classifier pooling (default mean)")

    p = sub.add_parser("evaluate", help="evaluate a model directory",
                       description="Held-out MLM accuracy (a pretraining model) or dev accuracy (a classifier), "
                                   "on the data and with the settings its run used (from run.json beside the "
                                   "model), so the figures match the run's log. Flags override them.")
    p.add_argument("--model", required=True, help="a model directory (RUN/model, a checkpoint, any transformers dir) "
                   "or a run folder (its model; a dynabert run's supernet, evaluated at full width and depth)")
    p.add_argument("--task", help="a task (classifier); default: its run's")
    p.add_argument("--corpus", help="text for the MLM evaluation or the task (default: the run's, else built-in)")
    p.add_argument("--max-length", type=int, help="default: the run's, else 64")
    p.add_argument("--batch-size", type=int, help="default: the run's, else 32 (MLM) / 128 (classifier)")
    p.add_argument("--seed", type=int, help="default: the run's, else 0")
    p.add_argument("--dev-fraction", type=float, help="default: the run's")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")

    p = sub.add_parser("plot", help="plot loss and metric curves of runs to a PNG",
                       description="Training losses and held-out metrics of one or more runs (their log.jsonl).")
    p.add_argument("runs", nargs="+", help="run folders or log.jsonl files")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default curves.png)")
    p.add_argument("--smooth", type=int, default=20, help="moving-average window for training losses")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")

    from .distill.cli import add_parser as add_distill_parser

    add_distill_parser(sub)

    from .dynabert.command import add_parser as add_dynabert_parser

    _add_output_flags(add_dynabert_parser(sub))

    sub.add_parser("bench", help="benchmarks against PyTorch and the NumPy twins (see benchmarks/README.md)",
                   add_help=False)
    sub.add_parser("inspect", help="per-layer activation statistics of a model directory, NaN/inf and "
                                   "float16/int8 range warnings", add_help=False)
    return parser


def _progress(args):
    return False if args.no_progress else None


def _pretrain(args):
    from . import workflows as wf

    r = wf.pretrain(args.out, corpus=args.corpus, vocab=args.vocab, vocab_size=args.vocab_size, model=args.model,
                    config=args.config,
                    steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                    warmup=args.warmup, optimizer=args.optimizer, seed=args.seed, eval_every=args.eval_every,
                    save_every=args.save_every, nsp=args.nsp, dev_fraction=args.dev_fraction, resume=args.resume,
                    overwrite=args.overwrite, progress=_progress(args), progress_every=args.progress_every,
                    token_dropping=args.token_dropping, split_layer=args.split_layer)
    dev = r["last_dev"] or {}
    if "token_importance" in r:
        from .tokenizer import BertTokenizer

        print(r["token_importance"].format_extremes(BertTokenizer.from_pretrained(args.out), n=8))
        print(f"held-out with token dropping: MLM accuracy {dev.get('dropping_mlm_accuracy', float('nan')):.3f}, "
              f"loss {dev.get('dropping_mlm_loss', float('nan')):.3f}; without (as the saved model runs): "
              f"loss {dev.get('mlm_loss', float('nan')):.3f}")
    print(f"pretrained {r['parameters']:,} parameters for {r['steps']} steps in {r['seconds']:.0f}s; "
          f"held-out MLM accuracy {dev.get('mlm_accuracy', float('nan')):.3f}; model in {args.out}/model")


def _finetune(args):
    from . import workflows as wf

    r = wf.finetune(args.out, args.task, corpus=args.corpus, model_dir=args.model, from_scratch=args.from_scratch,
                    config=args.config, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                    lr=args.lr, warmup=args.warmup, seed=args.seed, dev_fraction=args.dev_fraction,
                    eval_every=args.eval_every, save_every=args.save_every, pooling=args.pooling, resume=args.resume,
                    overwrite=args.overwrite, progress=_progress(args), progress_every=args.progress_every)
    print(f"{r['task']}: dev accuracy {r['dev_accuracy']:.3f} (bag of words {r['bow_dev_accuracy']:.3f}, "
          f"majority {r['majority_dev_accuracy']:.3f}); model in {args.out}/model")


def _evaluate(args):
    from .evaluation import evaluate
    from .train.progress import notify

    r = evaluate(args.model, task=args.task, corpus=args.corpus, max_length=args.max_length,
                 batch_size=args.batch_size, seed=args.seed, dev_fraction=args.dev_fraction, report=notify)
    print(json.dumps({k: v for k, v in r.items() if k not in ("used", "run")}, indent=2))


def _demo(args):
    from .demo import run_demo

    run_demo(args.out, seed=args.seed, quick=args.quick, budget_steps=args.budget, teacher_steps=args.teacher_steps,
             finetune_steps=args.finetune_steps, task=args.task, progress=_progress(args),
             progress_every=args.progress_every, resume=args.resume, overwrite=args.overwrite)


def _plot(args):
    from .train.plot import plot_runs

    print(plot_runs(args.runs, args.out, smooth_window=args.smooth))


def _distill(args):
    from .distill.cli import run

    run(args)


def _dynabert(args):
    from .dynabert.command import run_command

    run_command(args, _progress(args))


COMMANDS = {"demo": _demo, "pretrain": _pretrain, "distill": _distill, "finetune": _finetune, "evaluate": _evaluate,
            "plot": _plot, "dynabert": _dynabert}


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split()) or type(error).__name__
    if not isinstance(error, _EXPECTED):
        text = f"{type(error).__name__}: {text} (an internal error; --debug shows where)"
    return text


def _short_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .benchmark import main as bench_main

        bench_main(argv[1:])  # returns the results dict, not an exit status
        return 0
    if argv and argv[0] == "inspect":
        from .inspection import main as inspect_main

        return inspect_main(argv[1:])
    debug = "--debug" in argv or os.environ.get("TINYMOBILEBERT_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args(argv)  # a malformed command line: argparse's one-line error, exit 2
    if getattr(args, "threads", None) is not None:
        from .threads import set_default_policy

        set_default_policy(args.threads)  # every Trainer of this run (tinymobilebert.threads)
    previous = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _short_warning
    try:
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        resumable = args.command in ("pretrain", "distill", "finetune", "demo", "dynabert")
        print("interrupted" + ("; --resume continues from the last checkpoint" if resumable else ""),
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error becomes one line, unless --debug
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
