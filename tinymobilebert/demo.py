"""The demo: MobileBERT's story on the built-in corpus, in a few minutes on a laptop.

1. Documents: the Python standard library's docstrings (no download). The fine-tuning task's
   dev documents are set aside first, so no model pretrains on a dev sentence; 5% of the rest
   (whole documents) are held out for the masked-LM evaluation.
2. The teacher: a small IB-BERT (``config.ib_bert_small_teacher``: an inverted bottleneck, 2.4x
   the student's parameters) pretrained with MLM + NSP, with its WordPiece vocabulary. A teacher
   trained by an earlier demo into the same folder with the same recipe is reused, and the demo
   says so (``--overwrite`` keeps it: one teacher serves many students).
3. Equal budgets: each student gets the process CPU seconds of ``budget_steps`` (300) steps of
   the student trained alone (``distill/budget.py``: step costs measured on a few batches, each
   PKT stage's apart, so the distilled student, whose steps carry the teacher's forward pass,
   runs fewer steps; the step counts hardly depend on the machine). Recorded in ``{out}/budget.json`` (a resumed demo
   reuses it).
4. The distilled student (``config.mobilebert_small_student``): progressive knowledge transfer
   (one stage per layer: feature maps, attentions, mean and variance), then pre-training
   distillation (MLM against half one-hot, half teacher softmax, plus NSP).
5. The same student trained with MLM + NSP alone, for the same budget.
6. Each fine-tuned on a task that needs word order (a bag of words is at chance by construction),
   at three learning rates (the models want different ones: the post-LayerNorm teacher a low one,
   the distilled student a high one), the best dev accuracy reported for each alike;
   one table: parameters, FLOPs per token, measured inference latency, held-out MLM accuracy,
   dev accuracy, training time, with the bag-of-words baseline. Also in ``{out}/summary.json``
   (with the machine and thread counts), curves in ``{out}/curves.png``.

The demo's folder is a run folder like any other (``train/run_folder.py``): a second demo into
it needs ``overwrite`` or ``resume``. The README's figures are rendered from summary.json by
``benchmarks/readme_figures.py``.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from . import workflows as wf
from .checkpoint import write_json
from .train.run_folder import RunFolder

FINETUNE_LRS = (3e-4, 1e-3, 3e-3)  # every model is fine-tuned at each; the best dev accuracy is reported
DEFAULTS = {"seed": 0, "task": "word_order", "quick": False, "budget_steps": 300, "teacher_steps": 1000,
            "finetune_steps": 150, "finetune_lrs": list(FINETUNE_LRS)}
QUICK = {"budget_steps": 100, "teacher_steps": 300, "finetune_steps": 100, "finetune_lrs": [1e-3]}  # unless given
# The recipe (README "Knowledge transfer"): the teacher's lr (post-LayerNorm IB-BERT diverges at
# 3e-3 here), the layer-wise stage's (the original's 1.5e-3) and its share of the distilled
# student's budget, PD's lr and the student alone's (4e-3: the best of those tried for each).
RECIPE = {"teacher_lr": 2e-3, "layerwise_share": 0.3, "layerwise_lr": 1.5e-3, "pd_lr": 4e-3, "mlm_lr": 4e-3}
TEACHER, STUDENT = "ib_bert_small_teacher", "mobilebert_small_student"
TEACHER_CONFIG = {"hidden_dropout_prob": 0.0}  # a short pretraining learns faster without dropout
BATCH, LENGTH, EVAL_BATCHES = 32, 64, 20
PARTS = ("distilled", "mlm_only", "budget.json") + tuple(
    f"finetune_{m}_lr{lr:g}" for m in ("teacher", "distilled", "mlm_only") for lr in FINETUNE_LRS)


def run_demo(out_dir="runs/demo", *, seed=None, quick=None, budget_steps=None, teacher_steps=None,
             finetune_steps=None, task=None, progress=None, progress_every=None, resume=False, overwrite=False,
             print_fn=print) -> dict:
    """Run the demo (see the module notes); returns the summary dict."""
    from . import distill
    from .distill.budget import first_batches, measure_budget

    t0 = time.perf_counter()
    given = dict(seed=seed, quick=quick, budget_steps=budget_steps, teacher_steps=teacher_steps,
                 finetune_steps=finetune_steps, task=task)
    defaults = {**DEFAULTS, **(QUICK if quick else {})}
    run = RunFolder(out_dir, "demo", given, defaults, resume=resume, overwrite=overwrite, entries=PARTS)
    s = run.settings
    docs = wf.load_documents(None)
    the_task = wf.load_task(s["task"], docs, seed=s["seed"])
    dev_names = set(the_task.documents["dev"])
    pre_docs = [d for d in docs if d.name not in dev_names]
    print_fn(f"corpus: {len(docs)} documents ({sum(len(d.text) for d in docs) / 1e6:.1f} MB); task {the_task.name}: "
             f"{len(the_task.train)} train / {len(the_task.dev)} dev examples from separate documents")
    run.start()
    common = dict(progress=progress, progress_every=progress_every)

    def part(name):  # a part's folder, resumed when the demo is resumed and the part had started
        folder = os.path.join(out_dir, name)
        return folder, {"resume": resume and os.path.isdir(folder)}

    # ---- 1. the teacher (trained once, then reused)
    teacher_dir = os.path.join(out_dir, "teacher")
    recipe = {"model": TEACHER, "steps": s["teacher_steps"], "lr": RECIPE["teacher_lr"], "seed": s["seed"],
              "config": TEACHER_CONFIG, "task": s["task"]}
    done = _trained_teacher(teacher_dir, recipe)
    reused = done is not None
    if reused:
        print_fn(f"teacher: reusing {teacher_dir}, trained by an earlier demo with this recipe ({done['seconds']:.0f}s); "
                 "delete that folder to train it again")
    else:
        print_fn(f"teacher: pretraining an IB-BERT ({TEACHER}) for {s['teacher_steps']} steps; later demos into "
                 f"{out_dir} reuse it")
        T = s["teacher_steps"]
        pre = wf.pretrain(teacher_dir, docs=pre_docs, model=TEACHER, config=TEACHER_CONFIG, steps=T,
                          lr=RECIPE["teacher_lr"], seed=s["seed"], eval_every=max(T // 4, 1), save_every=max(T // 2, 1),
                          batch_size=BATCH, max_length=LENGTH, resume=resume and os.path.isdir(teacher_dir),
                          overwrite=not resume and os.path.isdir(teacher_dir), **common)
        done = {**recipe, "seconds": pre["seconds"], "cpu_seconds": pre["cpu_seconds"]}
        write_json(os.path.join(teacher_dir, "demo_teacher.json"), done)
    teacher = distill.load_teacher(teacher_dir)
    tok = teacher.tokenizer
    student_cfg = distill.run.student_config(STUDENT, len(tok))
    train_docs, dev_docs = wf.train_dev_split(pre_docs, dev_fraction=0.05, seed=s["seed"])
    dev_data = wf.PretrainingData(dev_docs, tok, max_length=LENGTH, seed=s["seed"] + 1)

    # ---- 2. equal budgets (measured once; a resumed demo keeps them)
    budget_path = os.path.join(out_dir, "budget.json")
    if resume and os.path.isfile(budget_path):
        with open(budget_path) as f:
            budget = distill.budget.Budget(**json.load(f))
    else:  # the first training batches, as the students will see them
        train_data = wf.PretrainingData(train_docs, tok, max_length=LENGTH, seed=s["seed"])
        budget = measure_budget(teacher, student_cfg, first_batches(train_data, BATCH), s["budget_steps"],
                                layerwise_share=RECIPE["layerwise_share"], mlm_lr=RECIPE["mlm_lr"], seed=s["seed"])
        write_json(budget_path, budget.as_dict())
    L = student_cfg.num_hidden_layers
    print_fn(f"budget: {budget.cpu_seconds:.0f} CPU seconds per student (the cost of {s['budget_steps']} steps of "
             f"the student alone); a step costs {budget.mlm_step_cpu * 1e3:.0f} ms alone, "
             f"{budget.layerwise_step_cpu * 1e3:.0f} ms (PKT, the mean over its stages) and "
             f"{budget.pd_step_cpu * 1e3:.0f} ms (PD) with the "
             f"teacher: {budget.mlm_steps} steps alone, {L} x {budget.steps_per_layer} + {budget.pd_steps} distilled")

    # ---- 3. the distilled student and the student trained alone
    folder, how = part("distilled")
    n = L * budget.steps_per_layer + budget.pd_steps
    dist = distill.distill(folder, teacher_dir, docs=pre_docs, strategy="pkt", student=STUDENT,
                           steps_per_layer=budget.steps_per_layer, pd_steps=budget.pd_steps, lr=RECIPE["layerwise_lr"],
                           pd_lr=RECIPE["pd_lr"], seed=s["seed"], batch_size=BATCH, max_length=LENGTH,
                           eval_every=max(n // 4, 1), save_every=max(n // 2, 1), **common, **how)
    folder, how = part("mlm_only")
    n = budget.mlm_steps
    alone = wf.pretrain(folder, docs=pre_docs, vocab=os.path.join(teacher_dir, "vocab.txt"), model=STUDENT, steps=n,
                        lr=RECIPE["mlm_lr"], seed=s["seed"], eval_every=max(n // 4, 1), save_every=max(n // 2, 1),
                        batch_size=BATCH, max_length=LENGTH, **common, **how)

    # ---- 4. fine-tune all, measure all
    dev_batches = wf.pretraining_dev_batches(dev_data, BATCH, EVAL_BATCHES)
    rows = []
    for name, key, seconds, cpu in (("IB-BERT teacher", "teacher", done["seconds"], done.get("cpu_seconds")),
                                    ("MobileBERT, distilled (PKT + PD)", "distilled", dist["seconds"],
                                     dist["cpu_seconds"]),
                                    ("MobileBERT, MLM only", "mlm_only", alone["seconds"], alone["cpu_seconds"])):
        folder, how = os.path.join(out_dir, "finetune_" + key), {"resume": resume}  # + "_lr{lr}"
        rows.append(_measure(name, os.path.join(out_dir, key), folder, how, s, dev_batches, seconds, cpu,
                             bow=not rows, common=common, print_fn=print_fn))
    rows[0]["reused"] = reused
    majority = [r.pop("majority_dev_accuracy") for r in rows][0]
    summary = {"task": the_task.name, "vocab_size": len(tok), "settings": s, "recipe": RECIPE, "budget": budget.as_dict(),
               "rows": rows, "bag_of_words_dev_accuracy": rows[0].pop("bow_dev_accuracy"),
               "majority_dev_accuracy": majority,
               "distilled_minus_mlm_only": rows[1]["held_out_mlm_accuracy"] - rows[2]["held_out_mlm_accuracy"],
               "teacher_steps": s["teacher_steps"], "total_seconds": time.perf_counter() - t0,
               "resumed": bool(resume), "machine": machine()}
    write_json(os.path.join(out_dir, "summary.json"), wf._jsonable(summary))
    try:
        from .train.plot import plot_runs

        plot_runs([os.path.join(out_dir, x) for x in ("distilled", "mlm_only")], os.path.join(out_dir, "curves.png"),
                  title="tinymobilebert demo: distilled vs MLM only (equal CPU budgets)")
    except ImportError:
        pass
    for line in format_table(summary):
        print_fn(line)
    return summary


def _trained_teacher(folder, recipe) -> dict | None:
    """The record of a demo teacher in ``folder`` trained with ``recipe`` (finished), else None."""
    path = os.path.join(folder, "demo_teacher.json")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(folder, "model", "model.safetensors"))):
        return None
    with open(path) as f:
        done = json.load(f)
    return done if all(json.dumps(done.get(k)) == json.dumps(v) for k, v in recipe.items()) else None


def _measure(name, model_folder, ft_dir, how, s, dev_batches, seconds, cpu, bow, common, print_fn) -> dict:
    """One table row: size and cost, held-out MLM accuracy, fine-tuned dev accuracy, latency."""
    from .costs import forward_flops_per_token
    from .model import MobileBertForPreTraining, MobileBertForSequenceClassification
    from .train.evaluate import evaluate_pretraining

    model_dir = os.path.join(model_folder, "model")
    model = MobileBertForPreTraining.from_pretrained(model_dir)
    mlm = evaluate_pretraining(model, dev_batches)["mlm_accuracy"]
    F = s["finetune_steps"]
    runs = []
    for k, lr in enumerate(s["finetune_lrs"]):
        folder = f"{ft_dir}_lr{lr:g}"
        runs.append((wf.finetune(folder, s["task"], model_dir=model_dir, steps=F, lr=lr, seed=s["seed"], eval_every=F,
                                 save_every=F, baseline=bow and k == 0, batch_size=BATCH, max_length=LENGTH,
                                 **common, resume=how["resume"] and os.path.isdir(folder)), folder))
    ft, ft_dir = max(runs, key=lambda r: r[0]["dev_accuracy"])
    if bow:
        ft["bow_dev_accuracy"] = runs[0][0]["bow_dev_accuracy"]
    clf = MobileBertForSequenceClassification.from_pretrained(os.path.join(ft_dir, "model"))
    row = {"model": name, "parameters": model.num_parameters(),
           "mflops_per_token": forward_flops_per_token(model.config, LENGTH) / 1e6,
           "latency_ms": inference_latency_ms(clf, next(iter(dev_batches()))), "held_out_mlm_accuracy": mlm,
           "dev_accuracy": ft["dev_accuracy"], "finetune_lr": ft["settings"]["lr"],
           "dev_accuracy_by_lr": {f"{r['settings']['lr']:g}": r["dev_accuracy"] for r, _ in runs},
           "train_seconds": seconds, "train_cpu_seconds": cpu,
           "majority_dev_accuracy": ft["majority_dev_accuracy"]}
    if bow:
        row["bow_dev_accuracy"] = ft["bow_dev_accuracy"]
    print_fn(f"{name}: held-out MLM accuracy {mlm:.1%}, {ft['task']} dev accuracy " + ", ".join(
        f"{r['dev_accuracy']:.1%} (lr {r['settings']['lr']:g})" for r, _ in runs))
    return row


def inference_latency_ms(model, batch, repeats=7) -> float:
    """Median wall milliseconds of one eval-mode forward pass over ``batch`` (no cache kept),
    after one untimed pass (``benchmark.measure.call_times``)."""
    from .benchmark.measure import call_times

    args = (batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))
    model.eval()
    return float(np.median(call_times(lambda: model.forward(*args, keep_cache=False), 1, repeats)) * 1e3)


def format_table(summary) -> list[str]:
    """The demo's table, as lines."""
    rows, task = summary["rows"], summary["task"]
    lines = ["", f"{'model':33s} {'params':>7s} {'MFLOPs/token':>12s} {'latency':>8s} {'held-out MLM':>12s} "
                 f"{task + ' dev':>15s}  training"]
    for x in rows:
        cpu = "" if x["train_cpu_seconds"] is None else f" ({x['train_cpu_seconds']:.0f} CPU-s)"
        took = f"{x['train_seconds']:.0f}s{cpu}" + (", reused" if x.get("reused") else "")
        lines.append(f"{x['model']:33s} {x['parameters'] / 1e6:6.2f}M {x['mflops_per_token']:12.2f} "
                     f"{x['latency_ms']:6.0f}ms {x['held_out_mlm_accuracy']:12.1%} {x['dev_accuracy']:15.1%}  {took}")
    lines.append(f"{'bag of words':33s} {'':>7s} {'':>12s} {'':>8s} {'':>12s} {summary['bag_of_words_dev_accuracy']:15.1%}")
    lines.append(f"Latency: one batch of {BATCH} x {LENGTH} tokens. Held-out MLM: documents no model trained on. "
                 f"{task} chance: {summary['majority_dev_accuracy']:.0%}. Distilled minus MLM only: "
                 f"{summary['distilled_minus_mlm_only'] * 100:+.1f} points of held-out MLM accuracy at equal CPU "
                 f"budgets ({summary['budget']['cpu_seconds']:.0f} CPU-s each). {summary['total_seconds']:.0f}s in "
                 f"all, {_threads(summary['machine'])}.")
    return lines


