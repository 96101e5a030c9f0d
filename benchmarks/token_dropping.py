"""Token dropping vs plain pretraining, BERT and MobileBERT, tiny and small sizes (slow; measures, never asserts).

    python benchmarks/token_dropping.py --part loss   [--sizes tiny,small] [--models bert,mobilebert] [--seeds 0,1,2]
                                                      [--steps tiny=1200,small=600]
    python benchmarks/token_dropping.py --part step   [--threads 1] [--repeats 30]
    python benchmarks/token_dropping.py --report      # re-render the Markdown and PNGs from the saved JSON

Dimensions: B batch, T tokens, k kept tokens, L layers, V vocabulary.

Two questions (issue 11), each answered in CPU seconds of this process (``time.process_time``),
which other load on a shared machine does not inflate the way it inflates wall-clock time; the
wall-clock numbers are recorded beside them.

* ``--part step``: (a) the training step's cost with token dropping at keep 0.5 and the default
  split (L/2 - 1) over the plain step, and *where the time goes*: every encoder layer run, the
  embeddings, the MLM head and loss, the optimizer, the selection, timed inside the step, so the
  share of the step that dropping can shrink (the split layer and the layers after it up to the
  last) is measured, not assumed. Plain and dropping steps alternate in one process.
* ``--part loss``: (b) the cost to reach the plain run's final held-out MLM loss. Per (model,
  size, seed) the plain run trains ``--steps`` steps (``--evals`` held-out evaluations); the dropping run then trains until its
  held-out loss (evaluated *without* dropping, as the saved model is used) reaches that value, at
  most ``--max-factor`` times as many steps. Time to the target is read off each run's held-out
  curve (linear between evaluations) in training CPU seconds (evaluation not counted). The
  learning rate is warmed up then held constant, so a curve does not depend on the run's planned
  length and can be cut anywhere.

Data: the built-in corpus (standard-library docstrings), 5% of the documents held out; a
WordPiece vocabulary of the size's V trained on the rest; MLM only (no NSP, as the original's
token-dropping pretraining), BERT masking, 16 x 64 tokens per step. Sizes as ``bench``'s
(``tinymobilebert/benchmark/measure.py``); BERT at the same hidden width, depth and heads, FFN 4H.
AdamW with the original's epsilon 1e-7, weight decay 0.01, clipping to norm 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "TINYMOBILEBERT_NUM_THREADS")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["loss", "step", "both"], default="both")
    ap.add_argument("--report", action="store_true", help="measure nothing: re-render the saved results")
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--models", default="bert,mobilebert")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--steps", default="tiny=1200,small=600",
                    help="plain runs' steps per size (default tiny=1200,small=600), or one number for all")
    ap.add_argument("--max-factor", type=float, default=1.6, help="dropping runs stop at this many times the steps")
    ap.add_argument("--evals", type=int, default=24, help="held-out evaluations over a plain run (default 24)")
    ap.add_argument("--repeats", type=int, default=30, help="--part step: timed steps of each kind")
    ap.add_argument("--threads", type=int, default=1, help="threads for BLAS and the kernels (default 1)")
    ap.add_argument("--work", default=os.path.join("runs", "bench_token_dropping"),
                    help="per-run records (resumable: finished runs are not rerun)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"), help="where the Markdown, PNG, JSON go")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 40 steps, one seed, tiny")
    return ap.parse_args(argv)


if __name__ == "__main__":  # the thread count must be set before NumPy is imported
    _args = parse_args()
    for var in THREAD_VARS:
        os.environ[var] = str(_args.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402

from tinymobilebert import BertTokenizer  # noqa: E402
from tinymobilebert.benchmark.measure import SIZES  # noqa: E402
from tinymobilebert.config import MobileBertConfig, bert_base  # noqa: E402
from tinymobilebert.data import PretrainingData, builtin_corpus, train_dev_split  # noqa: E402
from tinymobilebert.model import MobileBertForPreTraining  # noqa: E402
from tinymobilebert.optim import AdamW, LinearWarmupDecay  # noqa: E402
from tinymobilebert.token_dropping import TokenImportance  # noqa: E402
from tinymobilebert.train.evaluate import evaluate_pretraining  # noqa: E402

sys.path.insert(0, HERE)
from token_dropping_parts import StepProfiler, render, step_flops  # noqa: E402

BATCH, LENGTH, WARMUP, EPS = 16, 64, 100, 1e-7
# Peak learning rates. Small BERT (post-LN, 6 layers) at 1e-3 stayed on the unigram plateau
# (held-out loss 6.36 = the unigram cross-entropy) in 5 of 6 runs of 600 steps and spiked once;
# at 5e-4 it leaves it (a probe: 6.07 at step 400 against 6.35 at 1e-3, seed 1).
LR = {"mobilebert/tiny": 2e-3, "mobilebert/small": 2e-3, "bert/tiny": 1e-3, "bert/small": 5e-4}


# ------------------------------------------------------------------------------ models and data
def model_config(model: str, size: str, vocab_size: int) -> MobileBertConfig:
    c = dict(SIZES[size]["config"], vocab_size=vocab_size)
    if model == "mobilebert":
        return MobileBertConfig(**c)
    H = c["hidden_size"]
    return bert_base(vocab_size=vocab_size, hidden_size=H, num_hidden_layers=c["num_hidden_layers"],
                     num_attention_heads=c["num_attention_heads"], intermediate_size=4 * H, embedding_size=H,
                     intra_bottleneck_size=H, max_position_embeddings=512)


_DATA = {}


def corpus_data(vocab_size: int, work: str):
    """(tokenizer, dev batches): the vocabulary trained once per size, the same held-out set for every run."""
    if vocab_size not in _DATA:
        train_docs, dev_docs = train_dev_split(builtin_corpus(), dev_fraction=0.05, seed=0)
        path = os.path.join(work, f"vocab-{vocab_size}.txt")
        if os.path.isfile(path):
            tok = BertTokenizer.from_pretrained(path)
        else:
            tok = BertTokenizer.train((s for d in train_docs for s in d.sentences), vocab_size=vocab_size)
            os.makedirs(work, exist_ok=True)
            tok.save_pretrained(work)
            os.replace(os.path.join(work, "vocab.txt"), path)
        dev = PretrainingData(dev_docs, tok, max_length=LENGTH, seed=1000, nsp=False)
        dev_batches = list(dev.batches(64, 0, shuffle=False, drop_last=False))
        _DATA[vocab_size] = (tok, train_docs, dev_batches)
    return _DATA[vocab_size]


def make_run(model: str, size: str, seed: int, keep, work: str):
    vocab_size = SIZES[size]["config"]["vocab_size"]
    tok, train_docs, dev_batches = corpus_data(vocab_size, work)
    cfg = model_config(model, size, len(tok))
    m = MobileBertForPreTraining(cfg, seed=seed)
    opt = AdamW(m.store, lr=LR[f"{model}/{size}"], eps=EPS, weight_decay=0.01, max_grad_norm=1.0,
                schedule=LinearWarmupDecay(WARMUP, WARMUP, end_factor=1.0))  # warm-up, then constant
    imp = TokenImportance.from_tokenizer(tok) if keep else None
    data = PretrainingData(train_docs, tok, max_length=LENGTH, seed=seed, nsp=False)
    return m, opt, imp, data, dev_batches


def train_step(m, opt, batch, imp, keep, profiler=None):
    """One step: [select] -> forward -> backward -> AdamW -> [learn importance]. Returns the output."""
    kw = {}
    if imp is not None:
        t = profiler.start() if profiler else None
        kw = {"keep_positions": imp.select(batch["input_ids"], batch["attention_mask"], keep=keep)}
        if profiler:
            profiler.stop("selection + importance", t)
    m.zero_grad()
    out = m.forward(**batch, mlm_positions="labelled", **kw)
    m.backward()
    t = profiler.start() if profiler else None
    opt.step()
    if profiler:
        profiler.stop("optimizer", t)
        t = profiler.start()
    if imp is not None:
        labels = batch["labels"]
        imp.update(labels[labels != -100], out.mlm_token_losses)
    if profiler:
        profiler.stop("selection + importance", t)
    return out


def batches_forever(data):
    epoch = 0
    while True:
        yield from data.batches(BATCH, epoch)
        epoch += 1


def held_out(m, dev_batches, imp=None, keep=None):
    def batches():
        for b in dev_batches:
            yield b if imp is None else {**b, "keep_positions": imp.select(b["input_ids"], b["attention_mask"], keep=keep)}

    r = evaluate_pretraining(m, batches)
    m.train()
    return r["mlm_loss"], r["mlm_accuracy"]


# ------------------------------------------------------------------------------ (b) loss curves
def run_training(model, size, seed, keep, steps, eval_every, work, target=None):
    """One run; returns its record: per-step CPU/wall seconds and losses, held-out curve."""
    m, opt, imp, data, dev = make_run(model, size, seed, keep, work)
    warm, wopt, wimp, *_ = make_run(model, size, seed + 100, keep, work)  # load the compiled kernels off the clock
    for batch, _ in zip(batches_forever(data), range(2)):
        train_step(warm, wopt, batch, wimp, keep)
    del warm, wopt, wimp
    rec = {"model": model, "size": size, "seed": seed, "keep": keep, "lr": LR[f"{model}/{size}"],
           "parameters": m.num_parameters(),
           "steps": [], "evals": [], "target": target}
    cpu = wall = 0.0
    kept_real = []

    def evaluate(step):
        loss, acc = held_out(m, dev)
        e = {"step": step, "cpu_s": cpu, "wall_s": wall, "mlm_loss": loss, "mlm_accuracy": acc}
        if imp is not None:
            e["dropping_mlm_loss"], e["dropping_mlm_accuracy"] = held_out(m, dev, imp, keep)
        rec["evals"].append(e)
        return loss

    evaluate(0)
    for step, batch in enumerate(batches_forever(data), start=1):
        c0, w0 = time.process_time(), time.perf_counter()
        out = train_step(m, opt, batch, imp, keep)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        rec["steps"].append([cpu, wall, float(out.mlm_loss)])
        if imp is not None and step % 10 == 1:
            idx = imp.select(batch["input_ids"], batch["attention_mask"], keep=keep)
            kept_real.append(float(np.take_along_axis(batch["attention_mask"], idx, 1).sum() / batch["attention_mask"].sum()))
        if step % eval_every == 0:
            loss = evaluate(step)
            if target is not None and loss <= target:
                break
        if step >= steps:
            if step % eval_every:
                evaluate(step)
            break
    per_step = np.diff([[0.0, 0.0]] + [s[:2] for s in rec["steps"]], axis=0)  # (steps, 2) CPU, wall
    rec["step_cpu_median_s"], rec["step_wall_median_s"] = (float(x) for x in np.median(per_step, axis=0))
    if imp is not None:
        most, least = imp.extremes(8, min_count=20)
        name = lambda i: data.tokenizer.convert_ids_to_tokens([i])[0]  # noqa: E731
        rec["importance"] = {"most": [(name(i), s, c) for i, s, c in most], "least": [(name(i), s, c) for i, s, c in least]}
        rec["real_tokens_kept"] = float(np.mean(kept_real))
    return rec


def part_loss(args, log):
    runs_dir = os.path.join(args.work, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    records = []
    for size in args.sizes:
        for model in args.models:
            for seed in args.seeds:
                pair = []
                for keep in (None, args.keep):
                    name = f"{size}-{model}-seed{seed}-{'plain' if keep is None else f'keep{keep}'}.json"
                    path = os.path.join(runs_dir, name)
                    if os.path.isfile(path):
                        with open(path) as f:
                            pair.append(json.load(f))
                        continue
                    target = None if keep is None else pair[0]["evals"][-1]["mlm_loss"]
                    steps = args.steps[size]
                    limit = steps if keep is None else int(steps * args.max_factor)
                    log(f"[loss] {name}: up to {limit} steps" + (f", target {target:.4f}" if target else ""))
                    rec = run_training(model, size, seed, keep, limit, max(steps // args.evals, 1), args.work, target)
                    rec["threads"] = args.threads
                    with open(path + ".tmp", "w") as f:
                        json.dump(rec, f)
                    os.replace(path + ".tmp", path)
                    pair.append(rec)
                    log(f"[loss]   {len(rec['steps'])} steps, {rec['steps'][-1][0]:.0f} CPU s, held-out "
                        f"{rec['evals'][-1]['mlm_loss']:.4f}")
                records += [slim(r) for r in pair]
    return records


def slim(rec):
    """A run's record for the committed JSON: every 10th step (the full one stays in --work)."""
    steps = rec["steps"]
    return {**rec, "steps_every_10": steps[9::10] + ([steps[-1]] if len(steps) % 10 else []), "steps": len(steps)}


