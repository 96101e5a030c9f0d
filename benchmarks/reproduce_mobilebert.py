"""MobileBERT's Tables 8 and 9 in miniature: knowledge-transfer strategies and the ablation of
its training, at laptop scale, equal student budgets, several seeds.

    python benchmarks/reproduce_mobilebert.py                    # seeds 0,1,2, the demo's budget
    python benchmarks/reproduce_mobilebert.py --seeds 0,1,2,3,4 --budget 600 --teacher runs/demo/teacher
    python benchmarks/reproduce_mobilebert.py --report           # rewrite the tables from saved runs

Slow (7 students x seeds, each pretrained then fine-tuned on two tasks at three learning rates,
2-3 minutes each, plus the teacher's pretraining: about an hour for 3 seeds on one thread of a
2-core VM; not part of the test suite). Every finished run is saved in ``{work}/results.json``; a
restarted script skips them, and refuses to mix runs of other settings (budget, layer-wise
share, threads, teacher) into the same tables. The tables go to ``--results``
(Markdown, PNG, JSON).

Rows (the paper's, with this project's readings where no code exists: ``distill/schedules.py``):

* Table 8 (strategies; every layer-wise term: FMT, AT, mean and variance): AKT (the terms added to
  PD, one stage, nothing copied), JKT (all layers at once, then PD), PKT (one layer per stage,
  then PD). JKT and PKT copy the teacher's embeddings and heads.
* Table 9 (ablation): MLM only (the student trained alone: MLM + NSP), +PD (pre-training
  distillation alone, from scratch), +PD+FMT (PKT with feature-map transfer only, then PD),
  +PD+FMT+AT (PKT with FMT and attention transfer, then PD).
* The teacher (pretrained once, the demo's recipe) and the bag-of-words baseline.

**Equal budgets.** Every student gets the same process CPU seconds: those of ``--budget`` steps
of the student trained alone; step counts come from each kind of step's CPU cost, measured once
at the start (``distill/budget.py``; PKT's stage by stage, since stage l runs layers 0 .. l
only). The PKT ablation rows (fewer terms) are given the PKT stages' costs with every term, so
they run slightly fewer steps than they could. Data: the built-in corpus without the fine-tuning tasks' dev documents;
one held-out split and one held-out masking for every run (``split_seed`` 0); the seed changes
the student's initialisation, the data order and masking, and the fine-tuning.

Measured per run: held-out MLM accuracy (the same 20 batches of held-out documents for every
run) and dev accuracy after fine-tuning on ``word_order`` and ``next_sentence``: the demo's
recipe (150 steps at each of three learning rates, the best reported, every model alike).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TASKS = ("word_order", "next_sentence")
TABLE8 = ("AKT", "JKT", "PKT")
TABLE9 = ("MLM only", "+PD", "+PD+FMT", "+PD+FMT+AT")
ALL_LOSSES = ["fmt", "at", "mv"]
CONFIGS = {"AKT": dict(strategy="akt", losses=ALL_LOSSES), "JKT": dict(strategy="jkt", losses=ALL_LOSSES),
           "PKT": dict(strategy="pkt", losses=ALL_LOSSES), "+PD": dict(strategy="pd", losses=ALL_LOSSES),
           "+PD+FMT": dict(strategy="pkt", losses=["fmt"]), "+PD+FMT+AT": dict(strategy="pkt", losses=["fmt", "at"])}
BATCH, LENGTH, EVAL_BATCHES = 32, 64, 20


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=None, metavar="STEPS", help="each student's budget: the CPU "
                    "time of this many steps of the student trained alone (default: the demo's, 300)")
    ap.add_argument("--layerwise-share", type=float, default=None, help="share of a PKT/JKT budget before PD "
                                                                          "(default: the demo's, 0.3)")
    ap.add_argument("--teacher", default=None, help="a pretrained teacher (default: train one with the demo's recipe)")
    ap.add_argument("--work", default="runs/reproduce_mobilebert", help="run folders and results.json")
    ap.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"), help="where the tables go")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and kernel threads (default 1)")
    ap.add_argument("--report", action="store_true", help="train nothing: rewrite the tables from results.json")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                "TINYMOBILEBERT_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, ROOT)
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, "results.json")
    results = json.load(open(path)) if os.path.isfile(path) else {"runs": {}}
    if not args.report:
        run_all(args, results, path)
    write_tables(results, args.results)


# ------------------------------------------------------------------------------ the runs
def run_all(args, results, path):
    from tinymobilebert import demo, distill
    from tinymobilebert import workflows as wf
    from tinymobilebert.distill.budget import first_batches, split_budget, step_costs

    seeds = [int(s) for s in args.seeds.split(",")]
    docs = wf.load_documents(None)
    tasks = {name: wf.load_task(name, docs, seed=0) for name in TASKS}
    dev_names = {n for t in tasks.values() for n in t.documents["dev"]}
    pre_docs = [d for d in docs if d.name not in dev_names]
    teacher_dir = args.teacher or os.path.join(args.work, "teacher")
    if args.teacher is None and not os.path.isfile(os.path.join(teacher_dir, "model", "model.safetensors")):
        T = demo.DEFAULTS["teacher_steps"]
        log(f"teacher: pretraining {demo.TEACHER} for {T} steps (the demo's recipe)")
        t0 = time.process_time()
        wf.pretrain(teacher_dir, docs=pre_docs, model=demo.TEACHER, steps=T, lr=demo.RECIPE["teacher_lr"], seed=0,
                    eval_every=T, save_every=T, progress=False, batch_size=BATCH, max_length=LENGTH,
                    config=demo.TEACHER_CONFIG)
        results["teacher_cpu_seconds"] = time.process_time() - t0
    teacher = distill.load_teacher(teacher_dir)
    tok = teacher.tokenizer
    cfg = distill.run.student_config(demo.STUDENT, len(tok))
    train_docs, dev_docs = wf.train_dev_split(pre_docs, dev_fraction=0.05, seed=0)
    dev_data = wf.PretrainingData(dev_docs, tok, max_length=LENGTH, seed=1)
    if "costs" in results and "pkt_stages" not in results["costs"]:
        sys.exit(f"{path} holds runs budgeted when every PKT step ran the whole model (no per-stage costs): give "
                 "another --work")
    if "costs" not in results:
        data = wf.PretrainingData(train_docs, tok, max_length=LENGTH, seed=0)
        results["costs"] = step_costs(teacher, cfg, first_batches(data, BATCH, n=6))
        save(results, path)
    share = args.layerwise_share if args.layerwise_share is not None else demo.RECIPE["layerwise_share"]
    budget_steps = args.budget or demo.DEFAULTS["budget_steps"]
    cpu_budget = budget_steps * results["costs"]["mlm"]
    n = split_budget(results["costs"], cpu_budget, cfg.num_hidden_layers, share)
    settings = {"budget_steps": budget_steps, "budget_cpu_seconds": cpu_budget, "layerwise_share": share,
                "threads": args.threads, "steps": n, "teacher": os.path.abspath(teacher_dir)}
    old = results.get("settings")
    if old is not None and any(old.get(k) != settings[k] for k in ("budget_steps", "layerwise_share", "threads",
                                                                      "teacher")):
        sys.exit(f"{path} holds runs made with other settings ({old}): give another --work, or the same settings")
    results["settings"] = settings
    log(f"step costs (CPU s): {json.dumps(rounded(results['costs']))}; steps: {n}")

    def dev_batches():
        for k, b in enumerate(dev_data.batches(BATCH, 0, shuffle=False, drop_last=False)):
            if k >= EVAL_BATCHES:
                break
            yield b

    if "teacher" not in results["runs"]:
        results["runs"]["teacher"] = {str(s): measure(teacher_dir, tasks, dev_batches, s, args.work, "teacher")
                                      for s in seeds}
        save(results, path)
    for seed in seeds:
        for name in TABLE8 + TABLE9:
            key = f"{name}/{seed}"
            if key in results["runs"]:
                continue
            folder = os.path.join(args.work, name.replace("+", "plus_").replace(" ", "_") + f"_seed{seed}")
            log(f"{key}: training")
            shutil.rmtree(folder, ignore_errors=True)  # a run interrupted earlier starts again
            c0, w0 = time.process_time(), time.perf_counter()
            if name == "MLM only":
                steps = train_alone(folder, train_docs, tok, cfg, n["mlm_steps"], seed)
            else:
                c = CONFIGS[name]
                spl, pd = (n["jkt_steps_per_layer"], n["jkt_pd_steps"]) if c["strategy"] == "jkt" else (
                    n["steps_per_layer"], n["pd_steps"])
                if c["strategy"] in ("akt", "pd"):
                    spl, pd = 0, n["akt_steps" if c["strategy"] == "akt" else "pd_only_steps"]
                r = distill.distill(folder, teacher_dir, docs=pre_docs, strategy=c["strategy"], losses=c["losses"],
                                    student=demo.STUDENT, steps_per_layer=max(spl, 2), pd_steps=pd,
                                    lr=demo.RECIPE["layerwise_lr"], pd_lr=demo.RECIPE["pd_lr"], seed=seed,
                                    split_seed=0, batch_size=BATCH, max_length=LENGTH, eval_every=0, save_every=0,
                                    progress=False)
                steps = r["steps"]
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            row = measure(folder, tasks, dev_batches, seed, args.work, key.replace("/", "_").replace(" ", "_"))
            results["runs"][key] = {**row, "steps": steps, "train_cpu_seconds": cpu, "train_wall_seconds": wall}
            save(results, path)
            log(f"{key}: held-out MLM {row['mlm_accuracy']:.3f}, " + ", ".join(
                f"{t} {row[t]:.3f}" for t in TASKS) + f" ({steps} steps, {cpu:.0f} CPU-s)")
    if "bag_of_words" not in results:
        from tinymobilebert.data.bow import bow_baseline

        results["bag_of_words"] = {t: bow_baseline(tasks[t], tok, seed=0)["dev_accuracy"] for t in TASKS}
        save(results, path)


def train_alone(folder, train_docs, tok, cfg, steps, seed) -> int:
    """The student with MLM + NSP alone: ``pretrain``'s recipe (AdamW 4e-3, warm-up 7.5%, clipping 1)."""
    from tinymobilebert import demo
    from tinymobilebert.data import PretrainingData
    from tinymobilebert.model import MobileBertForPreTraining
    from tinymobilebert.optim import AdamW, LinearWarmupDecay
    from tinymobilebert.train import Trainer

    data = PretrainingData(train_docs, tok, max_length=LENGTH, seed=seed)
    model = MobileBertForPreTraining(cfg, seed=seed)
    opt = AdamW(model.store, lr=demo.RECIPE["mlm_lr"], weight_decay=0.01,
                schedule=LinearWarmupDecay(round(0.075 * steps), steps), max_grad_norm=1.0)
    Trainer(model, opt, lambda e, k: ({**b, "mlm_positions": "labelled"} for b in data.batches(BATCH, e, start_batch=k)),
            folder, max_steps=steps, progress=False).train()
    model.save_pretrained(os.path.join(folder, "model"), tokenizer=tok)
    return steps