def machine() -> dict:
    """What produced the figures: CPU, cores, threads (BLAS and Numba), library versions."""
    import numba

    from .machine import describe
    from .threads import THREAD_ENV_VARS

    thread_env = {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ}
    return {**describe(), "numba_threads": numba.get_num_threads(), "thread_env": thread_env,
            "machine": platform.machine()}


# ------------------------------------------------------------------------------ the README's figures
README_START = "<!-- demo-figures: written by `python benchmarks/readme_figures.py`; do not edit by hand -->"
README_END = "<!-- /demo-figures -->"


def readme_figures(results: dict) -> str:
    """The README's demo paragraph (between the markers) from ``benchmarks/demo_figures.json``."""
    s, m = results["summary"], results["summary"]["machine"]
    teacher, dist, alone = s["rows"]
    task = s["task"].replace("_", " ")
    text = (f"With the default seed, on {m['cpu']} with {results['threads']} thread{'s' * (results['threads'] > 1)} "
            f"(Python {m['python']}, NumPy {m['numpy']}, Numba {m['numba']}, {m['blas']}; code at "
            f"{results['commit']}), the demo printed: held-out MLM accuracy {teacher['held_out_mlm_accuracy']:.1%} "
            f"for the IB-BERT teacher ({teacher['parameters'] / 1e6:.2f}M parameters, {s['teacher_steps']} steps); "
            f"{dist['held_out_mlm_accuracy']:.1%} for the MobileBERT student ({dist['parameters'] / 1e6:.2f}M) "
            f"distilled from it, and {alone['held_out_mlm_accuracy']:.1%} for the same student trained with MLM "
            f"alone for the same budget ({s['budget']['cpu_seconds']:.0f} CPU-seconds each): "
            f"{s['distilled_minus_mlm_only'] * 100:+.1f} points for distillation. {task.capitalize()} dev accuracy "
            f"after fine-tuning (the best of three learning rates): {teacher['dev_accuracy']:.1%} teacher, {dist['dev_accuracy']:.1%} distilled, "
            f"{alone['dev_accuracy']:.1%} MLM only, {s['bag_of_words_dev_accuracy']:.1%} bag of words (majority "
            f"{s['majority_dev_accuracy']:.1%}).")
    if results.get("timed"):
        text += f" It took {results['demo_seconds'] / 60:.1f} minutes"
        if results.get("test_seconds") is not None:
            text += f", and `python -m pytest -q` {results['test_seconds'] / 60:.1f} minutes"
        text += ", on that machine with nothing else running."
    else:
        text += (" Its times were not measured (a busy shared machine); `python benchmarks/readme_figures.py "
                 "--tests` measures them.")
    timed = bool(results.get("timed"))  # latency is a time too: shown only from a quiet machine
    table = ["", "| model | parameters | MFLOPs/token | " + "latency (32 x 64 tokens) | " * timed + "held-out MLM | "
             + task + " dev | training steps |", "|---|---|---|---|---|---|" + "---|" * timed]
    b = s["budget"]
    steps = {"teacher": f"{s['teacher_steps']}", "alone": f"{b['mlm_steps']}",
             "distilled": f"{b['steps_per_layer']} per layer (PKT) + {b['pd_steps']} (PD)"}
    for row, key in zip(s["rows"], ("teacher", "distilled", "alone")):
        latency = f"{row['latency_ms']:.0f} ms | " if timed else ""
        table.append(f"| {row['model']} | {row['parameters'] / 1e6:.2f}M | {row['mflops_per_token']:.2f} | {latency}"
                     f"{row['held_out_mlm_accuracy']:.1%} | {row['dev_accuracy']:.1%} | {steps[key]} |")
    table.append("| bag of words | | | " + "| " * timed + f"| {s['bag_of_words_dev_accuracy']:.1%} | |")
    return "\n".join([README_START, *_wrap(text), *table, README_END])


def _wrap(text: str, width: int = 100) -> list[str]:
    """Lines of at most ``width`` characters, never breaking inside a `code span`."""
    import re
    import textwrap

    glued = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\x00"), text)
    lines = textwrap.wrap(glued, width=width, break_long_words=False, break_on_hyphens=False)
    return [line.replace("\x00", " ") for line in lines]


def update_readme(readme_path: str, results: dict) -> None:
    """Replace the README's demo paragraph (between the markers) with ``readme_figures(results)``."""
    from .atomic import write_text_atomic

    text = open(readme_path, encoding="utf-8").read()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    write_text_atomic(readme_path, text[:start] + readme_figures(results) + text[end:])


def _threads(info: dict) -> str:
    n = info["numba_threads"]
    return f"{n} thread{'s' * (n > 1)}"
