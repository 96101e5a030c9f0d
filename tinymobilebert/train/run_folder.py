"""One run, one folder: claiming it, recording every setting that shapes the run, resuming it unchanged.

A run folder belongs to one run. Starting a run in a folder that holds another is refused
unless the user says what to do with the old one: ``resume`` (continue it, with its recorded
settings) or ``overwrite`` (delete its files first, then start). Nothing is written until the
caller has checked its settings and built its data, so a run that fails to start leaves the
folder as it was. Every command that writes a run adopts it in a few lines::

    from .train.run_folder import RunFolder

    run = RunFolder(out_dir, "distill", given, DEFAULTS, resume=resume, overwrite=overwrite,
                    safe_to_change=SAFE_ON_RESUME)        # checks only: nothing is written yet
    s = run.settings                                      # the settings to run with (a dict)
    ...  # check s, load data, build the model: an error here leaves the folder untouched
    run.start(facts={"corpus_sha256": fingerprint})       # now the folder is this run's
    trainer = Trainer(model, opt, batches, out_dir, ...)
    if run.resuming:
        trainer.resume()

Arguments:

* ``given``: the settings the user set, as a dict; ``None`` means "not given" (a command's
  keyword defaults are ``None`` so that ``resume`` can tell "not given" from "given").
* ``defaults``: every setting that shapes the run, with its default. A new run uses
  ``{**defaults, **given}``; a resumed run its record, so a flag left out on resume keeps the
  run's value rather than falling back to a default.
* ``safe_to_change``: settings that may differ on resume (a tuple, or a dict of setting -> what
  the change does). They are applied, printed and appended to the record's ``changes``. Any
  other given setting that differs from the record is an error listing every difference.
* ``flags``: {setting: command-line flag} where the flag is not ``--`` + the name with dashes.
* ``entries``: files or folders of the run beyond ``RUN_ENTRIES`` (``overwrite`` deletes
  only the run's own entries; other files in the folder are left alone and named).
* ``run.start(facts=...)``: writes ``run.json``; ``facts`` are things derived from the inputs
  (a corpus fingerprint) that must not change under a resumed run: they are compared with the
  record (an error if they differ) before anything is written. ``start`` also removes what
  killed writes left (``.tmp`` files and checkpoint folders of processes no longer running).
  A fact a resumed run's record lacks (it was started by an older version) is added to it.
* ``run.check_same_model(fact, flag, model_dir, fingerprint)``: for a model the run reads
  again on resume (a teacher), ``checkpoint.model_fingerprint`` of its files, recorded among
  the facts: a resume against changed files is a one-line error saying which changed, a
  record without the fingerprint a warning. Call it before ``start``, which records it.

``run.json`` holds ``{"command", "settings", "facts", "changes"}``: the settings the run has now,
and the history of changes made on resume (``{setting: {"from", "to"}}`` per resume);
``read_run_record`` reads it (``evaluate`` uses it to rebuild the run's held-out data).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings

from ..atomic import is_temp_name, remove_stale_temp_files
from ..checkpoint import read_json_file, write_json
from .checkpoints import checkpoint_steps, remove_leftovers
from .progress import notify

RECORD_NAME = "run.json"
RUN_ENTRIES = ("run.json", "log.jsonl", "checkpoints", "model", "vocab.txt", "tokenizer_config.json", "summary.json",
               "curves.png", "token_importance.safetensors")
_TRAINING_SIGNS = ("log.jsonl", "checkpoints")  # a folder with these but no run.json: an older version's run


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (another run is there, flags differ from the record...)."""