def measure(folder, tasks, dev_batches, seed, work, tag) -> dict:
    """Held-out MLM accuracy, and on each task the best dev accuracy over the demo's fine-tuning
    learning rates (every model alike; each rate's in ``{task}_by_lr``)."""
    from tinymobilebert import demo
    from tinymobilebert import workflows as wf
    from tinymobilebert.model import MobileBertForPreTraining
    from tinymobilebert.train.evaluate import evaluate_pretraining

    model_dir = os.path.join(folder, "model")
    row = {"mlm_accuracy": evaluate_pretraining(MobileBertForPreTraining.from_pretrained(model_dir),
                                                dev_batches)["mlm_accuracy"]}
    F = demo.DEFAULTS["finetune_steps"]
    for t in TASKS:
        by_lr = {}
        for lr in demo.FINETUNE_LRS:
            ft = wf.finetune(os.path.join(work, "finetune", f"{tag}_{t}_seed{seed}_lr{lr:g}"), tasks[t],
                             model_dir=model_dir, steps=F, lr=lr, seed=seed, eval_every=F, save_every=F, progress=False,
                             baseline=False, batch_size=BATCH, max_length=LENGTH, overwrite=True)
            by_lr[f"{lr:g}"] = ft["dev_accuracy"]
        row[t], row[t + "_by_lr"] = max(by_lr.values()), by_lr
    return row


