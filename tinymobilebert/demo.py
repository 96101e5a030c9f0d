"""The demo: the whole pipeline on the built-in corpus, in a few minutes on a laptop.

1. Documents: the Python standard library's docstrings (no download). The fine-tuning task's
   dev documents are set aside first, so pretraining never reads a dev sentence.
2. A WordPiece vocabulary trained on the pretraining documents.
3. A small MobileBERT pretrained with masked-LM and next-sentence prediction; held-out MLM
   accuracy is measured on documents it never trained on.
4. Fine-tuning on a task that needs word order (a bag of words is at chance by construction),
   from the pretrained weights and, for comparison, from scratch with the same steps; plus the
   bag-of-words logistic regression baseline.
5. A summary (also in {out}/summary.json, with the times, the machine and the thread counts
   that produced them) and the curves ({out}/curves.png).

The demo's folder is a run folder like any other (``train/run_folder.py``): a second demo into
it needs ``overwrite`` (or ``resume``, which continues each of its three runs). The README's
figures are rendered from summary.json by ``benchmarks/readme_figures.py``.
"""

from __future__ import annotations

import os
import platform
import time

from . import workflows as wf
from .checkpoint import write_json
from .train.run_folder import RunFolder

DEFAULTS = {"seed": 0, "pretrain_steps": 1000, "finetune_steps": 200, "task": "word_order"}
PARTS = ("pretrain", "finetune_pretrained", "finetune_scratch")


def machine() -> dict:
    """What produced the figures: CPU, cores, threads (BLAS and Numba), library versions."""
    import numba
    import numpy as np

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:  # not Linux
        pass
    blas = "?"
    try:
        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{dep.get('name')} {dep.get('version')}"
    except Exception:  # noqa: BLE001 - an older NumPy: the BLAS stays unnamed
        pass
    thread_env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                             "NUMBA_NUM_THREADS") if k in os.environ}
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "numba_threads": numba.get_num_threads(),
            "thread_env": thread_env, "blas": blas, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "platform": platform.platform(), "machine": platform.machine()}