# ------------------------------------------------------------------------------ (a) step time
def part_step(args, log):
    out = []
    for size in args.sizes:
        for model in args.models:
            log(f"[step] {size} {model}: {args.repeats} plain and {args.repeats} dropping steps, alternating")
            m, opt, imp, data, _ = make_run(model, size, 0, args.keep, args.work)
            prof = StepProfiler(m)
            batches = batches_forever(data)
            for _ in range(3):  # warm-up, both kinds
                train_step(m, opt, next(batches), None, None)
                train_step(m, opt, next(batches), imp, args.keep)
            with prof:
                for r in range(2 * args.repeats):
                    batch = next(batches)
                    kind = "plain" if r % 2 == 0 else "dropping"
                    prof.begin(kind, m, batch, imp if kind == "dropping" else None, args.keep)
                    train_step(m, opt, batch, imp if kind == "dropping" else None, args.keep, prof)
                    prof.end()
            k = int(np.ceil(args.keep * LENGTH))
            rec = {"model": model, "size": size, "threads": args.threads, "keep": args.keep,
                   "parameters": m.num_parameters(), "layers": m.config.num_hidden_layers, **prof.summary(),
                   "flops_plain": step_flops(m.config, BATCH, LENGTH), "flops_dropping": step_flops(m.config, BATCH,
                                                                                                  LENGTH, k)}
            log(f"[step]   CPU ratio {rec['ratio_cpu']:.3f}, wall ratio {rec['ratio_wall']:.3f}")
            out.append(rec)
    return out


