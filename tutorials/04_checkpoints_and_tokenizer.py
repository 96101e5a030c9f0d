# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 · Checkpoints and the tokenizer: the bridge to transformers
#
# tinymobilebert keys every parameter by transformers' state-dict name and every config field
# by transformers' config name, so a model directory moves between the two without a rename
# table. Here we load a small BERT directory written by transformers (config.json,
# model.safetensors, vocab.txt), tokenize two sentences, check our hidden states against the
# ones transformers computed and stored, and save a directory transformers can load back.

# %%
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open

from tinymobilebert import MobileBertForMaskedLM, MobileBertForPreTraining

try:  # run as a script (or by the tests)
    ROOT = Path(__file__).resolve().parent.parent
except NameError:  # opened as a notebook from tutorials/
    ROOT = Path.cwd().parent
FOLDER = ROOT / "tests" / "fixtures" / "models" / "bert_with_tokenizer"
print(sorted(os.listdir(FOLDER)))

# %% [markdown]
# ## Load
#
# `from_pretrained` reads the config (here `model_type: "bert"`: the plain-BERT layout, with
# parameters named `bert.*` exactly as in the file), the weights through safetensors' NumPy API
# (no torch), and the tokenizer when the folder has a `vocab.txt`. Any head class loads any
# checkpoint: heads the file lacks are initialised and listed in `model.load_report`.

# %%
model = MobileBertForMaskedLM.from_pretrained(FOLDER, dtype=np.float64)
tok = model.tokenizer
print(model.config.model_type, model.num_parameters(), "parameters;", len(tok), "word pieces")
print(model.load_report)

# %% [markdown]
# ## Tokenize
#
# `BertTokenizer` gives the ids transformers' `BertTokenizer` gives: basic tokenization
# (lower-casing, accents, punctuation), then greedy longest-match WordPiece with `##` pieces.

# %%
with safe_open(str(FOLDER / "reference.safetensors"), "np") as f:
    ref = {k: f.get_tensor(k) for k in f.keys()}
    sentences = json.loads(f.metadata()["sentences"])
print(tok.tokenize(sentences[0]))
batch = tok(sentences, padding=True)
print(batch["input_ids"])
same_ids = all(np.array_equal(batch[k], ref[k]) for k in ("input_ids", "token_type_ids", "attention_mask"))
print("ids equal transformers':", same_ids)

# %% [markdown]
# ## Compare hidden states with transformers' own
#
# The weights are stored in float32; both sides compute in float64, so the agreement is to
# rounding.

# %%
out = model.forward(**batch, output_hidden_states=True)
ours = np.stack(out.hidden_states)
diff = np.abs(ours - ref["hidden_states"]).max() / np.abs(ref["hidden_states"]).max()
print(f"{len(out.hidden_states)} hidden states, max relative difference {diff:.1e}")
print("(random) model's masked-LM guess at position 2:", tok.convert_ids_to_tokens([int(out.logits[0, 2].argmax())]))

# %% [markdown]
# ## Save a directory transformers can load
#
# `save_pretrained` writes config.json (transformers' field names plus this library's own
# options, which transformers keeps as extra attributes), model.safetensors (tied weights
# stored once, as transformers does) and vocab.txt. With transformers installed,
# `AutoModelForMaskedLM.from_pretrained(folder)` loads it with no missing or unexpected keys.

# %%
out_dir = Path(tempfile.mkdtemp())
model.save_pretrained(out_dir)
config = json.loads((out_dir / "config.json").read_text())
print(sorted(os.listdir(out_dir)), config["architectures"], config["model_type"])

try:
    import torch
    import transformers

    hf, info = transformers.AutoModelForMaskedLM.from_pretrained(out_dir, output_loading_info=True,
                                                                 dtype=torch.float64)
    with torch.no_grad():
        hf_out = hf.eval()(**{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True)
    hf_diff = float(np.abs(hf_out.hidden_states[-1].numpy() - out.hidden_states[-1]).max())
    print("transformers loaded it:", {k: v for k, v in info.items() if v} or "no missing/unexpected keys",
          f"; max difference {hf_diff:.1e}")
except ImportError:
    hf_diff = 0.0
    print("(transformers is not installed: skipping the load in transformers)")

# %% [markdown]
# The MobileBERT side works the same way. A MobileBERT student saved by transformers:

# %%
student = MobileBertForPreTraining.from_pretrained(ROOT / "tests" / "fixtures" / "models" / "mobilebert_student")
print([n for n in student.params if ".layer.0.bottleneck" in n][:4])

# %%
reloaded = MobileBertForMaskedLM.from_pretrained(out_dir, dtype=np.float64)
assert same_ids
assert diff < 1e-9
assert hf_diff < 1e-9
assert all(np.array_equal(reloaded.params[k], model.params[k]) for k in model.params)
assert (out_dir / "vocab.txt").exists() and config["model_type"] == "bert"
print("tutorial 04: all checks passed")