def read_run_record(run_dir) -> dict | None:
    """``{"command", "settings", "facts", "changes"}`` from ``run_dir/run.json``, or None without one.

    A record of an older version (the settings alone) reads with ``command`` None.
    """
    path = os.path.join(os.fspath(run_dir), RECORD_NAME)
    if not os.path.isfile(path):
        return None
    record = read_json_file(path)
    if not isinstance(record, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    if "settings" not in record:
        record = {"command": None, "settings": record}
    return {"command": record.get("command"), "settings": record["settings"], "facts": record.get("facts", {}),
            "changes": record.get("changes", [])}


def find_run_of(model_dir) -> tuple[str | None, dict | None]:
    """The run folder (and its record) that wrote ``model_dir``: ``RUN/model`` or a checkpoint
    ``RUN/checkpoints/step-N``. ``(None, None)`` for a folder that no run wrote."""
    here = os.path.abspath(os.fspath(model_dir))
    for run_dir in (os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        record = read_run_record(run_dir)
        if record is not None:
            return run_dir, record
    return None, None


def _same(a, b) -> bool:
    """Equal as they would be recorded (JSON: tuples are lists)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _show(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


class RunFolder:
    """Claim ``out_dir`` for a ``command`` run (see the module notes)."""

    def __init__(self, out_dir, command: str, given: dict, defaults: dict, *, resume: bool = False,
                 overwrite: bool = False, safe_to_change=(), flags: dict | None = None, entries=()):
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other: continue the run, or replace it")
        given = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise TypeError(f"RunFolder: settings {unknown} are not in the defaults of {command!r}")
        defaults = copy.deepcopy(defaults)  # the settings dict is the caller's to change
        self.path, self.command = os.fspath(out_dir), command
        self.flags = {k: (flags or {}).get(k, "--" + k.replace("_", "-")) for k in defaults}
        self.safe = dict(safe_to_change) if isinstance(safe_to_change, dict) else {k: "" for k in safe_to_change}
        self.entries = RUN_ENTRIES + tuple(entries)
        self.kind, self.found = self._inspect()
        self.record = read_run_record(self.path) if self.kind == "run" else None
        self._check_claim(resume, overwrite)
        self.resuming = resume and self.kind == "run"
        self.new_despite_resume = resume and self.kind == "empty"
        self.changes = {}
        if self.resuming:
            recorded = {**defaults, **self.record["settings"]}
            self.changes = self._compare(given, recorded)
            self.settings = {**recorded, **{k: new for k, (_, new) in self.changes.items()}}
            self._check_steps()
        else:
            self.settings = {**defaults, **given}

    # ------------------------------------------------------------------------------ checks
    def _inspect(self) -> tuple[str, list]:
        """("empty" | "run" | "old_run" | "foreign", the entries found)."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunFolderError(f"--out {self.path} is a file; a run needs a folder")
        names = sorted(os.listdir(self.path)) if os.path.isdir(self.path) else []
        names = [n for n in names if not is_temp_name(n)]  # killed atomic writes: ours, removed at start
        if not names:
            return "empty", names
        if RECORD_NAME in names:
            return "run", names
        if any(n in names for n in _TRAINING_SIGNS):
            return "old_run", names
        return "foreign", names

    def _check_claim(self, resume: bool, overwrite: bool) -> None:
        what = ", ".join(n + ("/" if os.path.isdir(os.path.join(self.path, n)) else "") for n in self.found[:6])
        what += ", ..." if len(self.found) > 6 else ""
        if self.kind == "foreign":
            raise RunFolderError(f"--out {self.path} is not empty and holds no run ({what}); nothing there is "
                                 "deleted: give a new or empty folder")
        if self.kind == "empty":
            return
        if not (resume or overwrite):
            holds = f"a {self.record['command']} run" if self.record and self.record["command"] else "a run"
            raise RunFolderError(f"--out {self.path} already holds {holds} ({what}): pass --resume to continue it, "
                                 "or --overwrite to delete it and start again")
        if resume and self.kind == "old_run":
            raise RunFolderError(f"--out {self.path} holds a run without {RECORD_NAME} (an older version's), so its "
                                 "settings are unknown and it cannot be resumed; --overwrite starts again")
        command = self.record["command"] if self.record else None
        if resume and command not in (None, self.command):
            raise RunFolderError(f"--out {self.path} holds a {command} run; {self.command} --resume cannot continue "
                                 "it (give another --out, or --overwrite)")

    def _compare(self, given: dict, recorded: dict) -> dict:
        """{setting: (recorded, given)} of the safe changes; an error listing the unsafe ones."""
        differ = {k: (recorded[k], v) for k, v in given.items() if not _same(recorded[k], v)}
        unsafe = {k: d for k, d in differ.items() if k not in self.safe}
        if unsafe:
            listed = "; ".join(f"{self.flags[k]} {_show(new)} (the run has {_show(old)})"
                               for k, (old, new) in unsafe.items())
            safe = ", ".join(self.flags[k] for k in self.safe) or "none"
            raise RunFolderError(f"--resume continues {self.path} as recorded in its {RECORD_NAME}, but these flags "
                                 f"differ: {listed}. Leave them out to continue the run, or --overwrite to start a "
                                 f"new one (safe to change on resume: {safe})")
        return {k: d for k, d in differ.items() if k in self.safe}

    def _check_steps(self) -> None:
        """A resumed run cannot end before its newest checkpoint."""
        saved = max(checkpoint_steps(self.path), default=0)
        if "steps" in self.settings and self.settings["steps"] < saved:
            raise RunFolderError(f"the run in {self.path} has a checkpoint at step {saved}, past {self.flags['steps']} "
                                 f"{self.settings['steps']}: give {self.flags['steps']} {saved} or more to continue it")

    def check_same_model(self, fact: str, flag: str, model_dir, fingerprint: dict, role: str = "teacher") -> None:
        """On resume: the model in ``model_dir`` (given as ``flag``) is the one the run started with.

        ``fingerprint`` ({file: SHA-256}, ``checkpoint.model_fingerprint``) is compared with the
        record's ``facts[fact]``. Any file changed, added or gone: a one-line RunFolderError (the
        ``role``, e.g. the student's teacher, would silently be another model). A record without
        the fact (an older version's run) resumes with a warning; ``start`` records it then.
        """
        if not self.resuming:
            return
        recorded = self.record["facts"].get(fact)
        if recorded is None:
            warnings.warn(f"{flag} {model_dir}: the run in {self.path} did not record a fingerprint of its {role} (an "
                          f"older version's run), so resuming cannot check that the {role} is the one the run started "
                          "with; its fingerprint is recorded now", UserWarning, stacklevel=2)
            return
        changed = [(n, "changed" if n in recorded and n in fingerprint else "new" if n in fingerprint else "gone")
                   for n in sorted(set(recorded) | set(fingerprint)) if recorded.get(n) != fingerprint.get(n)]
        if changed:
            what = ", ".join(f"{n} {how}" for n, how in changed)
            raise RunFolderError(f"{flag} {model_dir} is not the {role} the run in {self.path} started with ({what} "
                                 f"since then), so the resumed run would not be the one recorded: restore it, or "
                                 "start over with --overwrite or another --out")

    # ------------------------------------------------------------------------------ start
    def start(self, facts: dict | None = None) -> None:
        """Make the folder this run's: check ``facts`` against the record (on resume), delete the
        old run's files (on overwrite), remove leftovers of killed writes, write run.json."""
        facts = json.loads(json.dumps(facts or {}))
        if self.resuming:
            recorded = self.record["facts"]
            differ = [f"{k} is {facts[k]} now, {recorded[k]} when the run started" for k in facts
                      if k in recorded and not _same(recorded[k], facts[k])]
            if differ:
                raise RunFolderError(f"cannot resume {self.path}: its inputs have changed ({'; '.join(differ)}); "
                                     "restore them, or --overwrite to start a new run on the new inputs")
        elif self.kind in ("run", "old_run"):
            self._remove_old_run()
        os.makedirs(self.path, exist_ok=True)
        remove_stale_temp_files(self.path)
        remove_leftovers(self.path)
        remove_stale_temp_files(os.path.join(self.path, "model"))
        if self.resuming:
            changes = list(self.record["changes"])
            if self.changes:
                changes.append({k: {"from": old, "to": new} for k, (old, new) in self.changes.items()})
            record = {**self.record, "command": self.command, "settings": self.settings, "changes": changes,
                      "facts": {**facts, **self.record["facts"]}}  # an older run's record gains the facts it lacks
            notify(self.describe_resume())
        else:
            if self.new_despite_resume:
                notify(f"nothing to resume in {self.path}: starting a new run")
            record = {"command": self.command, "settings": self.settings, "facts": facts, "changes": []}
        write_json(os.path.join(self.path, RECORD_NAME), record)
        self.record = read_run_record(self.path)

    def describe_resume(self) -> str:
        """One line: what is resumed, and each setting changed (with what the change does)."""
        text = f"resuming the {self.command} run in {self.path} with its recorded settings"
        for k, (old, new) in self.changes.items():
            note = f" ({self.safe[k]})" if self.safe[k] else ""
            text += f"; {self.flags[k]} changed from {_show(old)} to {_show(new)}{note}"
        return text

    def _remove_old_run(self) -> None:
        removed = []
        for name in self.found:
            if name in self.entries:
                path = os.path.join(self.path, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
                removed.append(name)
        kept = [n for n in self.found if n not in removed]
        notify(f"--overwrite: deleted the earlier run in {self.path} ({', '.join(removed)})"
               + (f"; kept files that are not the run's: {', '.join(kept)}" if kept else ""))
