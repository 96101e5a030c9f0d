"""Loading the user's own labelled TSV/CSV files, in GLUE's column layouts.

``load_glue("glue_data/RTE")`` reads ``train.tsv`` and ``dev.tsv`` of a GLUE task folder
(``dev_matched.tsv`` for MNLI). Columns are found from the header, by the names GLUE uses
(``sentence``, ``sentence1``/``sentence2``, ``question``, ``#1 String``, ``label``,
``gold_label``, ``Quality`` ...), or named explicitly: ``load_glue(path, text_a="premise",
text_b="hypothesis", label="y")``; 0-based column numbers work for files without a header
(CoLA's). Labels are strings mapped to ids in sorted order (numerically when all are integers),
kept in ``task.labels``. Spellings of one number are one class (``1``, ``1.0`` and ``+1`` are
``"1"``); a number that is not whole (a score: regression data), or two labels that differ only
in case, is an error naming them; so is a training set with fewer than two classes. TSV files are read as GLUE writes them, without quote handling; CSV files
with the usual double quotes.
"""

import csv
from pathlib import Path

import numpy as np

from .batching import TASK, derived_rng
from .tasks import Example, Task

# The layouts of GLUE's classification tasks (STS-B is regression and not supported).
LAYOUTS = {
    "cola": {"text_a": 3, "text_b": None, "label": 1},  # no header
    "sst2": {"text_a": "sentence", "text_b": None, "label": "label"},
    "mrpc": {"text_a": "#1 String", "text_b": "#2 String", "label": "Quality"},
    "qqp": {"text_a": "question1", "text_b": "question2", "label": "is_duplicate"},
    "qnli": {"text_a": "question", "text_b": "sentence", "label": "label"},
    "rte": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
    "wnli": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
    "mnli": {"text_a": "sentence1", "text_b": "sentence2", "label": "gold_label"},
}
TEXT_A_NAMES = ("sentence1", "question1", "#1 String", "question", "premise", "sentence", "text")
TEXT_B_NAMES = ("sentence2", "question2", "#2 String", "hypothesis", "sentence")
LABEL_NAMES = ("label", "gold_label", "is_duplicate", "Quality", "labels", "class")
_DEV_NAMES = ("dev", "dev_matched", "validation")
_SUFFIXES = (".tsv", ".csv")


def _task_key(task):
    key = task.lower().replace("-", "").replace("_", "")
    if key == "stsb":
        raise ValueError("STS-B is a regression task; load_glue reads classification tasks only")
    if key not in LAYOUTS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(LAYOUTS)} (or name the columns)")
    return key


