"""A rule-based English sentence splitter, and a test for "is this prose, not code".

A sentence ends at ".", "?" or "!" (with any closing quotes or brackets after it) when
whitespace and then a capital letter, a digit or an opening quote/bracket follow. A "." does
not end a sentence after a common abbreviation ("e.g.", "i.e.", "etc.", "Mr." ...) or a single
capital initial ("J. Smith"). Dotted names (``os.path.join``) and numbers (3.14) never split,
because no whitespace follows their dots. A blank line always ends a sentence (a paragraph
break), whatever comes before it.
"""

import re

# Lower-cased, without the final ".": "e.g." is stored as "e.g".
ABBREVIATIONS = frozenset("""
    e.g i.e etc cf vs viz al approx ca resp incl
    mr mrs ms dr prof sr jr st no nos vol fig figs eq eqs sec ch pp p
    jan feb mar apr jun jul aug sep sept oct nov dec
""".split())

_CANDIDATE_END = re.compile(r"""[.?!]+["'”’)\]]*\s+(?=["'“‘(\[`]*[A-Z0-9])""")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SINGLE_INITIAL = re.compile(r"^[A-Z]$")
_PLAIN_WORD = re.compile(r"""^["'“‘(\[]*[A-Za-z]+(?:['’-][A-Za-z]+)*[.,;:!?"'”’)\]]*$""")


def _ends_in_abbreviation(text, dot):
    """Whether the "." at ``text[dot]`` closes an abbreviation or initial, not a sentence."""
    start = max(text.rfind(" ", 0, dot), text.rfind("\n", 0, dot), text.rfind("\t", 0, dot)) + 1
    word = text[start:dot].lstrip("\"'“‘([`")
    return word.lower() in ABBREVIATIONS or bool(_SINGLE_INITIAL.match(word))


def _split_paragraph(paragraph):
    sentences, start = [], 0
    for match in _CANDIDATE_END.finditer(paragraph):
        punct = match.group(0).rstrip()  # the marks and closing quotes, e.g. '."'
        if punct.rstrip("\"'”’)]") == "." and _ends_in_abbreviation(paragraph, match.start()):
            continue
        sentence = paragraph[start:match.start() + len(punct)].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def split_sentences(text):
    """Split English text into sentences, with their inner whitespace collapsed to one space.

    Parameters
    ----------
    text : str
        Any text; blank lines separate paragraphs, single newlines are plain spaces.

    Returns
    -------
    list of str
        The sentences in order, none empty.

    Examples
    --------
    >>> split_sentences("Use os.path.join, e.g. for paths. Pi is 3.14! Really?  Yes.")
    ['Use os.path.join, e.g. for paths.', 'Pi is 3.14!', 'Really?', 'Yes.']
    """
    sentences = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            sentences.extend(_split_paragraph(paragraph))
    return sentences


def is_prose(sentence, min_words=3, min_plain_fraction=0.75):
    """Whether ``sentence`` reads as English rather than code, markup or a list of symbols.

    A word is "plain" when it is letters only (with inner apostrophes or hyphens), optionally
    wrapped in quotes, brackets and trailing punctuation: ``"file,"`` is plain,
    ``os.path.join(a)``, ``x=1``, ``__init__`` and ``3.14`` are not.

    Parameters
    ----------
    sentence : str
    min_words : int
        Fewer whitespace-separated words than this is not a sentence.
    min_plain_fraction : float
        The least fraction of plain words.

    Returns
    -------
    bool
    """
    words = sentence.split()
    if len(words) < min_words or not any(c.islower() for c in sentence):
        return False
    plain = sum(1 for word in words if _PLAIN_WORD.match(word))
    return plain >= min_plain_fraction * len(words)
