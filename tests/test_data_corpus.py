"""Sentences, docstring cleaning, user corpora, the split by document, and the built-in corpus."""

import gzip
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.data import builtin as builtin_module
from tinymobilebert.data.builtin import builtin_corpus, cache_path, extract_stdlib, stdlib_sources
from tinymobilebert.data.corpus import Document, document_from_paragraphs, load_corpus, train_dev_split
from tinymobilebert.data.docstrings import clean_docstring
from tinymobilebert.data.sentences import is_prose, split_sentences


# ---- sentences -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("One here. Two there.", ["One here.", "Two there."]),
    ("Is it? Yes! Fine.", ["Is it?", "Yes!", "Fine."]),
    ("Use e.g. this. Or i.e. that, etc. Done.", ["Use e.g. this.", "Or i.e. that, etc. Done."]),
    ("Ask Mr. Smith and Dr. Who. Then leave.", ["Ask Mr. Smith and Dr. Who.", "Then leave."]),
    ("Written by J. R. Tolkien. Read it.", ["Written by J. R. Tolkien.", "Read it."]),
    ("Call os.path.join. Then Path.resolve too.", ["Call os.path.join.", "Then Path.resolve too."]),
    ("Pi is 3.14 here. And e is 2.71.", ["Pi is 3.14 here.", "And e is 2.71."]),
    ("It says \"stop.\" Then it stops.", ["It says \"stop.\"", "Then it stops."]),
    ("Version 3. 2 came later.", ["Version 3.", "2 came later."]),
    ("lower. case does not split.", ["lower. case does not split."]),
    ("A paragraph\nwrapped over lines\n\nand a second one", ["A paragraph wrapped over lines", "and a second one"]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


@given(st.text(alphabet="ab .?!\nAB3e.g\"()", max_size=80))
def test_split_sentences_loses_no_text(text):
    sentences = split_sentences(text)
    assert " ".join(sentences) == " ".join(text.split())
    assert all(s and s == s.strip() for s in sentences)


def test_is_prose():
    assert is_prose("Return the value of the named attribute.")
    assert not is_prose("os.path.join(a, b) == x[0]")
    assert not is_prose("Two words")
    assert not is_prose("THE END OF IT ALL")


# ---- docstring cleaning ----------------------------------------------------------------------
def test_clean_docstring_drops_doctests_literal_blocks_and_markup():
    doc = ("Summary with :func:`os.walk` and ``code``.\n\n"
           "Example:\n\n    >>> f(1)\n    2\n\n"
           "More text *here*::\n\n    for x in y:\n        pass\n\n    still code\n\n"
           "Heading\n-------\nBack to **prose**.\n.. note:: directive\n\n"
           "Before the example.\n>>> g()\n... continued\noutput")
    assert clean_docstring(doc) == ["Summary with os.walk and code.", "Example:", "More text here:",
                                    "Heading Back to prose.", "Before the example."]


def test_document_paragraphs_break_at_dropped_sentences():
    doc = document_from_paragraphs("m", "m", ["First real sentence here. Second real sentence here. X = f(y) + 1. "
                                              "Fourth real sentence here.", "New paragraph starts here."])
    assert doc.sentences == ["First real sentence here.", "Second real sentence here.", "Fourth real sentence here.",
                             "New paragraph starts here."]
    assert doc.paragraph_ids == [0, 0, 1, 2]
    assert doc.consecutive_pairs() == [0]


# ---- user corpora ----------------------------------------------------------------------------
def test_load_corpus_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.md").write_text("The second file has text. It has two sentences.\n")
    (tmp_path / "a.txt").write_text("First document is here. It goes on.\n\n\nSecond document is here.\n")
    (tmp_path / "skip.py").write_text("print('not text at all')\n")
    (tmp_path / "empty.txt").write_text("\n")
    docs = load_corpus(tmp_path)
    assert [(d.name, d.family) for d in docs] == [("a#0", "a"), ("a#1", "a"), ("b/two", "b")]
    assert docs[0].sentences == ["First document is here.", "It goes on."]
    assert load_corpus(tmp_path / "b" / "two.md")[0].name == "two"


def test_load_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_corpus(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no text found in .*holds no"):
        load_corpus(tmp_path)
    (tmp_path / "x.txt").write_text("a = 1\n")
    with pytest.raises(ValueError, match=f"no text found in {tmp_path}"):
        load_corpus(tmp_path)


# ---- split by document -----------------------------------------------------------------------
def _docs(n):
    return [Document(f"d{i}", f"f{i % 3}", "", [f"Sentence {j} of document {i}." for j in range(1 + i % 7)])
            for i in range(n)]


@given(st.integers(2, 40), st.floats(0.05, 0.9), st.integers(0, 5))
def test_train_dev_split_by_document(n, fraction, seed):
    docs = _docs(n)
    train, dev = train_dev_split(docs, fraction, seed)
    assert train and dev
    assert {d.name for d in train}.isdisjoint(d.name for d in dev)
    assert len(train) + len(dev) == n
    assert [d.name for d in train] == [d.name for d in docs if d in train]  # input order kept
    assert train_dev_split(docs, fraction, seed) == (train, dev)
    total = sum(len(d.sentences) for d in docs)
    dev_count = sum(len(d.sentences) for d in dev)
    assert dev_count >= min(fraction * total, total - max(len(d.sentences) for d in docs))
    assert dev_count - max(len(d.sentences) for d in dev) < fraction * total  # the last document tipped it over


# ---- the built-in corpus ---------------------------------------------------------------------
@pytest.fixture()
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    for rel, source in {
        "alpha.py": '"""Alpha module does things. It does them well."""\n'
                    'def f():\n    """Return the answer to everything."""\n',
        "pkg/__init__.py": '"""The package explains itself here. Twice over."""\n',
        "pkg/sub.py": 'open("SIDE_EFFECT", "w")\nclass C:\n    """A class that holds nice data."""\n',
        "copycat.py": '"""Alpha module does things. It does them well."""\n',  # a repeated paragraph
        "broken.py": "def f(:\n",
        "test/test_x.py": '"""Tests are skipped entirely here."""\n',
        "site-packages/lib.py": '"""Third party code is skipped."""\n',
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(source)
    return root


def test_extract_parses_never_imports(fake_stdlib, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert [name for name, _ in stdlib_sources(fake_stdlib)] == ["alpha", "broken", "copycat", "pkg", "pkg.sub"]
    docs = extract_stdlib(fake_stdlib, include_reference=False)
    assert [(d.name, d.family) for d in docs] == [("alpha", "alpha"), ("pkg", "pkg"), ("pkg.sub", "pkg")]
    assert docs[0].sentences == ["Alpha module does things.", "It does them well.", "Return the answer to everything."]
    assert not (tmp_path / "SIDE_EFFECT").exists()


def test_cache_is_used_rebuilt_when_corrupt_and_honours_xdg(fake_stdlib, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = builtin_corpus(stdlib=fake_stdlib)
    path = cache_path(str(fake_stdlib), True)
    assert path.parent == tmp_path / "xdg" / "tinymobilebert" and path.exists()
    monkeypatch.setattr(builtin_module, "extract_stdlib", lambda *a: pytest.fail("the cache was not used"))
    assert builtin_corpus(stdlib=fake_stdlib) == first
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for corrupt in (b"not gzip at all", gzip.compress(b'{"key": 1'), gzip.compress(b'{"key": [], "documents": 3}')):
        path.write_bytes(corrupt)
        assert builtin_corpus(stdlib=fake_stdlib) == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    assert builtin_corpus(["pkg"], stdlib=fake_stdlib) == first[1:]


def test_builtin_corpus_sanity():
    docs = builtin_corpus()
    assert "antigravity" not in sys.modules and "this" not in sys.modules
    assert len(docs) > 300 and sum(len(d.sentences) for d in docs) > 10_000
    names = [d.name for d in docs]
    assert len(set(names)) == len(names)
    assert {"json", "email", "asyncio", "collections"} <= {d.family for d in docs}
    assert all(d.family == d.name.split(".")[0] for d in docs)
    assert not any(name.startswith(("test.", "idlelib", "lib2to3")) for name in names)
    assert not any(">>>" in s for d in docs for s in d.sentences)
    decoder = next(d for d in docs if d.name == "json.decoder")
    assert decoder.family == "json" and decoder.sentences
    assert builtin_corpus(["json"]) == [d for d in docs if d.family == "json"]


def test_markdown_is_cleaned_and_code_blocks_do_not_split_documents(tmp_path):
    (tmp_path / "guide.md").write_text(
        "# Getting started with it\n\nInstall the **package** with [pip](https://pip.pypa.io) first. It is quick.\n\n"
        "```python\nimport os\n\n\ndef main():\n    pass\n```\n\nThen run the `main` function twice.\n")
    docs = load_corpus(tmp_path)
    assert len(docs) == 1
    assert docs[0].sentences == ["Getting started with it", "Install the package with pip first.", "It is quick.",
                                 "Then run the main function twice."]
    assert docs[0].consecutive_pairs() == [1]  # the code block broke the paragraph
