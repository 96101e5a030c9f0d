"""Every tutorial runs top to bottom and its closing assertions hold.

Tutorials are percent-format ``.py`` files (open them as notebooks with jupytext). Each runs in
a fresh namespace, in a temporary working directory, with matplotlib drawing off-screen.
"""

import runpy
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


def test_tutorials_exist():
    assert len(TUTORIALS) >= 3


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TINYMOBILEBERT_TUTORIAL_TEST", "1")  # tutorials may shorten heavy cells
    runpy.run_path(str(path), run_name="__main__")
