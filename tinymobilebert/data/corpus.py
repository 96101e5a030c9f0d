"""Documents, user corpora, and the train/dev split by document.

A ``Document`` is one unit of text that belongs together (a module's docstrings, one file): its
clean ``text``, its prose ``sentences`` in order, and for each sentence the paragraph it came
from. Two sentences count as consecutive ("B right after A") only when they share a paragraph
id, and a sentence dropped in between (code, a table row) starts a new paragraph, so every
consecutive pair was really consecutive in the source.

``load_corpus`` reads the user's own text: a ``.txt``/``.md`` file or a folder of them
(recursive, in sorted path order). A file is one document, unless it holds two empty lines in a
row (three newlines): those split it into several documents, so one big file of many articles
works too. Paragraphs are separated by a single empty line. In ``.md`` files, fenced code
blocks, heading marks and inline markup are removed first.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .docstrings import strip_markup
from .sentences import is_prose, split_sentences

TEXT_SUFFIXES = (".txt", ".md")
_DOCUMENT_BREAK = re.compile(r"\n[ \t]*\n[ \t]*\n\s*")  # two empty lines in a row
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
CODE_BLOCK = "\x00"  # stands for a removed code block until documents are split
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


@dataclass
class Document:
    """One document.

    Attributes
    ----------
    name : str
        A unique name, e.g. ``"json.decoder"`` or ``"notes/today#2"``.
    family : str
        The group it belongs to: the top-level package or module (``"json"``), or the first
        folder of a user corpus.
    text : str
        The cleaned text, paragraphs separated by blank lines.
    sentences : list of str
        The prose sentences, in order.
    paragraph_ids : list of int
        ``paragraph_ids[i]`` numbers the paragraph of ``sentences[i]`` (non-decreasing);
        defaults to one paragraph.
    """

    name: str
    family: str
    text: str
    sentences: list
    paragraph_ids: list = field(default=None)

    def __post_init__(self):
        if self.paragraph_ids is None:
            self.paragraph_ids = [0] * len(self.sentences)
        if len(self.paragraph_ids) != len(self.sentences):
            raise ValueError(f"document {self.name!r} has {len(self.sentences)} sentences but "
                             f"{len(self.paragraph_ids)} paragraph ids")

    def consecutive_pairs(self):
        """Indices ``i`` such that ``sentences[i + 1]`` really follows ``sentences[i]``."""
        ids = self.paragraph_ids
        return [i for i in range(len(ids) - 1) if ids[i] == ids[i + 1]]

    def without(self, banned):
        """A copy without the sentences in ``banned``; their neighbours no longer count as consecutive."""
        kept, keys, gap = [], [], 0
        for sentence, paragraph in zip(self.sentences, self.paragraph_ids):
            if sentence in banned:
                gap += 1
            else:
                kept.append(sentence)
                keys.append((paragraph, gap))
        renumber = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        return Document(self.name, self.family, self.text, kept, [renumber[key] for key in keys])

    def to_dict(self):
        return {"name": self.name, "family": self.family, "text": self.text,
                "sentences": self.sentences, "paragraph_ids": self.paragraph_ids}


def document_from_paragraphs(name, family, paragraphs):
    """Build a Document from clean paragraphs: split sentences, keep the prose ones.

    Parameters
    ----------
    name, family : str
    paragraphs : list of str

    Returns
    -------
    Document
        Its sentences may be empty when nothing reads as prose.
    """
    sentences, paragraph_ids, paragraph = [], [], 0
    for text in paragraphs:
        for sentence in split_sentences(text):
            if is_prose(sentence):
                sentences.append(sentence)
                paragraph_ids.append(paragraph)
            elif paragraph_ids and paragraph_ids[-1] == paragraph:
                paragraph += 1  # what follows a dropped sentence does not follow its predecessor
        if paragraph_ids and paragraph_ids[-1] == paragraph:
            paragraph += 1
    return Document(name, family, "\n\n".join(paragraphs), sentences, paragraph_ids)


def clean_markdown(text):
    """Strip heading marks and inline markup (``**``, backquotes, links) from markdown.

    A fenced code block becomes one line holding ``CODE_BLOCK``: it keeps its place, so the
    blank lines around it do not run together into a document break, and ``load_corpus`` then
    turns it into a paragraph break.
    """
    lines, in_fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            if not in_fence:
                lines.append(CODE_BLOCK)
            in_fence = not in_fence
        elif not in_fence:
            lines.append(_MARKDOWN_LINK.sub(r"\1", strip_markup(_HEADING.sub("", line))))
    return "\n".join(lines)


def _text_files(root):
    """The .txt/.md files under ``root``, sorted by their path relative to it."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder, f) for f in files if f.lower().endswith(TEXT_SUFFIXES))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_corpus(path):
    """Read a user corpus: a text file, or a folder of ``.txt``/``.md`` files.

    Parameters
    ----------
    path : str or os.PathLike
        A file (any suffix) or a folder (searched recursively for .txt and .md files; hidden
        folders skipped).

    Returns
    -------
    list of Document
        In sorted path order; documents without a single prose sentence are left out. A name is
        the relative path without suffix (``"notes/today"``), with ``#k`` added when a file is
        split at two empty lines; the family is the first folder below ``path`` (or the file's
        own name for files directly in it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus path {path} does not exist")
    if path.is_dir():
        files = _text_files(path)
        if not files:
            raise ValueError(f"no text found in {path}: it holds no {' or '.join(TEXT_SUFFIXES)} files")
    else:
        files = [path]
    docs = []
    for file in files:
        relative = file.relative_to(path).with_suffix("") if path.is_dir() else Path(file.stem)
        name = relative.as_posix()
        family = relative.parts[0]
        text = file.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        if file.suffix.lower() == ".md":
            text = clean_markdown(text)
        parts = [part.replace(CODE_BLOCK, "\n\n") for part in _DOCUMENT_BREAK.split(text)]
        parts = [part for part in parts if part.strip()]
        for k, part in enumerate(parts):
            paragraphs = [" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(part) if p.strip()]
            doc = document_from_paragraphs(name if len(parts) == 1 else f"{name}#{k}", family, paragraphs)
            if doc.sentences:
                docs.append(doc)
    if not docs:
        raise ValueError(f"no text found in {path}: no sentence of at least 3 words that reads as prose")
    return docs


def train_dev_split(docs, dev_fraction=0.1, seed=0):
    """Split documents into train and dev, so no dev sentence is ever seen in training.

    Documents are shuffled (from ``seed``) and moved to dev until dev holds ``dev_fraction`` of
    all sentences; sizes differ a lot between documents, so counting sentences keeps the dev
    share steady where counting documents would not.

    Parameters
    ----------
    docs : list of Document
    dev_fraction : float
        In [0, 1). Dev gets at least one document when there are two or more and it is > 0.
    seed : int

    Returns
    -------
    train, dev : list of Document
        Both in the input order.
    """
    if not 0 <= dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction!r}")
    names = [doc.name for doc in docs]
    if len(set(names)) != len(names):
        raise ValueError("document names must be unique to split by document")
    order = np.random.default_rng(seed).permutation(len(docs))
    target = dev_fraction * sum(len(doc.sentences) for doc in docs)
    in_dev, count = np.zeros(len(docs), dtype=bool), 0
    if dev_fraction > 0 and len(docs) >= 2:
        for i in order[:-1]:  # train keeps at least one document
            in_dev[i] = True
            count += len(docs[i].sentences)
            if count >= target:
                break
    return [d for d, dev in zip(docs, in_dev) if not dev], [d for d, dev in zip(docs, in_dev) if dev]