def save(results, path):
    from tinymobilebert.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(results, indent=1))


def rounded(costs: dict) -> dict:
    """Step costs to 4 decimals (PKT's per-stage costs are a list)."""
    return {k: [round(c, 4) for c in v] if isinstance(v, list) else round(v, 4) for k, v in costs.items()}


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------------------ the tables
def summarize(results):
    import numpy as np

    out = {}
    for key, row in results["runs"].items():
        if key == "teacher":
            rows = list(row.values())
            name = "teacher"
        else:
            name, _ = key.rsplit("/", 1)
            rows = [row]
        for metric in ("mlm_accuracy",) + TASKS:
            out.setdefault(name, {}).setdefault(metric, []).extend(r[metric] for r in rows)
    for name, metrics in out.items():
        for metric, values in list(metrics.items()):
            metrics[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                               else 0.0, "n": len(values), "values": values}
    return out


def write_tables(results, folder):
    os.makedirs(folder, exist_ok=True)
    s = summarize(results)
    st = results.get("settings", {})
    bow = results.get("bag_of_words", {})

    def cell(name, metric):
        m = s.get(name, {}).get(metric)
        return "-" if m is None else f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}"

    lines = ["# MobileBERT's Tables 8 and 9 in miniature", "",
             f"Written by `benchmarks/reproduce_mobilebert.py`. Student `mobilebert_small_student` (1.03M parameters), "
             f"teacher `ib_bert_small_teacher` (2.42M), built-in corpus; every student gets the process CPU seconds "
             f"of {st.get('budget_steps', '?')} steps of the student trained alone "
             f"({st.get('budget_cpu_seconds', 0):.0f} s, {st.get('threads', '?')} thread), step counts "
             f"{st.get('steps', {})} from the measured step costs (CPU s) "
             f"{rounded(results.get('costs', {}))}. Mean ± standard deviation over "
             f"seeds (n per row in the last column), in %. Held-out MLM: accuracy on documents no model trained on; "
             f"task columns: best dev accuracy over fine-tuning at learning rates 3e-4, 1e-3, 3e-3 (150 steps "
             f"each).", ""]
    header = "| | held-out MLM | word_order dev | next_sentence dev | n |\n|---|---|---|---|---|"
    for title, names in (("Table 8 in miniature: knowledge-transfer strategies", TABLE8),
                         ("Table 9 in miniature: ablation", TABLE9)):
        lines += [f"## {title}", "", header]
        for name in ("teacher",) + names:
            n = s.get(name, {}).get("mlm_accuracy", {}).get("n", 0)
            label = "IB-BERT teacher" if name == "teacher" else name
            lines.append(f"| {label} | {cell(name, 'mlm_accuracy')} | {cell(name, 'word_order')} | "
                         f"{cell(name, 'next_sentence')} | {n} |")
        lines.append(f"| bag of words | - | {100 * bow.get('word_order', float('nan')):.1f} | "
                     f"{100 * bow.get('next_sentence', float('nan')):.1f} | - |")
        lines.append("")
    lines += ["Per-seed values: `reproduce_mobilebert.json` beside this file.", ""]
    from tinymobilebert.atomic import write_text_atomic

    write_text_atomic(os.path.join(folder, "reproduce_mobilebert.md"), "\n".join(lines))
    write_text_atomic(os.path.join(folder, "reproduce_mobilebert.json"), json.dumps({"summary": s, **results}, indent=1))
    plot(s, bow, os.path.join(folder, "reproduce_mobilebert.png"))
    print("\n".join(lines))


def plot(s, bow, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = [n for n in ("teacher",) + TABLE8 + TABLE9 if n in s]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric, title in zip(axes, ("mlm_accuracy",) + TASKS, ("held-out MLM accuracy", "word_order dev",
                                                                     "next_sentence dev")):
        means = [100 * s[n][metric]["mean"] for n in names]
        stds = [100 * s[n][metric]["std"] for n in names]
        colors = ["0.4" if n == "teacher" else ("C0" if n in TABLE8 else "C1") for n in names]
        ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
        if metric in bow:
            ax.axhline(100 * bow[metric], color="k", ls=":", lw=1, label="bag of words")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title + " (%)")
        lo = min(m - d for m, d in zip(means, stds))
        ax.set_ylim(max(0, lo - 5), None)
    fig.suptitle("MobileBERT Tables 8 (blue) and 9 (orange) in miniature; mean ± std over seeds")
    fig.tight_layout()
    from tinymobilebert.atomic import save_figure

    save_figure(fig, png, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
