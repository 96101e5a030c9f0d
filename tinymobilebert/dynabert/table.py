"""The width x depth table: what each sub-network scores, weighs, costs and takes.

For each (w, d): dev accuracy of the supernet run at (w, d), the parameters and forward FLOPs per
token of the extracted sub-network (``costs``: embeddings, pooler and classifier included in the
parameters; the encoder at ``seq_len`` tokens in the FLOPs), and its measured inference latency
(the extracted model, eval mode, median wall-clock time of a forward pass at batch 1 and 32).

Several runs (seeds) of the same recipe combine into one table with the accuracy's mean and
standard deviation (``combine_tables``):

    python -m tinymobilebert.dynabert runs/dyna-s0 runs/dyna-s1     # their table.json files
"""

from __future__ import annotations

import statistics

import numpy as np

from ..costs import forward_flops_per_token
from .extract import extract_subnetwork

LATENCY_BATCHES = (1, 32)


def measure_latency(model, batch_size: int, seq_len: int, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of ``model.forward`` (eval, no caches) on random ids (batch_size, seq_len),
    after ``warmup`` untimed passes (``benchmark.measure.call_times``)."""
    from ..benchmark.measure import call_times

    ids = np.random.default_rng(0).integers(1, model.config.vocab_size, (batch_size, seq_len))
    model.eval()
    return statistics.median(call_times(lambda: model.forward(ids, keep_cache=False), warmup, repeats))


def subnetwork_table(model, subnetworks, evaluate=None, seq_len: int = 64, latency_repeats: int = 5,
                     latency_batches=LATENCY_BATCHES) -> list:
    """One row per (w, d) of ``subnetworks`` (see the module notes).

    Parameters
    ----------
    model : the trained supernet (any class; a classifier for accuracies)
    subnetworks : list of (width_mult, depth_mult)
    evaluate : callable (model, width_mult, depth_mult) -> dict of metrics (e.g. {"accuracy": ...}), or None
    seq_len : tokens per sequence for FLOPs and latency
    latency_repeats : timed forward passes per batch size (0: no latency columns)

    Returns
    -------
    list of dict: width, depth, heads, neurons, layers, parameters, flops_per_token, the metrics,
    and latency_b{B}_ms for each batch size.
    """
    rows = []
    for w, d in subnetworks:
        sub = extract_subnetwork(model, w, d)
        cfg = sub.config
        row = {"width": w, "depth": d, "heads": cfg.num_attention_heads, "neurons": cfg.intermediate_size,
               "layers": cfg.num_hidden_layers, "parameters": sub.num_parameters(),
               "flops_per_token": forward_flops_per_token(cfg, seq_len)}
        if evaluate is not None:
            row.update(evaluate(model, w, d))
        if latency_repeats:
            for b in latency_batches:
                row[f"latency_b{b}_ms"] = 1e3 * measure_latency(sub, b, seq_len, latency_repeats)
        rows.append(row)
    return rows


def format_table(rows, metric: str = "accuracy") -> str:
    """The rows as a Markdown table (a spread column ``{metric}_std`` is shown when present)."""
    lat = sorted({k for r in rows for k in r if k.startswith("latency_b")}, key=lambda k: int(k[9:-3]))
    head = ["width", "depth", "heads", "FFN", "layers", f"dev {metric}", "parameters", "MFLOPs/token"]
    head += [f"latency b={k[9:-3]} (ms)" for k in lat]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "-" if metric not in r else f"{100 * r[metric]:.1f}"
        if f"{metric}_std" in r:
            acc += f" ± {100 * r[metric + '_std']:.1f}"
        cells = [f"{r['width']:g}", f"{r['depth']:g}", str(r["heads"]), str(r["neurons"]), str(r["layers"]), acc,
                 f"{r['parameters']:,}", f"{r['flops_per_token'] / 1e6:.2f}"]
        cells += [f"{r[k]:.2f}" if k in r else "-" for k in lat]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def combine_tables(tables, metric: str = "accuracy") -> list:
    """Rows of several runs' tables as one: ``metric`` averaged with its standard deviation
    (``{metric}_std``, population), latencies as their median; sizes must agree."""
    out = []
    for rows in zip(*tables):
        first = rows[0]
        if any((r["width"], r["depth"], r["parameters"]) != (first["width"], first["depth"], first["parameters"])
               for r in rows):
            raise ValueError("combine_tables: the tables do not list the same sub-networks in the same order")
        row = dict(first)
        if all(metric in r for r in rows):
            values = np.array([r[metric] for r in rows])
            row[metric], row[f"{metric}_std"], row["runs"] = float(values.mean()), float(values.std()), len(rows)
        for key in (k for k in first if k.startswith("latency_b")):
            row[key] = float(np.median([r[key] for r in rows]))
        out.append(row)
    return out


def main(argv=None) -> None:
    """Print the combined table of run folders (or table.json files) given on the command line."""
    import argparse
    import json
    import os

    ap = argparse.ArgumentParser(prog="python -m tinymobilebert.dynabert",
                                 description="The width x depth table of several dynabert runs (seeds) combined.")
    ap.add_argument("runs", nargs="+", help="dynabert run folders or their table.json files")
    args = ap.parse_args(argv)
    tables = []
    for path in args.runs:
        path = os.path.join(path, "table.json") if os.path.isdir(path) else path
        with open(path) as f:
            tables.append(json.load(f))
    print(format_table(combine_tables(tables)))
