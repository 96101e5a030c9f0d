"""The built-in corpus: the docstrings of the Python standard library, no download needed.

Every Python installation carries a few megabytes of edited English prose: the docstrings of
its standard library, and the rendered language reference that ``pydoc`` shows
(``pydoc_data/topics.py``). ``builtin_corpus`` reads them by *parsing* the source files with
``ast``, never by importing them: importing ``antigravity`` opens a browser, ``this`` prints a
poem, and other modules have side effects or need platform libraries.

One document per module (``json.decoder``), family = its top-level package or module
(``json``); each reference topic is a document of the ``pydoc_data`` family. Folders of tests,
IDLE, lib2to3 and site-packages are skipped. A paragraph seen before anywhere in the corpus is
dropped (the ``encodings`` codecs, for one, share a docstring), so no sentence sits in two
documents and leaks from training into dev.

Extraction takes a few seconds, so the result is cached as gzipped JSON in
``$XDG_CACHE_HOME/tinymobilebert`` (default ``~/.cache/tinymobilebert``), keyed by the Python
version, the stdlib path and ``CORPUS_VERSION``. The cache is written atomically (a temporary
file, then ``os.replace``); an unreadable cache is rebuilt, an unwritable one only warned about.
"""

import ast
import gzip
import hashlib
import json
import os
import sys
import sysconfig
import warnings
import zlib
from pathlib import Path

from ..atomic import atomic_write
from .corpus import Document, document_from_paragraphs
from .docstrings import clean_docstring

CORPUS_VERSION = 1  # bump whenever extraction or cleaning changes: old caches are then ignored
SKIP_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__"})
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_sources(root):
    """The stdlib's ``.py`` files as sorted ``(module_name, path)`` pairs, skipped folders left out."""
    root = Path(root)
    sources = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for file in files:
            if file.endswith(".py"):
                parts = Path(folder, file).relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                if parts and all(part.isidentifier() for part in parts):
                    sources.append((".".join(parts), Path(folder, file)))
    return sorted(sources)


def docstrings_in_order(tree):
    """The docstrings of a module, its classes and functions (nested too), in source order."""
    stack = [tree]
    while stack:
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield doc
        children = [n for n in ast.iter_child_nodes(node) if isinstance(n, _DOCUMENTED)]
        stack.extend(reversed(children))


def _parse(path):
    """The module's syntax tree, or None when it does not parse (a py2 leftover, bad bytes)."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences in old sources
            warnings.simplefilter("ignore")
            return ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None


def _reference_topics(root):
    """``(topic, text)`` pairs from pydoc's rendered language reference, read as a literal."""
    tree = _parse(Path(root, "pydoc_data", "topics.py"))
    for node in tree.body if tree else ():
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            try:
                topics = ast.literal_eval(node.value)
            except ValueError:
                return []
            return sorted((k, v) for k, v in topics.items() if isinstance(k, str) and isinstance(v, str))
    return []


def extract_stdlib(root=None, include_reference=True):
    """Extract the corpus from the stdlib at ``root`` (no cache; see ``builtin_corpus``).

    Parameters
    ----------
    root : str or os.PathLike or None
        The stdlib folder; None: ``sysconfig.get_paths()["stdlib"]``.
    include_reference : bool
        Add the ``pydoc_data`` reference topics.

    Returns
    -------
    list of Document
        Modules in sorted name order, then the topics; documents without prose left out.
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    seen, docs = set(), []

    def add(name, family, texts):
        paragraphs = []
        for text in texts:
            for paragraph in clean_docstring(text):
                if paragraph not in seen:
                    seen.add(paragraph)
                    paragraphs.append(paragraph)
        doc = document_from_paragraphs(name, family, paragraphs)
        if doc.sentences:
            docs.append(doc)

    for name, path in stdlib_sources(root):
        tree = _parse(path)
        if tree is not None:
            add(name, name.split(".")[0], docstrings_in_order(tree))
    if include_reference:
        for topic, text in _reference_topics(root):
            add(f"pydoc_data.topics.{topic}", "pydoc_data", [text])
    return docs


def cache_dir():
    """``$XDG_CACHE_HOME/tinymobilebert``, or ``~/.cache/tinymobilebert``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "tinymobilebert")


def cache_path(root, include_reference=True, folder=None):
    """Where the corpus extracted from ``root`` is cached."""
    key = f"{CORPUS_VERSION}|{sys.version}|{os.path.abspath(root)}|{include_reference}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return Path(folder or cache_dir(), f"stdlib-docstrings-py{version}-{digest}.json.gz")


def _read_cache(path, key):
    """The cached documents, or None when the cache is missing, stale or unreadable."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            payload = json.load(f)
        if payload.get("key") != key:
            return None
        return [Document(**doc) for doc in payload["documents"]]
    except (OSError, EOFError, ValueError, TypeError, KeyError, AttributeError, zlib.error):
        return None  # truncated, corrupt or written by something else: rebuild it


def _write_cache(path, key, docs):
    """Write the cache atomically: readers see the old file or the whole new one, never half."""

    def write(tmp):
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump({"key": key, "documents": [doc.to_dict() for doc in docs]}, f)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as error:
        warnings.warn(f"could not cache the built-in corpus at {path}: {error}", stacklevel=3)


def builtin_corpus(families=None, *, stdlib=None, include_reference=True, use_cache=True, cache_folder=None):
    """The built-in corpus: stdlib docstrings as documents, cached after the first call.

    Parameters
    ----------
    families : iterable of str or None
        Keep only these families (top-level packages/modules, e.g. ``["json", "email"]``);
        None keeps all.
    stdlib : str or os.PathLike or None
        The stdlib folder; None: this interpreter's.
    include_reference : bool
        Add pydoc's language reference topics (family ``"pydoc_data"``).
    use_cache : bool
        Read and write the cache; False always extracts.
    cache_folder : str or os.PathLike or None
        Where the cache lives; None: ``cache_dir()``.

    Returns
    -------
    list of Document
        Deterministic: the same list on every call and machine with this Python.
    """
    root = os.path.abspath(stdlib or sysconfig.get_paths()["stdlib"])
    if not os.path.isdir(root):
        raise FileNotFoundError(f"the standard library folder {root} does not exist")
    docs = None
    if use_cache:
        path = cache_path(root, include_reference, cache_folder)
        key = [CORPUS_VERSION, sys.version, root, include_reference]
        docs = _read_cache(path, key)
    if docs is None:
        docs = extract_stdlib(root, include_reference)
        if use_cache:
            _write_cache(path, key, docs)
    if families is not None:
        wanted = {families} if isinstance(families, str) else set(families)
        docs = [doc for doc in docs if doc.family in wanted]
    return docs