def run_demo(out_dir="runs/demo", *, seed=None, pretrain_steps=None, finetune_steps=None, task=None, progress=None,
             progress_every=None, resume=False, overwrite=False, print_fn=print) -> dict:
    """Run the demo (see the module notes); returns the summary dict."""
    t0 = time.perf_counter()
    given = dict(seed=seed, pretrain_steps=pretrain_steps, finetune_steps=finetune_steps, task=task)
    run = RunFolder(out_dir, "demo", given, DEFAULTS, resume=resume, overwrite=overwrite, entries=PARTS)
    s = run.settings
    docs = wf.load_documents(None)
    the_task = wf.load_task(s["task"], docs, seed=s["seed"])
    dev_names = sorted(set(the_task.documents["dev"]))
    print_fn(f"corpus: {len(docs)} documents ({sum(len(d.text) for d in docs) / 1e6:.1f} MB); task {the_task.name}: "
             f"{len(the_task.train)} train / {len(the_task.dev)} dev examples from separate documents")
    run.start()
    P, F = s["pretrain_steps"], s["finetune_steps"]
    common = dict(seed=s["seed"], progress=progress, progress_every=progress_every)

    def part(name):
        folder = os.path.join(out_dir, name)
        return folder, {"resume": resume and os.path.isdir(folder)}

    folder, how = part("pretrain")
    pre = wf.pretrain(folder, exclude_documents=dev_names, steps=P, eval_every=max(P // 4, 1),
                      save_every=max(P // 2, 1), **common, **how)
    pre_dev = pre["last_dev"]
    print_fn(f"pretrained {pre['parameters']:,} parameters for {pre['steps']} steps ({pre['seconds']:.0f}s): "
             f"held-out MLM accuracy {pre_dev['mlm_accuracy']:.3f}, NSP accuracy {pre_dev.get('nsp_accuracy', 0):.3f}")

    folder, how = part("finetune_pretrained")
    ft = wf.finetune(folder, s["task"], model_dir=os.path.join(out_dir, "pretrain", "model"), steps=F,
                     eval_every=max(F // 4, 1), **common, **how)
    folder, how = part("finetune_scratch")
    scratch = wf.finetune(folder, s["task"], from_scratch=os.path.join(out_dir, "pretrain", "vocab.txt"), steps=F,
                          eval_every=max(F // 4, 1), baseline=False, **common, **how)
    summary = {
        "parameters": pre["parameters"], "vocab_size": pre["vocab_size"], "settings": s,
        "pretrain": {"steps": pre["steps"], "seconds": pre["seconds"], "first_loss": _first_loss(out_dir),
                     "last_loss": pre["last_train"]["loss"], "held_out_mlm_accuracy": pre_dev["mlm_accuracy"],
                     "held_out_mlm_loss": pre_dev["mlm_loss"], "held_out_nsp_accuracy": pre_dev.get("nsp_accuracy")},
        "task": the_task.name,
        "dev_accuracy": {"pretrained": ft["dev_accuracy"], "from_scratch": scratch["dev_accuracy"],
                         "bag_of_words": ft["bow_dev_accuracy"], "majority": ft["majority_dev_accuracy"]},
        "finetune_seconds": ft["seconds"] + scratch["seconds"],
        "total_seconds": time.perf_counter() - t0,
        "resumed": bool(resume),
        "machine": machine(),
    }
    write_json(os.path.join(out_dir, "summary.json"), wf._jsonable(summary))
    try:
        from .train.plot import plot_runs

        plot_runs([os.path.join(out_dir, r) for r in PARTS], os.path.join(out_dir, "curves.png"),
                  title="tinymobilebert demo")
    except ImportError:
        pass
    acc = summary["dev_accuracy"]
    print_fn("")
    print_fn(f"  model            MobileBERT, {summary['parameters']:,} parameters, vocabulary {summary['vocab_size']}")
    print_fn(f"  pretraining      loss {summary['pretrain']['first_loss']:.2f} -> {summary['pretrain']['last_loss']:.2f}; "
             f"held-out MLM accuracy {summary['pretrain']['held_out_mlm_accuracy']:.1%}")
    print_fn(f"  {the_task.name:16s} dev accuracy: pretrained {acc['pretrained']:.1%} | from scratch "
             f"{acc['from_scratch']:.1%} | bag of words {acc['bag_of_words']:.1%} | majority {acc['majority']:.1%}")
    print_fn(f"  time             {summary['total_seconds']:.0f}s in all, {_threads(summary['machine'])}; "
             f"results in {out_dir}")
    return summary


def _first_loss(out_dir):
    from .train import read_log

    train = [r for r in read_log(os.path.join(out_dir, "pretrain")) if r["split"] == "train"]
    return train[0]["loss"] if train else float("nan")


# ------------------------------------------------------------------------------ the README's figures
README_START = "<!-- demo-figures: written by `python benchmarks/readme_figures.py`; do not edit by hand -->"
README_END = "<!-- /demo-figures -->"


def readme_figures(results: dict) -> str:
    """The README's demo paragraph (between the markers) from ``benchmarks/demo_figures.json``."""
    s, m = results["summary"], results["summary"]["machine"]
    acc = s["dev_accuracy"]
    text = (f"With the default seed, on {m['cpu']} with {results['threads']} thread{'s' * (results['threads'] > 1)} "
            f"(Python {m['python']}, NumPy {m['numpy']}, Numba {m['numba']}, {m['blas']}; code at "
            f"{results['commit']}), the demo printed: held-out MLM accuracy {s['pretrain']['held_out_mlm_accuracy']:.1%} "
            f"after {s['pretrain']['steps']} pretraining steps; {s['task'].replace('_', ' ')} dev accuracy "
            f"{acc['pretrained']:.1%} pretrained, {acc['from_scratch']:.1%} from scratch, {acc['bag_of_words']:.1%} "
            f"bag of words (majority {acc['majority']:.1%}).")
    if results.get("timed"):
        text += f" It took {results['demo_seconds'] / 60:.1f} minutes"
        if results.get("test_seconds") is not None:
            text += f", and `python -m pytest -q` {results['test_seconds'] / 60:.1f} minutes"
        text += ", on that machine with nothing else running."
    else:
        text += (" Its times were not measured (a busy shared machine); `python benchmarks/readme_figures.py "
                 "--tests` measures them.")
    return "\n".join([README_START, *_wrap(text), README_END])


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