def _read_rows(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        tab = path.suffix.lower() == ".tsv" or (path.suffix.lower() != ".csv" and "\t" in first)
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tab else csv.reader(f)
        return [row for row in reader if any(cell.strip() for cell in row)]


def _resolve(columns, header, path):
    """Turn the wanted columns (names, indices or None) into indices: {'text_a': i, ...}."""
    found = {}
    for role, want in columns.items():
        if want is None or isinstance(want, int):
            found[role] = want
        elif header is None:
            raise ValueError(f"{path} has no header row, so column {want!r} cannot be found; give column numbers")
        elif want not in header:
            raise ValueError(f"{path}: column {want!r} ({role}) is not in the header; found {header}")
        else:
            found[role] = header.index(want)
    return found


def _guess(columns, header, path):
    """Fill the columns not given from the header's known names.

    text_b is guessed only along with text_a: naming text_a alone asks for single texts.
    """
    def first(names, exclude=()):
        return next((name for name in names if name in header and name not in exclude), None)

    columns = dict(columns)
    if columns["text_a"] is None:
        columns["text_a"] = first(TEXT_A_NAMES)
        if columns["text_b"] is None:
            columns["text_b"] = first(TEXT_B_NAMES, exclude=(columns["text_a"],))
    if columns["label"] is None:
        columns["label"] = first(LABEL_NAMES)
    for role, names in (("text_a", TEXT_A_NAMES), ("label", LABEL_NAMES)):
        if columns[role] is None:
            raise ValueError(f"cannot tell the {role} column of {path}: none of {list(names)} is in its header "
                             f"{header}; pass {role}= (a name, or a 0-based number)")
    return columns


def read_table(path, *, text_a=None, text_b=None, label=None, task=None):
    """Read one labelled TSV/CSV file.

    Parameters
    ----------
    path : str or os.PathLike
    text_a, text_b, label : str or int or None
        Column names (or 0-based numbers). Unnamed columns follow ``task``'s layout or the header.
    task : str or None
        A GLUE task name (``"rte"``, ``"SST-2"`` ...) whose layout to use.

    Returns
    -------
    list of (str, str or None, str, int)
        ``(text_a, text_b, label, line)`` per data row, ``line`` its 1-based row number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    columns = dict(LAYOUTS[_task_key(task)]) if task else {"text_a": None, "text_b": None, "label": None}
    explicit = {"text_a": text_a, "text_b": text_b, "label": label}
    columns.update({role: want for role, want in explicit.items() if want is not None})
    known = {c for c in columns.values() if isinstance(c, str)} | set(TEXT_A_NAMES + TEXT_B_NAMES + LABEL_NAMES)
    has_header = any(cell.strip() in known for cell in rows[0])
    header = [cell.strip() for cell in rows[0]] if has_header else None
    if columns["text_a"] is None or columns["label"] is None:
        if header is None:
            raise ValueError(f"{path} has no header with known column names; pass text_a= and label= (0-based numbers)")
        columns = _guess(columns, header, path)
    index = _resolve(columns, header, path)
    needed = max(i for i in index.values() if i is not None) + 1
    out = []
    for line, row in enumerate(rows[1:] if header else rows, start=2 if header else 1):
        if len(row) < needed:
            raise ValueError(f"{path}, row {line}: {len(row)} fields, but column {needed - 1} (0-based) is needed")
        value = row[index["label"]].strip()
        if not value:
            raise ValueError(f"{path}, row {line}: the label is empty")
        b = row[index["text_b"]] if index["text_b"] is not None else None
        out.append((row[index["text_a"]], b, value, line))
    return out


def normalise_labels(values, path):
    """{spelling: class name}: numbers by value (``"1.0"`` -> ``"1"``), text as written.

    Errors name the offending labels: numbers that are not whole (scores, not classes) and text
    labels that differ only in case.
    """
    values = sorted(set(values))
    numbers = {}
    for value in values:
        try:
            numbers[value] = float(value)
        except ValueError:
            pass
    if numbers and len(numbers) == len(values):
        scores = [v for v, x in numbers.items() if not x.is_integer()]
        if scores:
            raise ValueError(f"{path}: labels {scores[:5]} are not whole numbers: these look like scores (a regression "
                             "task), and fine-tuning here trains classifiers; give class labels")
        return {v: str(int(x)) for v, x in numbers.items()}
    by_case = {}
    for value in values:
        by_case.setdefault(value.casefold(), []).append(value)
    clashes = [group for group in by_case.values() if len(group) > 1]
    if clashes:
        raise ValueError(f"{path}: labels {clashes[0]} differ only in case; spell each class one way "
                         f"({len(clashes)} such group{'s' if len(clashes) > 1 else ''})")
    return {v: v for v in values}


def _label_order(values):
    values = sorted(set(values))
    try:
        return sorted(values, key=int)
    except ValueError:
        return values


def _find(folder, names):
    for name in names:
        for suffix in _SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def load_glue(path, task=None, *, text_a=None, text_b=None, label=None, dev_path=None, dev_fraction=0.1, seed=0):
    """Load a labelled classification task from TSV/CSV files.

    Parameters
    ----------
    path : str or os.PathLike
        A folder holding ``train.tsv``/``.csv`` and (maybe) ``dev.tsv``/``.csv``, or a train file.
    task : str or None
        A GLUE task name, to use its column layout (and as the task's name).
    text_a, text_b, label : str or int or None
        Column names or 0-based numbers (see ``read_table``).
    dev_path : str or os.PathLike or None
        The dev file, when not in the folder.
    dev_fraction : float
        With no dev file at all, this share of the training rows (drawn from ``seed``) is dev.
    seed : int

    Returns
    -------
    Task
        ``labels`` lists the label strings; example labels are their indices.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        train_path = _find(path, ("train",))
        if train_path is None:
            raise FileNotFoundError(f"{path} holds no train.tsv or train.csv")
        dev_path = dev_path or _find(path, _DEV_NAMES)
    else:
        train_path = path
    columns = {"text_a": text_a, "text_b": text_b, "label": label, "task": task}
    train_rows = read_table(train_path, **columns)
    if dev_path is not None:
        dev_rows = read_table(dev_path, **columns)
    else:
        order = derived_rng(TASK, seed, 20).permutation(len(train_rows))
        n_dev = int(round(dev_fraction * len(train_rows)))
        dev_rows = [train_rows[i] for i in np.sort(order[:n_dev])]
        train_rows = [train_rows[i] for i in np.sort(order[n_dev:])]
        if not dev_rows or not train_rows:
            raise ValueError(f"{train_path} has {len(dev_rows) + len(train_rows)} rows and no dev file beside it: "
                             f"holding out {dev_fraction} of them (--dev-fraction) leaves "
                             f"{'no dev rows' if not dev_rows else 'no training rows'}; change --dev-fraction, or "
                             "give a dev.tsv")
    spelling = normalise_labels([value for *_, value, _ in train_rows + dev_rows], path)
    labels = _label_order(spelling[value] for *_, value, _ in train_rows)
    if len(labels) < 2:
        raise ValueError(f"{train_path}: every training label is {labels[0]!r}; a classifier needs at least two "
                         "classes (check the label column, or the file)")
    label_id = {value: i for i, value in enumerate(labels)}
    for a, b, value, line in dev_rows:
        if spelling[value] not in label_id:
            raise ValueError(f"{dev_path}, row {line}: label {value!r} never occurs in training (labels {labels})")

    def examples(rows):
        return [Example(a, b, label_id[spelling[value]]) for a, b, value, _ in rows]

    name = task or (path.name if path.is_dir() else path.stem)
    return Task(name, len(labels), examples(train_rows), examples(dev_rows), labels=labels)
