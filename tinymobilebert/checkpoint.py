"""Read and write transformers model directories: config.json, model.safetensors, vocab.txt.

A directory saved here loads in transformers (``AutoModelForPreTraining.from_pretrained(path)``
and friends) with no missing or unexpected keys, and a directory saved by transformers loads
here, for MobileBERT (``model_type: mobilebert``) and BERT (``model_type: bert``, as the
plain-BERT layout). No torch: weights go through the safetensors package's NumPy API.

Names are the same on both sides; what differs between head classes is handled the way
transformers handles it:

* an encoder prefix (``mobilebert.`` / ``bert.``) present in the file but not in the model, or
  the other way round, is stripped or added;
* head tensors the model has no use for (``cls.*`` when loading a bare encoder, ``classifier.*``
  when loading a pretraining model) are skipped and reported;
* head tensors the file lacks (a classifier when fine-tuning from a pretrained encoder; the
  pooler, which masked-LM checkpoints do not have) keep their fresh initialisation and are
  reported;
* buffers (``position_ids``), tied aliases (``cls.predictions.decoder.*``) and tensors
  transformers builds but never uses in a layout (the embedding transformation of a layout
  without trigram and with E = H, an empty ``cls.predictions.dense``) are accepted and skipped.

Missing or unexpected *encoder* tensors are an error listing them, unless ``strict=False``.
Every file is written to a temporary name in the same folder and then renamed, so a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_write
from .config import MobileBertConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
VOCAB_NAME = "vocab.txt"
_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")


@dataclass
class CheckpointReport:
    """What ``from_pretrained`` did with the names of a checkpoint."""

    initialized: list = field(default_factory=list)  # model tensors the file lacked (heads): fresh init kept
    unused: list = field(default_factory=list)  # file tensors the model has no place for (other heads)
    skipped: list = field(default_factory=list)  # buffers, tied aliases, tensors transformers never uses
    missing: list = field(default_factory=list)  # encoder tensors the file lacked (strict=False only)
    unexpected: list = field(default_factory=list)  # unknown encoder tensors in the file (strict=False only)


# ------------------------------------------------------------------------------------ files
def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    atomic_write(path, write)


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    # transformers refuses a safetensors file whose metadata lacks a known "format"
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})}))


class DamagedFileError(ValueError):
    """A file that exists but cannot be read as what it should be: ``path`` and ``problem`` say which and why."""

    def __init__(self, path, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")


def _size_note(path) -> str:
    size = os.path.getsize(path)
    return "the file is empty" if size == 0 else f"the file is {size:,} bytes; truncated, or not this kind of file?"


def read_safetensors(path) -> dict:
    """All tensors of one safetensors file; a damaged file is a ``DamagedFileError`` naming it."""
    from safetensors.numpy import load_file

    try:
        return load_file(os.fspath(path))
    except (OSError, MemoryError):
        raise
    except Exception as e:  # safetensors' SafetensorError, or a decoding error inside it
        reason = str(e).removeprefix("Error while deserializing header: ")
        raise DamagedFileError(path, f"not a readable safetensors file ({reason}); {_size_note(path)}") from None


def read_json_file(path):
    """The JSON value in ``path``; invalid or empty JSON is a ``DamagedFileError`` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFileError(path, f"not valid JSON ({e}); {_size_note(path)}") from None


