"""``python -m tinymobilebert dynabert``: the command line of ``run.run_dynabert``."""

from __future__ import annotations

from .run import DEFAULTS

DESCRIPTION = """\
DynaBERT (Hou et al. 2020) on a classification task: importance, rewiring, stage 1 (every width
distilled from the fine-tuned teacher), stage 2 (every width x depth distilled from the stage-1
model), optional stage 3 (every sub-network fine-tuned on the labels), then the width x depth
table: dev accuracy, parameters, FLOPs per token, latency at batch 1 and 32. Each batch's
sub-network losses are summed into the same gradients before one clip and one optimizer step.
--model is a fine-tuned classifier (the teacher) or a pretrained directory (fine-tuned first
into OUT/teacher). Resumable: rerun with --resume."""


def add_parser(sub):
    d = DEFAULTS
    p = sub.add_parser("dynabert", help="DynaBERT: one model run at any width and depth", description=DESCRIPTION)
    p.add_argument("--model", help="a fine-tuned classifier directory, or a pretrained one (required for a new run)")
    p.add_argument("--task", help="word_order (default), next_sentence, sentence_order, or a GLUE-style TSV/CSV file "
                                  "or folder")
    p.add_argument("--corpus", help="text to build the built-in tasks from (default: built-in corpus)")
    p.add_argument("--dev-fraction", type=float, help="share held out for dev (default: the task's)")
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--widths", help="width multipliers, comma list (default "
                                    f"{','.join(f'{w:g}' for w in sorted(d['widths']))})")
    p.add_argument("--depths", help="depth multipliers, comma list (default "
                                    f"{','.join(f'{x:g}' for x in sorted(d['depths']))})")
    p.add_argument("--teacher-steps", type=int, default=None,
                   help=f"fine-tuning steps when --model is pretrained (default {d['teacher_steps']})")
    p.add_argument("--teacher-lr", type=float, default=None,
                   help=f"learning rate of that fine-tuning (default {d['teacher_lr']})")
    p.add_argument("--width-steps", type=int, default=None, help=f"stage 1 steps (default {d['width_steps']})")
    p.add_argument("--depth-steps", type=int, default=None, help=f"stage 2 steps (default {d['depth_steps']})")
    p.add_argument("--final-steps", type=int, default=None,
                   help="stage 3 steps: every sub-network fine-tuned on the labels (default 0: off)")
    p.add_argument("--batch-size", type=int, default=None, help=f"(default {d['batch_size']})")
    p.add_argument("--max-length", type=int, default=None, help=f"tokens per sequence (default {d['max_length']})")
    p.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate of the stages (default {d['lr']})")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps of each stage (default 0, as DynaBERT)")
    p.add_argument("--width-hidden-weight", type=float, default=None,
                   help=f"stage 1's hidden-state MSE weight (default {d['width_hidden_weight']})")
    p.add_argument("--depth-hidden-weight", type=float, default=None,
                   help=f"stage 2's hidden-state MSE weight (default {d['depth_hidden_weight']})")
    p.add_argument("--stage2-teacher", choices=["full", "student"], default=None,
                   help="stage 2's teacher: the stage-1 model at full width (the released code, default) or at "
                        "the student's width (the paper)")
    p.add_argument("--importance-split", choices=["dev", "train"], default=None,
                   help="data for head/neuron importance (default dev, as the original)")
    p.add_argument("--importance-accumulate-gradients", action="store_true", default=None,
                   help="never zero gradients between importance batches (what the original code does)")
    p.add_argument("--augment", type=int, default=None, metavar="N",
                   help="N MLM word-replacement copies of each training example for stages 1-2 (default 0: off)")
    p.add_argument("--augment-mlm", default=None, metavar="DIR",
                   help="the pretrained model (with an MLM head) that augments (default: --model)")
    p.add_argument("--eval-every", type=int, default=None, help=f"(default {d['eval_every']})")
    p.add_argument("--save-every", type=int, default=None, help=f"checkpoint every N steps (default {d['save_every']})")
    p.add_argument("--latency-repeats", type=int, default=None,
                   help=f"timed passes per latency cell (default {d['latency_repeats']}; 0: no latency)")
    p.add_argument("--seed", type=int, default=None, help="seeds the task, data order, dropout (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, with its recorded settings")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out, then start a new one")
    return p


SETTINGS = ("widths", "depths", "teacher_steps", "teacher_lr", "width_steps", "depth_steps", "final_steps", "batch_size",
            "max_length", "lr", "warmup", "width_hidden_weight", "depth_hidden_weight", "stage2_teacher",
            "importance_split", "importance_accumulate_gradients", "augment", "augment_mlm", "eval_every",
            "save_every", "latency_repeats", "seed", "dev_fraction")


def run_command(args, progress) -> None:
    from .run import run_dynabert
    from .table import format_table

    settings = {k: getattr(args, k) for k in SETTINGS}
    r = run_dynabert(args.out, args.model, args.task, corpus=args.corpus, resume=args.resume, overwrite=args.overwrite,
                     progress=progress, progress_every=args.progress_every, **settings)
    print(f"\n{r['task']}: teacher dev accuracy {r['teacher_dev'].get('accuracy', float('nan')):.4f}; "
          f"{r['seconds']:.0f} s ({r['cpu_seconds']:.0f} s CPU)\n")
    print(format_table(r["table"]))
    last = "stage3" if "stage3" in r["stages"] else "stage2"
    print(f"\nthe trained model: {args.out}/{last}/model (any width x depth); the table: {args.out}/table.md")