def machine(threads):
    from tinymobilebert.machine import describe

    return {**describe(), "threads": threads, "loadavg": os.getloadavg()}


def main(args):
    args.sizes, args.models = args.sizes.split(","), args.models.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.sizes, args.seeds, args.steps, args.evals, args.repeats = ["tiny"], [0], "40", 2, 3
        args.work, args.results = os.path.join(args.work, "quick"), os.path.join(args.work, "quick", "results")
    if "=" in args.steps:
        args.steps = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))}
    else:
        args.steps = {size: int(args.steps) for size in args.sizes}
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, "token_dropping.json")
    saved = json.load(open(path)) if os.path.isfile(path) else {}
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if not args.report:
        if args.part in ("step", "both"):
            saved["step"] = {"machine": machine(args.threads), "runs": part_step(args, log)}
        if args.part in ("loss", "both"):
            saved["loss"] = {"machine": machine(args.threads), "settings": {
                "steps": args.steps, "max_factor": args.max_factor, "evals": args.evals, "keep": args.keep,
                "batch": BATCH, "length": LENGTH, "lr": LR, "warmup": WARMUP, "eps": EPS},
                "runs": part_loss(args, log)}
        with open(path + ".tmp", "w") as f:
            json.dump(saved, f)
        os.replace(path + ".tmp", path)
    print(render(saved, args.results))


if __name__ == "__main__":
    main(_args)
