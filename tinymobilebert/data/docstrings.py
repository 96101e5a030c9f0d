"""Cleaning a Python docstring (or rendered reference page) down to paragraphs of prose.

What goes, cheaply and by rule:

- doctest examples: from a ``>>>`` line to the end of its paragraph (the ``...`` continuations
  and the expected output that follow it);
- literal blocks: indented paragraphs after a paragraph ending in ":" (reST's ``::`` code
  blocks, grammar rules and shell sessions), as long as they stay indented;
- section underlines (``-----``, ``=====``, ``*****``) and reST directive lines (``.. note::``);
- inline markup: ``:func:`name``` -> ``name``, double and single backquotes, ``**bold**``,
  ``*emphasis*``, link targets ``<https://...>``.

What is left still holds code-like sentences; ``sentences.is_prose`` drops those later, one
sentence at a time.
"""

import re

_UNDERLINE = re.compile(r"^\s*([=\-~*^#+`'\"._])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s")
_ROLE = re.compile(r":[A-Za-z][\w:.-]*:`([^`]*)`")
_LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`_{0,2}")
_DOUBLE_BACKQUOTE = re.compile(r"``(.*?)``")
_SINGLE_BACKQUOTE = re.compile(r"`([^`]*)`_{0,2}")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")


def strip_markup(text):
    """Remove reST/markdown inline markup, keeping the words it wraps."""
    text = _ROLE.sub(lambda m: m.group(1).lstrip("~!"), text)
    text = _LINK.sub(r"\1", text)
    text = _DOUBLE_BACKQUOTE.sub(r"\1", text)
    text = _SINGLE_BACKQUOTE.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    return _EMPHASIS.sub(r"\1", text)


def _paragraphs(lines):
    """Group lines into paragraphs (lists of lines) at blank lines."""
    paragraph = []
    for line in lines:
        if line.strip():
            paragraph.append(line.rstrip())
        elif paragraph:
            yield paragraph
            paragraph = []
    if paragraph:
        yield paragraph


def clean_docstring(text):
    """Reduce a docstring to paragraphs of (mostly) prose, each on one line.

    Parameters
    ----------
    text : str
        A docstring as ``ast.get_docstring`` returns it (common indentation removed).

    Returns
    -------
    list of str
        The kept paragraphs, their lines joined by single spaces, markup stripped.

    Examples
    --------
    >>> clean_docstring("Add *a* and ``b``.\\n\\n>>> add(1, 2)\\n3\\n\\nUse it like this::\\n\\n    add(x, y)")
    ['Add a and b.', 'Use it like this:']
    """
    paragraphs, in_literal, previous = [], False, ""
    for lines in _paragraphs(text.expandtabs().splitlines()):
        indented = all(line[:1].isspace() for line in lines)
        if indented and (in_literal or previous.endswith(":")):
            in_literal = True  # a literal block may hold blank lines: stay in it while indented
            continue
        in_literal = False
        for i, line in enumerate(lines):
            if line.lstrip().startswith(">>>"):
                lines = lines[:i]  # the example runs to the end of the paragraph
                break
        lines = [line for line in lines if not (_UNDERLINE.match(line) or _DIRECTIVE.match(line))]
        previous = lines[-1].rstrip() if lines else ""
        joined = strip_markup(" ".join(line.strip() for line in lines))
        if joined.endswith("::"):  # reST renders "like this::" as "like this:"
            joined = joined[:-1]
        if joined:
            paragraphs.append(joined)
    return paragraphs