def read_safetensors_dir(path: str) -> dict:
    """All tensors of a model directory (single file or shards listed in an index)."""
    single = os.path.join(path, WEIGHTS_NAME)
    index = os.path.join(path, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        weight_map = read_json_file(index)
        if not isinstance(weight_map, dict) or not isinstance(weight_map.get("weight_map"), dict):
            raise DamagedFileError(index, 'expected {"weight_map": {tensor name: shard file}}')
        tensors = {}
        for shard in sorted(set(weight_map["weight_map"].values())):
            shard_path = os.path.join(path, shard)
            if not os.path.isfile(shard_path):
                raise FileNotFoundError(f"{index} lists the shard {shard}, which is not in {path}")
            tensors.update(read_safetensors(shard_path))
        return tensors
    raise no_weights_error(path)


def no_weights_error(path) -> FileNotFoundError:
    """The error for a model directory without safetensors weights (saying how to convert a
    pytorch_model.bin, which needs torch to read)."""
    if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        return FileNotFoundError(
            f"{path} holds only pytorch_model.bin, which needs torch to read. Convert it once with transformers: "
            f"AutoModel.from_pretrained(path).save_pretrained(path, safe_serialization=True)")
    return FileNotFoundError(f"no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}) in {path}")


def read_config(path: str) -> MobileBertConfig:
    file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no {CONFIG_NAME} at {file}")
    d = read_json_file(file)
    if not isinstance(d, dict):
        raise DamagedFileError(file, f"expected a JSON object of config fields, got {type(d).__name__}")
    return MobileBertConfig.from_dict(d)



TOKENIZER_FILES = (VOCAB_NAME, "tokenizer_config.json")


def model_files(path) -> list[str]:
    """The files of a model directory that ``from_pretrained`` reads, by name: config.json, the
    weights (model.safetensors, or the index and every shard it lists) and, when present, the
    tokenizer's vocab.txt and tokenizer_config.json."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, WEIGHTS_NAME)):
        weights = [WEIGHTS_NAME]
    elif not os.path.isfile(os.path.join(path, WEIGHTS_INDEX_NAME)):
        raise no_weights_error(path)
    else:
        index = read_json_file(os.path.join(path, WEIGHTS_INDEX_NAME))
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise DamagedFileError(os.path.join(path, WEIGHTS_INDEX_NAME),
                                   'expected {"weight_map": {tensor name: shard file}}')
        weights = [WEIGHTS_INDEX_NAME, *sorted(set(weight_map.values()))]
    tokenizer = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(path, n))]
    return [CONFIG_NAME, *weights, *tokenizer]


def model_fingerprint(path) -> dict:
    """{file name: SHA-256 hex digest} of ``model_files(path)``: what a run records of a model it
    reads (a teacher), to tell on resume whether that model is still the same. Each file is
    read once, in 1 MiB chunks (no copy of the weights in memory); ``sha256sum`` gives the same
    digests."""
    digests = {}
    for name in model_files(path):
        h = hashlib.sha256()
        with open(os.path.join(os.fspath(path), name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digests[name] = h.hexdigest()
    return digests


# ------------------------------------------------------------------------------------ names
def transformers_class_name(model) -> str:
    """transformers' class for this model: e.g. MobileBertForPreTraining or BertForMaskedLM."""
    family = "Bert" if model.config.model_type == "bert" else "MobileBert"
    return family + type(model).__name__[len("MobileBert"):]


def _never_used_by_transformers(cfg: MobileBertConfig) -> dict:
    """Tensors transformers' MobileBERT builds for this layout but never uses: name -> shape."""
    if cfg.model_type != "mobilebert":
        return {}
    out = {}
    if not cfg.uses_embedding_transformation:  # built with in=E even when trigram is off and E == H
        out["embeddings.embedding_transformation.weight"] = (cfg.hidden_size, cfg.embedding_size)
        out["embeddings.embedding_transformation.bias"] = (cfg.hidden_size,)
    if cfg.hidden_size == cfg.embedding_size:
        out["cls.predictions.dense.weight"] = (0, cfg.vocab_size)
    return out


def _map_names(model, tensors: dict, strict: bool) -> tuple[dict, CheckpointReport]:
    """Match checkpoint names to the model's; returns ({model name: array}, report).

    Each key is a head tensor (``cls.*``, ``classifier.*``...) or an encoder tensor, with or
    without an encoder prefix; an encoder tensor's name in the model is the model's prefix plus
    the key without its prefix.
    """
    report = CheckpointReport()
    never = set(_never_used_by_transformers(model.config))
    aliases = set(model._alias_keys())

    def head_like(bare):  # the pooler too: masked-LM checkpoints have none, classifiers need one
        return bare.startswith(_HEAD_PREFIXES) or bare.startswith("pooler.")

    mapped = {}
    for key, value in tensors.items():
        if key.startswith(_HEAD_PREFIXES):
            bare, name = key, key
        else:
            bare = key.split(".", 1)[1] if key.startswith(("mobilebert.", "bert.")) else key
            name = model.base_prefix + bare
        if bare.endswith("position_ids") or name in aliases or bare in never:
            report.skipped.append(key)
        elif name in model.params:
            mapped[name] = value
        elif head_like(bare):
            report.unused.append(key)
        else:
            report.unexpected.append(key)
    for name in model.params:
        if name not in mapped:
            bare = name[len(model.base_prefix):] if name.startswith(model.base_prefix) else name
            (report.initialized if head_like(bare) else report.missing).append(name)
    if strict and (report.missing or report.unexpected):
        raise KeyError(f"from_pretrained: the checkpoint does not fit {type(model).__name__}: "
                       f"missing {report.missing}, unexpected {report.unexpected} (strict=False loads the rest)")
    return mapped, report


# ------------------------------------------------------------------------------------ API
def load_pretrained(cls, path, dtype=np.float32, strict: bool = True, seed: int = 0, **config_changes):
    """Build a ``cls`` model from a transformers directory (see the module notes).

    ``config_changes`` override config fields (e.g. ``num_labels=3`` for a new classifier).
    The model is returned in eval mode, as transformers does; ``model.load_report`` says what
    was initialised, skipped or unused, and ``model.tokenizer`` holds the directory's tokenizer
    when it has a vocab.txt.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"from_pretrained: {path} is not a directory")
    cfg = read_config(path)
    if config_changes:
        cfg = cfg.replace(**config_changes)
    model = cls(cfg, seed=seed, dtype=dtype)
    tensors = read_safetensors_dir(path)
    mapped, report = _map_names(model, tensors, strict)
    bad = [f"{n}: expected {model.params[n].shape}, got {v.shape}" for n, v in mapped.items()
           if v.shape != model.params[n].shape]
    if bad:
        raise ValueError("from_pretrained: shape mismatch for " + "; ".join(bad))
    for name, value in mapped.items():
        model.params[name][...] = value.astype(model.dtype, copy=False)
    if report.initialized:
        warnings.warn(f"{type(model).__name__}.from_pretrained({path!r}): newly initialised (not in the "
                      f"checkpoint): {report.initialized}", stacklevel=3)
    model.load_report = report
    model.tokenizer = None
    if os.path.isfile(os.path.join(path, VOCAB_NAME)):
        from .tokenizer import BertTokenizer

        model.tokenizer = BertTokenizer.from_pretrained(path)
    return model.eval()


def save_pretrained(model, path, tokenizer=None, dtype=None, compact=False) -> None:
    """Write config.json, model.safetensors (and vocab.txt with the tokenizer) into ``path``.

    ``tokenizer`` defaults to ``model.tokenizer`` when set; ``dtype`` (e.g. np.float32) casts
    the stored weights (default: the model's own dtype).

    A model with fewer heads than its block width holds (``attention_head_size`` set: an
    extracted DynaBERT sub-network) is written, by default, with its heads padded back to the
    full count, the extra ones zero: the same function, in a layout transformers loads (see
    ``dynabert.extract``). ``compact=True`` writes it as it is instead, a form only
    ``from_pretrained`` here reads (transformers refuses it: its weight shapes do not match).
    """
    tensors = model.state_dict()
    if dtype is not None:
        tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    store_dtype = next(iter(tensors.values())).dtype
    prefix = model.base_prefix
    cfg = model.config
    if cfg.attention_head_size is not None and not compact:
        from .dynabert.extract import pad_heads_for_transformers

        cfg, tensors = pad_heads_for_transformers(cfg, tensors, prefix)  # or a clear error, before any write
    os.makedirs(path, exist_ok=True)
    for name, shape in _never_used_by_transformers(cfg).items():
        full = name if name.startswith("cls.") else prefix + name
        if name.startswith("cls.") and not any(k.startswith("cls.predictions") for k in tensors):
            continue
        tensors[full] = np.zeros(shape, store_dtype)  # so transformers finds every tensor it builds
    config = cfg.to_dict()
    config["architectures"] = [transformers_class_name(model)]
    config["dtype"] = str(store_dtype)
    write_safetensors(os.path.join(path, WEIGHTS_NAME), tensors)
    write_json(os.path.join(path, CONFIG_NAME), config)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
