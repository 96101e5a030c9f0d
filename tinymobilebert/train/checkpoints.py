"""Training checkpoints: everything needed to resume a run exactly, never half-written, checked before use.

A checkpoint is a folder ``{out}/checkpoints/step-{step:08d}/`` holding

    config.json, model.safetensors [, vocab.txt]   the model, as ``save_pretrained`` writes it
    optimizer.safetensors                           the optimizer's arrays (moments)
    extra.safetensors                               arrays of the trainer's ``extra_state``
                                                    objects, keyed "{name}/{key}" (when given)
    trainer_state.json                              step, epoch, position in the epoch, the
                                                    optimizer's scalars, the dropout generator's
                                                    state, the extra state's scalars, and
                                                    anything the caller adds
    manifest.json                                   every other file's size and SHA-256

It is written into ``step-XXXXXXXX.tmp-<pid>``, the manifest last, and renamed into place only
when complete; then ``{out}/checkpoints/latest`` (a one-line file naming it, for people and
tools) is replaced atomically. A run killed at any moment leaves either the previous checkpoint
or the new one, never a mixture, plus perhaps a ``.tmp-<pid>`` folder that the next save (or
``remove_leftovers``) deletes once that process is gone. After a save, checkpoints beyond
``keep`` are removed, the oldest *by step* first.

``load_newest_intact_checkpoint`` resumes from the newest checkpoint whose files match its
manifest: a damaged one (a truncated file, a flipped bit) is named in a warning, renamed
``step-XXXXXXXX.damaged`` (kept for inspection, never used again) and the one before it tried.
Only when none is intact is it an error. ``load_training_checkpoint`` reads and checks every
file before it changes the model or the optimizer, and names the file when one cannot be read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import warnings

import numpy as np

from ..atomic import atomic_write, process_is_running, remove_stale_temp_files
from ..checkpoint import DamagedFileError, read_json_file, read_safetensors, write_json, write_safetensors

LATEST = "latest"
MANIFEST = "manifest.json"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
EXTRA_NAME = "extra.safetensors"
_FINAL = re.compile(r"^step-(\d+)$")
_TEMP = re.compile(r"^step-\d+\.tmp-(\d+)$")


class CheckpointWarning(UserWarning):
    """A checkpoint was damaged (or could not be verified) and another one is used."""


class NoIntactCheckpointError(ValueError):
    """Every checkpoint of a run is damaged."""


def checkpoint_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "checkpoints")


def checkpoint_steps(out_dir: str) -> dict[int, str]:
    """{step: folder} of the run's complete checkpoints (named ``step-N``), in step order."""
    root = checkpoint_dir(out_dir)
    if not os.path.isdir(root):
        return {}
    found = {int(m.group(1)): os.path.join(root, d) for d in os.listdir(root)
             if (m := _FINAL.match(d)) and os.path.isdir(os.path.join(root, d))}
    return dict(sorted(found.items()))


# ------------------------------------------------------------------------------ writing
def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str) -> dict:
    """Record every file of ``folder`` (size, SHA-256) in its manifest.json, atomically."""
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name != MANIFEST and os.path.isfile(path) and not name.startswith("."):
            files[name] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    manifest = {"format": 1, "files": files}
    write_json(os.path.join(folder, MANIFEST), manifest)
    return manifest


def remove_leftovers(out_dir: str) -> list[str]:
    """Delete what killed saves left: ``.tmp-<pid>`` checkpoint folders and temporary files of
    processes no longer running. Returns the removed paths."""
    root = checkpoint_dir(out_dir)
    removed = remove_stale_temp_files(out_dir)
    if os.path.isdir(root):
        removed += remove_stale_temp_files(root)
        for name in sorted(os.listdir(root)):
            m = _TEMP.match(name)
            if m and not process_is_running(int(m.group(1))):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(os.path.join(root, name))
    return removed


def prune_checkpoints(out_dir: str, keep: int) -> list[str]:
    """Remove all but the ``keep`` newest checkpoints, newest meaning highest step."""
    if keep <= 0:
        return []
    folders = list(checkpoint_steps(out_dir).values())
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folders[:-keep]


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
    remove_leftovers(out_dir)
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
    write_safetensors(os.path.join(tmp, OPTIMIZER_NAME), arrays)
    extra_arrays, extra_scalars = _split_extra(extra_state or {})
    if extra_arrays:
        write_safetensors(os.path.join(tmp, EXTRA_NAME), extra_arrays)
    full_state = dict(state, step=step, optimizer_scalars=scalars, extra_scalars=extra_scalars,
                      dropout_rng=model.dropout_rng.bit_generator.state)
    write_json(os.path.join(tmp, STATE_NAME), full_state)
    write_manifest(tmp)  # last: a folder with a manifest is complete
    if os.path.exists(final):  # the same step saved twice (a resumed run): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(os.path.join(root, LATEST), lambda p: open(p, "w").write(name + "\n"))
    prune_checkpoints(out_dir, keep)
    return final


