"""The benchmark's DynaBERT row: inference latency of sub-networks against their FLOPs.

For a layout (MobileBERT, or plain BERT) at a size, a sequence classifier in float32, eval mode,
batch and length of the size: for every (w, d) in {0.25, 0.5, 0.75, 1.0} x {0.5, 0.75, 1.0},

* ``extracted``: the median forward time of ``model.extract_subnetwork(w, d)``, a model of its own;
* ``supernet``: the full model run with ``width_mult=w, depth_mult=d`` (slices of its weights).

Reported: each sub-network's FLOPs and time as fractions of the full model's, and supernet /
extracted. Targets (markers, never assertions): at paper size, w = 0.5, d = 0.5 takes at most
0.35x the full model's time; the supernet at (w, d) is within 1.15x of the extracted model
(slicing must not copy weights on every call).
"""

from __future__ import annotations

import gc

WIDTHS = (0.25, 0.5, 0.75, 1.0)
DEPTHS = (0.5, 0.75, 1.0)
LAYOUTS = ("mobilebert", "bert")
TARGET_HALF_HALF_PAPER = 0.35  # w = 0.5, d = 0.5 time / full time, at paper size
TARGET_SUPERNET_VS_EXTRACTED = 1.15

# plain-BERT configs per benchmark size (MobileBERT's are measure.SIZES'); paper = BERT-base
BERT_SIZES = {
    "micro": dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "tiny": dict(vocab_size=1024, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
    "small": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=1024),
    "paper": {},
}


def layout_config(layout: str, size: str):
    """(config, B, T): the size's MobileBERT, or the plain BERT of that size (BERT-base at paper)."""
    from ..config import bert_base
    from .measure import size_config

    cfg, B, T = size_config(size)
    if layout == "bert":
        s = BERT_SIZES[size]
        cfg = bert_base(**({**s, "embedding_size": s["hidden_size"], "intra_bottleneck_size": s["hidden_size"]}
                           if s else {}))
    return cfg, B, T


def dynabert_sizes(sizes) -> list:
    """The sizes the DynaBERT row measures: small and paper among ``sizes``, else all of them."""
    return [s for s in sizes if s in ("small", "paper")] or list(sizes)


def worker_dynabert(spec) -> dict:
    """{"layout/size": times of every (w, d), extracted and supernet} for each of ``spec["layouts"]``
    at ``spec["size"]`` (a subprocess worker; one process for the layouts saves a start-up)."""
    return {f"{layout}/{spec['size']}": measure_layout(layout, spec) for layout in spec["layouts"]}


def measure_layout(layout: str, spec) -> dict:
    """Times of every (w, d), extracted and supernet, for one layout at ``spec["size"]``."""
    import numpy as np

    from ..costs import forward_flops
    from ..dynabert.extract import subnetwork_config
    from ..model import MobileBertForSequenceClassification
    from .measure import time_calls

    cfg, B, T = layout_config(layout, spec["size"])
    model = MobileBertForSequenceClassification(cfg, seed=0, dtype=np.float32).eval()
    ids = np.random.default_rng(0).integers(1, cfg.vocab_size, (B, T))
    rows = []
    for d in spec.get("depths", DEPTHS):
        for w in spec.get("widths", WIDTHS):
            sub = model.extract_subnetwork(w, d)
            extracted = time_calls(lambda: sub.forward(ids, keep_cache=False), spec["warmup"], spec["repeats"])
            del sub
            gc.collect()
            supernet = time_calls(lambda: model.forward(ids, width_mult=w, depth_mult=d, keep_cache=False),
                                  spec["warmup"], spec["repeats"])
            rows.append({"width": w, "depth": d, "flops": forward_flops(subnetwork_config(cfg, w, d), B, T),
                         "extracted": extracted, "supernet": supernet})
    return {"layout": layout, "size": spec["size"], "batch": B, "seq_len": T, "rows": rows}


def dynabert_ratios(entry) -> list:
    """Per row: FLOPs and extracted time as fractions of the full model's, and supernet / extracted."""
    full = next((r for r in entry["rows"] if r["width"] == 1.0 and r["depth"] == 1.0), None)
    out = []
    for r in entry["rows"]:
        t_ext, t_sup = r["extracted"]["median"], r["supernet"]["median"]
        out.append({"width": r["width"], "depth": r["depth"],
                    "flops_vs_full": r["flops"] / full["flops"] if full else None,
                    "time_vs_full": t_ext / full["extracted"]["median"] if full else None,
                    "supernet_vs_extracted": t_sup / t_ext})
    return out


def dynabert_targets(res, target) -> None:
    """Add the DynaBERT targets to the benchmark's list (``target(name, value, limit)``)."""
    for key, entry in res.get("dynabert", {}).items():
        if "error" in entry:
            continue
        ratios = dynabert_ratios(entry)
        target(f"dynabert {key}: supernet at (w, d) <= {TARGET_SUPERNET_VS_EXTRACTED}x the extracted model (worst)",
               max(r["supernet_vs_extracted"] for r in ratios), TARGET_SUPERNET_VS_EXTRACTED)
        half = next((r for r in ratios if r["width"] == 0.5 and r["depth"] == 0.5), None)
        if entry["size"] == "paper" and half is not None:
            target(f"dynabert {key}: w=0.5, d=0.5 <= {TARGET_HALF_HALF_PAPER}x the full model's time",
                   half["time_vs_full"], TARGET_HALF_HALF_PAPER)


def format_dynabert(res) -> list:
    """The report's DynaBERT section, as lines."""
    lines = []
    for key, entry in res.get("dynabert", {}).items():
        if "error" in entry:
            lines += ["", f"DynaBERT {key}: {entry['error']}"]
            continue
        lines += ["", f"DynaBERT sub-networks, {key} (classifier, inference, batch {entry['batch']} x {entry['seq_len']}): "
                      "extracted model's median ms; FLOPs and time as fractions of the full model's; supernet run at "
                      f"(w, d) / extracted (target <= {TARGET_SUPERNET_VS_EXTRACTED}x)",
                  f"{'w':>5s} {'d':>5s} {'GFLOPs':>8s} {'ms':>9s} {'FLOPs/full':>10s} {'time/full':>10s} "
                  f"{'supernet/extracted':>19s}"]
        for r, x in zip(entry["rows"], dynabert_ratios(entry)):
            flag = "" if x["supernet_vs_extracted"] <= TARGET_SUPERNET_VS_EXTRACTED else "  MISS"
            lines.append(f"{r['width']:5.2f} {r['depth']:5.2f} {r['flops'] / 1e9:8.2f} {r['extracted']['median'] * 1e3:9.2f} "
                         f"{x['flops_vs_full']:10.2f} {x['time_vs_full']:10.2f} {x['supernet_vs_extracted']:18.2f}x{flag}")
    return lines
