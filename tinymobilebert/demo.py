"""The demo: MobileBERT's story on the built-in corpus, in a few minutes on a laptop.

1. Documents: the Python standard library's docstrings (no download). The fine-tuning task's
   dev documents are set aside first, so no model pretrains on a dev sentence; 5% of the rest
   are held out for the masked-LM evaluation.
2. The teacher: a small IB-BERT (``config.ib_bert_small_teacher``: an inverted bottleneck, 2.4x
   the student's parameters) pretrained with MLM + NSP, with its own WordPiece vocabulary. A
   teacher trained by an earlier run with the same recipe is reused (the demo says so).
3. Equal budgets: each student gets the same process CPU seconds (``distill/budget.py``: step
   costs measured on a few batches, so the distilled student, whose steps carry the teacher's
   forward pass, runs fewer steps).
4. The distilled student (``config.mobilebert_small_student``): progressive knowledge transfer
   (one stage per layer; feature maps, attentions, mean and variance) then pre-training
   distillation (MLM against half one-hot, half teacher softmax, plus NSP).
5. The same student trained with MLM + NSP alone, for the same budget.
6. Each fine-tuned on a task that needs word order (a bag of words is at chance by construction),
   with the bag-of-words baseline beside them; one table: parameters, FLOPs per token, measured
   inference latency, held-out MLM accuracy, dev accuracy, training time. Also in
   ``{out}/summary.json``, curves in ``{out}/curves.png``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from . import workflows as wf
from .checkpoint import write_json

# The recipe (README "Distillation"); --quick shortens every part.
DEFAULTS = {"teacher_steps": 1200, "teacher_lr": 1e-3, "budget_seconds": 90.0, "layerwise_share": 0.3,
            "layerwise_lr": 1.5e-3, "pd_lr": 1.5e-3, "mlm_lr": 4e-3, "finetune_steps": 200}
QUICK = {"teacher_steps": 500, "budget_seconds": 30.0, "finetune_steps": 100}
TEACHER, STUDENT = "ib_bert_small_teacher", "mobilebert_small_student"
BATCH, LENGTH = 32, 64


def run_demo(out_dir="runs/demo", *, seed=0, quick=False, task="word_order", progress=None, print_fn=print,
             **overrides) -> dict:
    """Run the demo (see the module notes); returns the summary dict. ``overrides``: keys of DEFAULTS."""
    from . import distill
    from .distill.budget import first_batches, measure_budget

    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"run_demo: unknown settings {unknown}; known: {sorted(DEFAULTS)}")
    r = {**DEFAULTS, **(QUICK if quick else {}), **{k: v for k, v in overrides.items() if v is not None}}
    t0 = time.perf_counter()
    docs = wf.load_documents(None)
    the_task = wf.load_task(task, docs, seed=seed)
    dev_names = set(the_task.documents["dev"])
    pre_docs = [d for d in docs if d.name not in dev_names]
    print_fn(f"corpus: {len(docs)} documents ({sum(len(d.text) for d in docs) / 1e6:.1f} MB); task {the_task.name}: "
             f"{len(the_task.train)} train / {len(the_task.dev)} dev examples from separate documents")

    # ---- 1. the teacher (trained once, then reused)
    teacher_dir = os.path.join(out_dir, "teacher")
    recipe = {"model": TEACHER, "steps": r["teacher_steps"], "lr": r["teacher_lr"], "seed": seed}
    reused = _reusable(teacher_dir, recipe)
    if reused:
        print_fn(f"teacher: reusing {teacher_dir} (trained by an earlier run with this recipe; delete the folder "
                 f"to train it again)")
        teacher_seconds = reused
    else:
        print_fn(f"teacher: pretraining an IB-BERT for {r['teacher_steps']} steps (once: later runs reuse it)")
        pre = wf.pretrain(teacher_dir, docs=pre_docs, model=TEACHER, steps=r["teacher_steps"], lr=r["teacher_lr"],
                          warmup=max(1, r["teacher_steps"] // 20), seed=seed, eval_every=max(r["teacher_steps"] // 4, 1),
                          save_every=r["teacher_steps"], progress=progress, batch_size=BATCH, max_length=LENGTH,
                          config={"hidden_dropout_prob": 0.0})
        teacher_seconds = pre["seconds"]
        write_json(os.path.join(teacher_dir, "demo_teacher.json"), {**recipe, "seconds": teacher_seconds})
    teacher = distill.load_teacher(teacher_dir)
    tok = teacher.tokenizer
    student_cfg = distill.run.student_config(STUDENT, len(tok))
    train_docs, dev_docs = wf.train_dev_split(pre_docs, dev_fraction=0.05, seed=seed)
    train_data = wf.PretrainingData(train_docs, tok, max_length=LENGTH, seed=seed)
    dev_data = wf.PretrainingData(dev_docs, tok, max_length=LENGTH, seed=seed + 1)

    # ---- 2. equal budgets
    budget = measure_budget(teacher, student_cfg, first_batches(train_data, BATCH), r["budget_seconds"],
                            layerwise_share=r["layerwise_share"], mlm_lr=r["mlm_lr"], seed=seed)
    print_fn(f"budget: {budget.cpu_seconds:.0f} CPU seconds per student ({r['budget_seconds']:.0f} s at "
             f"{budget.cpu_per_wall:.2f} CPU-s per second); a step costs {budget.mlm_step_cpu * 1e3:.0f} ms alone, "
             f"{budget.layerwise_step_cpu * 1e3:.0f} ms (PKT) and {budget.pd_step_cpu * 1e3:.0f} ms (PD) with the "
             f"teacher: {budget.mlm_steps} steps alone vs {student_cfg.num_hidden_layers} x {budget.steps_per_layer} "
             f"+ {budget.pd_steps}")

    # ---- 3. the distilled student and the student trained alone
    vocab = os.path.join(teacher_dir, "vocab.txt")
    distill_steps = student_cfg.num_hidden_layers * budget.steps_per_layer + budget.pd_steps
    dist = distill.distill(
        os.path.join(out_dir, "distilled"), teacher_dir, docs=pre_docs, strategy="pkt", student=STUDENT,
        steps_per_layer=budget.steps_per_layer, pd_steps=budget.pd_steps, lr=r["layerwise_lr"], pd_lr=r["pd_lr"],
        seed=seed, batch_size=BATCH, max_length=LENGTH, eval_every=max(distill_steps // 4, 1), save_every=0,
        progress=progress)
    alone = wf.pretrain(
        os.path.join(out_dir, "mlm_only"), docs=pre_docs, vocab=vocab, model=STUDENT,
        steps=budget.mlm_steps, lr=r["mlm_lr"], warmup=max(1, budget.mlm_steps // 16), seed=seed,
        eval_every=max(budget.mlm_steps // 4, 1), save_every=0, progress=progress, batch_size=BATCH,
        max_length=LENGTH)

    # ---- 4. fine-tune all, measure all
    def dev_batches():
        for k, b in enumerate(dev_data.batches(BATCH, 0, shuffle=False, drop_last=False)):
            if k >= 20:
                break
            yield b

    rows = []
    for name, folder, seconds, cpu in (("IB-BERT teacher", teacher_dir, teacher_seconds, None),
                                       ("MobileBERT, distilled (PKT + PD)", os.path.join(out_dir, "distilled"),
                                        dist["seconds"], dist["cpu_seconds"]),
                                       ("MobileBERT, MLM only", os.path.join(out_dir, "mlm_only"), alone["seconds"],
                                        alone["cpu_seconds"])):
        rows.append(_evaluate(name, folder, the_task, dev_batches, r["finetune_steps"], seed, progress,
                              os.path.join(out_dir, "finetune_" + os.path.basename(folder)), seconds, cpu,
                              bow=not rows, print_fn=print_fn))
    rows[0]["reused"] = bool(reused)
    bow = rows[0].pop("bow_dev_accuracy")
    summary = {"task": the_task.name, "vocab_size": len(tok), "budget": budget.as_dict(), "rows": rows,
               "bag_of_words_dev_accuracy": bow, "majority_dev_accuracy": rows[0].pop("majority_dev_accuracy"),
               "distilled_minus_mlm_only": rows[1]["held_out_mlm_accuracy"] - rows[2]["held_out_mlm_accuracy"],
               "settings": r, "total_seconds": time.perf_counter() - t0}
    write_json(os.path.join(out_dir, "summary.json"), wf._jsonable(summary))
    try:
        from .train.plot import plot_runs

        plot_runs([os.path.join(out_dir, x) for x in ("distilled", "mlm_only")], os.path.join(out_dir, "curves.png"),
                  title="tinymobilebert demo: distilled vs MLM only (equal CPU budget)")
    except ImportError:
        pass
    for line in format_table(summary):
        print_fn(line)
    return summary


def _reusable(folder, recipe) -> float | None:
    """The recorded training seconds of a demo teacher in ``folder`` trained with ``recipe``, else None."""
    path = os.path.join(folder, "demo_teacher.json")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(folder, "model", "model.safetensors"))):
        return None
    with open(path) as f:
        done = json.load(f)
    return done["seconds"] if all(done.get(k) == v for k, v in recipe.items()) else None


def _evaluate(name, folder, task, dev_batches, steps, seed, progress, ft_dir, seconds, cpu, bow, print_fn) -> dict:
    """One table row: sizes and costs, held-out MLM accuracy, fine-tuned dev accuracy, latency."""
    from .costs import forward_flops_per_token
    from .model import MobileBertForPreTraining, MobileBertForSequenceClassification
    from .train.evaluate import evaluate_pretraining

    model = MobileBertForPreTraining.from_pretrained(os.path.join(folder, "model"))
    mlm = evaluate_pretraining(model, dev_batches)["mlm_accuracy"]
    ft = wf.finetune(ft_dir, task, model_dir=os.path.join(folder, "model"), steps=steps, seed=seed,
                     warmup=max(1, round(0.15 * steps)), eval_every=max(steps // 2, 1), progress=progress, baseline=bow,
                     batch_size=BATCH,
                     max_length=LENGTH)
    clf = MobileBertForSequenceClassification.from_pretrained(os.path.join(ft_dir, "model"))
    row = {"model": name, "parameters": model.num_parameters(),
           "mflops_per_token": forward_flops_per_token(model.config, LENGTH) / 1e6,
           "latency_ms": inference_latency_ms(clf, next(iter(dev_batches()))), "held_out_mlm_accuracy": mlm,
           "dev_accuracy": ft["dev_accuracy"], "train_seconds": seconds, "train_cpu_seconds": cpu,
           "majority_dev_accuracy": ft["majority_dev_accuracy"]}
    if bow:
        row["bow_dev_accuracy"] = ft["bow_dev_accuracy"]
    print_fn(f"{name}: held-out MLM accuracy {mlm:.1%}, {task.name} dev accuracy {ft['dev_accuracy']:.1%}")
    return row


def inference_latency_ms(model, batch, repeats=7) -> float:
    """Median wall milliseconds of one eval-mode forward pass over ``batch`` (no cache kept)."""
    args = (batch["input_ids"], batch.get("token_type_ids"), batch.get("attention_mask"))
    model.eval().forward(*args, keep_cache=False)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.forward(*args, keep_cache=False)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def format_table(summary) -> list[str]:
    """The demo's table, as lines."""
    rows, task = summary["rows"], summary["task"]
    lines = ["", f"{'model':34s} {'params':>9s} {'MFLOPs/tok':>10s} {'latency':>9s} {'held-out MLM':>12s} "
                 f"{task + ' dev':>16s} {'training':>17s}"]
    for x in rows:
        cpu = "" if x["train_cpu_seconds"] is None else f" ({x['train_cpu_seconds']:.0f} CPU-s)"
        took = "reused" if x.get("reused") else f"{x['train_seconds']:.0f}s{cpu}"
        lines.append(f"{x['model']:34s} {x['parameters'] / 1e6:8.2f}M {x['mflops_per_token']:10.2f} "
                     f"{x['latency_ms']:7.1f}ms {x['held_out_mlm_accuracy']:12.1%} {x['dev_accuracy']:16.1%} "
                     f"{took:>17s}")
    lines.append(f"{'bag of words':34s} {'':>9s} {'':>10s} {'':>9s} {'':>12s} "
                 f"{summary['bag_of_words_dev_accuracy']:16.1%}")
    lines.append(f"latency: one batch of {BATCH} x {LENGTH} tokens; MLM accuracy on held-out documents; chance on "
                 f"{task} {summary['majority_dev_accuracy']:.0%}. Distilled minus MLM-only: "
                 f"{summary['distilled_minus_mlm_only'] * 100:+.1f} points of held-out MLM accuracy at equal CPU "
                 f"budgets. {summary['total_seconds']:.0f}s in all.")
    return lines