# ------------------------------------------------------------------------------ checking
def verify_checkpoint(folder: str) -> list[str]:
    """What is wrong with a checkpoint folder, file by file ([] when every file matches its manifest)."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        return [f"{MANIFEST} is missing"]
    try:
        files = read_json_file(manifest_path)["files"]
    except (DamagedFileError, KeyError, TypeError) as e:
        return [f"{MANIFEST} is unreadable ({e})"]
    problems = []
    for name, want in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{name} is missing")
        elif os.path.getsize(path) != want["size"]:
            problems.append(f"{name} is {os.path.getsize(path):,} bytes, the manifest says {want['size']:,} "
                            "(truncated or overwritten)")
        elif _sha256(path) != want["sha256"]:
            problems.append(f"{name} has changed since it was written (SHA-256 differs from the manifest)")
    return problems


def read_training_checkpoint(folder: str) -> dict:
    """Every file of a checkpoint, read and parsed: {"tensors", "optimizer", "extra", "state"}.

    Raises ``DamagedFileError`` naming the file that cannot be read; changes nothing.
    """
    from ..checkpoint import read_safetensors_dir

    state = read_json_file(os.path.join(folder, STATE_NAME))
    required = ("step", "epoch", "batch", "optimizer_scalars", "dropout_rng")
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise DamagedFileError(os.path.join(folder, STATE_NAME), f"expected an object with the keys {list(required)}")
    extra = os.path.join(folder, EXTRA_NAME)
    return {"tensors": read_safetensors_dir(folder), "optimizer": read_safetensors(os.path.join(folder, OPTIMIZER_NAME)),
            "extra": read_safetensors(extra) if os.path.exists(extra) else {}, "state": state}


def _extra_for(folder, extra_state: dict, arrays: dict, scalars: dict) -> dict:
    """{name: state dict} for each of ``extra_state``'s objects, from the checkpoint's arrays and scalars."""
    out = {}
    for name in extra_state:
        d = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.split("/", 1)[0] == name}
        d.update(scalars.get(name, {}))
        if not d:
            raise ValueError(f"checkpoint {folder} holds no state for {name!r} (saved by another kind of run?)")
        out[name] = d
    return out


def load_training_checkpoint(folder, model, optimizer, extra_state: dict | None = None) -> dict:
    """Restore weights, optimizer state, the dropout generator and ``extra_state``'s objects;
    return the trainer state.

    Every file is read and checked first; a failure names the file and leaves the model and the
    optimizer unchanged.
    """
    contents = read_training_checkpoint(folder)
    state = dict(contents["state"])
    extra = _extra_for(folder, extra_state or {}, contents["extra"], state.pop("extra_scalars", {}))
    opt_state = dict(contents["optimizer"])
    opt_state.update(state.pop("optimizer_scalars"))
    rng = np.random.Generator(type(model.dropout_rng.bit_generator)())
    try:
        rng.bit_generator.state = state.pop("dropout_rng")
    except (TypeError, ValueError, KeyError) as e:
        raise DamagedFileError(os.path.join(folder, STATE_NAME), f"the dropout generator's state is unusable ({e})") \
            from None
    old_params = model.store.data.copy()
    model.load_state_dict({k: v for k, v in contents["tensors"].items() if k in model.params}, strict=False)
    try:
        optimizer.load_state_dict(opt_state)
    except (KeyError, ValueError, TypeError) as e:
        model.store.data[...] = old_params  # all or nothing
        raise DamagedFileError(os.path.join(folder, OPTIMIZER_NAME), f"does not fit this optimizer ({e})") from None
    model.dropout_rng.bit_generator.state = rng.bit_generator.state
    for name, obj in (extra_state or {}).items():
        obj.load_state_dict(extra[name])
    return state


# ------------------------------------------------------------------------------ choosing
def _set_aside(folder: str) -> str:
    damaged = folder + ".damaged"
    if os.path.exists(damaged):
        shutil.rmtree(damaged)
    os.replace(folder, damaged)
    return damaged


def load_newest_intact_checkpoint(out_dir: str, model, optimizer, extra_state: dict | None = None
                                  ) -> tuple[str | None, dict | None]:
    """Load the newest intact checkpoint of a run: ``(folder, trainer state)``, or ``(None, None)``
    when the run has no checkpoint yet.

    A damaged checkpoint (files not matching the manifest, or unreadable) is set aside with a
    ``CheckpointWarning`` naming the file and the problem, and the one before it is tried; a
    checkpoint without a manifest (an older version's) is used with a warning that it was not
    verified. ``NoIntactCheckpointError`` when checkpoints exist but none is intact.
    """
    damaged = []
    for folder in reversed(checkpoint_steps(out_dir).values()):
        if not os.path.isfile(os.path.join(folder, MANIFEST)):
            warnings.warn(f"{folder} has no {MANIFEST} (written by an older version): using it unverified",
                          CheckpointWarning, stacklevel=2)
            problems = []
        else:
            problems = verify_checkpoint(folder)
        if not problems:
            try:
                return folder, load_training_checkpoint(folder, model, optimizer, extra_state)
            except DamagedFileError as e:
                problems = [f"{os.path.basename(e.path)}: {e.problem}"]
        moved = _set_aside(folder)
        damaged.append(f"{folder}: {'; '.join(problems)}")
        warnings.warn(f"checkpoint {folder} is damaged: {'; '.join(problems)}. Set aside as {moved}; "
                      "falling back to the checkpoint before it", CheckpointWarning, stacklevel=2)
    if damaged:
        raise NoIntactCheckpointError("no intact checkpoint to resume from: " + " | ".join(damaged)
                                      + " (start again with --overwrite)")
    return None, None


def latest_checkpoint(out_dir: str) -> str | None:
    """The newest complete checkpoint folder of a run (by step), or None. Not verified: see
    ``load_newest_intact_checkpoint``."""
    found = checkpoint_steps(out_dir)
    return found[max(found)] if found else None
