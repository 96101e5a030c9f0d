"""``python -m tinymobilebert inspect --model DIR [--text ...]``: a model's activations, layer by layer.

Loads a model directory (a transformers MobileBERT/BERT directory, or ``RUN/model`` of a run,
or one of the checkpoints under ``RUN/checkpoints/``), runs one forward pass in eval mode on a
few texts (tokenized with the directory's vocab.txt; without one, seeded random token ids), and
prints the statistics of every activation (``diagnostics.activation_stats``), which parameters
hold NaN or inf, and the float16 / int8 export warnings (``diagnostics.export_warnings``, whose
docstring states the rules). Exit status 1 when anything is non-finite, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np

from .diagnostics import activation_stats, export_warnings, format_stats, nonfinite_parameters

DEFAULT_TEXTS = ("MobileBERT keeps the width of BERT-large inside its blocks and narrows it in between.",
                 "The quick brown fox jumps over the lazy dog.")


def load_model_dir(path, dtype=np.float32):
    """The model class a directory's config names (architectures), loaded with ``from_pretrained``."""
    from .checkpoint import read_config
    from .model import (MobileBertForMaskedLM, MobileBertForPreTraining, MobileBertForSequenceClassification,
                        MobileBertModel)

    arch = (read_config(path).extra.get("architectures") or [""])[0]
    for suffix, cls in (("ForPreTraining", MobileBertForPreTraining), ("ForMaskedLM", MobileBertForMaskedLM),
                        ("ForSequenceClassification", MobileBertForSequenceClassification)):
        if arch.endswith(suffix):
            break
    else:
        cls = MobileBertModel
    with warnings.catch_warnings():  # a head the file lacks is initialised: not what we inspect
        warnings.simplefilter("ignore")
        return cls.from_pretrained(path, dtype=dtype, strict=False)


def model_inputs(model, texts=None, max_length=64, seed=0) -> tuple[dict, str]:
    """(forward inputs, a sentence saying what they are) for ``texts`` or seeded random ids."""
    cfg = model.config
    T = min(max_length, cfg.max_position_embeddings)
    tok = model.tokenizer
    if tok is not None:
        texts = list(texts or DEFAULT_TEXTS)
        enc = tok(texts, max_length=T, padding=True, truncation=True)
        inputs = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        return inputs, f"{len(texts)} texts, {int(enc['attention_mask'].sum())} tokens (the model's vocab.txt)"
    if texts:
        raise ValueError("--text needs a tokenizer, and this model directory has no vocab.txt")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size, (2, T))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}, \
        f"2 x {T} random token ids (seed {seed}; the directory has no vocab.txt)"


def inspect_model(path, texts=None, max_length=64, seed=0) -> dict:
    """Everything ``inspect`` prints, as a dict: model, inputs, stats, warnings, bad parameters."""
    model = load_model_dir(path).eval()
    inputs, described = model_inputs(model, texts, max_length, seed)
    stats = activation_stats(model, **inputs)
    return {"model": model, "inputs": described, "stats": stats, "warnings": export_warnings(stats),
            "nonfinite_parameters": nonfinite_parameters(model)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinymobilebert inspect",
                                 description="A model directory's activations, layer by layer: max |x|, mean, std, "
                                             "NaN/inf, and where float16 or int8 export would break. Exit status 1 "
                                             "when anything is non-finite.")
    ap.add_argument("--model", required=True, help="a model directory (config.json + model.safetensors)")
    ap.add_argument("--text", action="append", default=None,
                    help="a text to run (repeat for several; default: two built-in sentences)")
    ap.add_argument("--max-length", type=int, default=64, help="tokens per text, specials included (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the random ids used without a vocab.txt")
    ap.add_argument("--json", default=None, help="also write the statistics here")
    args = ap.parse_args(argv)
    r = inspect_model(args.model, args.text, args.max_length, args.seed)
    m = r["model"]
    cfg = m.config
    print(f"{args.model}: {type(m).__name__}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.normalization_type}, {cfg.hidden_act}; input: {r['inputs']}")
    bad = r["nonfinite_parameters"]
    print("parameters: " + ("all finite" if not bad else
                            "NON-FINITE in " + ", ".join(f"{k} ({v} values)" for k, v in bad.items())))
    print(format_stats(r["stats"], r["warnings"]))
    errors = sum(level == "error" for level, _, _ in r["warnings"])
    print(f"{len(r['stats'])} tensors; {errors} errors, {len(r['warnings']) - errors} warnings "
          "(rules: tinymobilebert.diagnostics.export_warnings)")
    if args.json:
        from .atomic import write_text_atomic

        rows = [{**vars(s), "shape": list(s.shape)} for s in r["stats"]]
        write_text_atomic(args.json, json.dumps({"model": args.model, "inputs": r["inputs"], "stats": rows,
                                                 "nonfinite_parameters": bad,
                                                 "warnings": [{"level": lv, "tensor": s.name, "message": msg}
                                                              for lv, s, msg in r["warnings"]]}, indent=1) + "\n")
    nonfinite = bool(bad) or any(s.nonfinite for s in r["stats"])
    return 1 if nonfinite else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
