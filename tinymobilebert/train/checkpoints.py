"""Training checkpoints: everything needed to resume a run exactly, written so none is ever half-written.

A checkpoint is a folder ``{out}/checkpoints/step-{step:08d}/`` holding

    config.json, model.safetensors [, vocab.txt]   the model, as ``save_pretrained`` writes it
    optimizer.safetensors                           the optimizer's arrays (moments)
    extra.safetensors                               arrays of the trainer's ``extra_state``
                                                    objects, keyed "{name}/{key}" (when given)
    trainer_state.json                              step, epoch, position in the epoch, the
                                                    optimizer's scalars, the dropout generator's
                                                    state, the extra state's scalars, and
                                                    anything the caller adds

It is written into ``step-XXXXXXXX.tmp-<pid>`` and renamed into place only when complete; then
``{out}/checkpoints/latest`` (a one-line file naming it) is replaced atomically. A run killed at
any moment leaves either the previous checkpoint or the new one, never a mixture. Older
checkpoints beyond ``keep`` are removed after the new one is in place.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from ..atomic import atomic_write
from ..checkpoint import write_json, write_safetensors

LATEST = "latest"


def checkpoint_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "checkpoints")


def _split_extra(extra_state: dict) -> tuple[dict, dict]:
    """{name: obj} -> ({"name/key": array}, {name: {key: scalar}}) from each ``obj.state_dict()``."""
    arrays, scalars = {}, {}
    for name, obj in extra_state.items():
        for key, value in obj.state_dict().items():
            if isinstance(value, np.ndarray):
                arrays[f"{name}/{key}"] = np.ascontiguousarray(value)
            else:
                scalars.setdefault(name, {})[key] = value.item() if isinstance(value, np.generic) else value
    return arrays, scalars


def save_training_checkpoint(out_dir, step, model, optimizer, state: dict, tokenizer=None, keep: int = 2,
                             extra_state: dict | None = None) -> str:
    """Write checkpoint ``step`` (see the module notes); returns its folder."""
    root = checkpoint_dir(out_dir)
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    tmp = f"{final}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    model.save_pretrained(tmp, tokenizer=tokenizer, compact=True)  # resume needs the model's own shapes
    opt_state = optimizer.state_dict()
    arrays = {k: v for k, v in opt_state.items() if isinstance(v, np.ndarray)}
    scalars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in opt_state.items()
               if not isinstance(v, np.ndarray)}
    write_safetensors(os.path.join(tmp, "optimizer.safetensors"), arrays)
    extra_arrays, extra_scalars = _split_extra(extra_state or {})
    if extra_arrays:
        write_safetensors(os.path.join(tmp, "extra.safetensors"), extra_arrays)
    full_state = dict(state, step=step, optimizer_scalars=scalars, extra_scalars=extra_scalars,
                      dropout_rng=model.dropout_rng.bit_generator.state)
    write_json(os.path.join(tmp, "trainer_state.json"), full_state)
    if os.path.exists(final):  # the same step saved twice (a resumed run): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(os.path.join(root, LATEST), lambda p: open(p, "w").write(name + "\n"))
    done = sorted(d for d in os.listdir(root) if d.startswith("step-") and ".tmp-" not in d)
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def latest_checkpoint(out_dir: str) -> str | None:
    """The newest complete checkpoint folder of a run, or None."""
    root = checkpoint_dir(out_dir)
    if not os.path.isdir(root):
        return None
    pointer = os.path.join(root, LATEST)
    if os.path.isfile(pointer):
        name = open(pointer).read().strip()
        if os.path.isfile(os.path.join(root, name, "trainer_state.json")):
            return os.path.join(root, name)
    done = sorted(d for d in os.listdir(root) if d.startswith("step-") and ".tmp-" not in d
                  and os.path.isfile(os.path.join(root, d, "trainer_state.json")))
    return os.path.join(root, done[-1]) if done else None


def load_training_checkpoint(folder, model, optimizer, extra_state: dict | None = None) -> dict:
    """Restore weights, optimizer state, the dropout generator and ``extra_state``'s objects;
    return the trainer state."""
    from safetensors.numpy import load_file

    from ..checkpoint import read_safetensors_dir

    tensors = read_safetensors_dir(folder)
    model.load_state_dict({k: v for k, v in tensors.items() if k in model.params}, strict=False)
    with open(os.path.join(folder, "trainer_state.json")) as f:
        state = json.load(f)
    opt_state = dict(load_file(os.path.join(folder, "optimizer.safetensors")))
    opt_state.update(state.pop("optimizer_scalars"))
    optimizer.load_state_dict(opt_state)
    model.dropout_rng.bit_generator.state = state.pop("dropout_rng")
    extra_scalars = state.pop("extra_scalars", {})
    if extra_state:
        path = os.path.join(folder, "extra.safetensors")
        extra_arrays = dict(load_file(path)) if os.path.exists(path) else {}
        for name, obj in extra_state.items():
            d = {k.split("/", 1)[1]: v for k, v in extra_arrays.items() if k.split("/", 1)[0] == name}
            d.update(extra_scalars.get(name, {}))
            if not d:
                raise ValueError(f"checkpoint {folder} holds no state for {name!r} (saved by another kind of run?)")
            obj.load_state_dict(d)
    return state
