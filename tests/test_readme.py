"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.filterwarnings("ignore:.*newly initialised:UserWarning")  # the README's classifier gets a new head
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    (tmp_path / "tests").symlink_to(README.parent / "tests")  # examples read the shipped fixtures
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_opens_with_install_and_test_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1).strip().splitlines()
    assert first[0].startswith("pip install") and first[1] == "python -m pytest -q"
    assert "python -m pytest -q" in (README.parent / ".ci" / "run").read_text()


def test_demo_figures_are_rendered_from_the_saved_results_of_the_current_demo():
    """The README's demo paragraph is exactly what benchmarks/readme_figures.py wrote from its results,
    and says which machine and how many threads produced them."""
    import json

    from tinymobilebert.demo import README_END, README_START, readme_figures

    results = json.loads((README.parent / "benchmarks" / "demo_figures.json").read_text())
    text = README.read_text()
    assert text.count(README_START) == 1 and text.count(README_END) == 1
    block = text[text.index(README_START):text.index(README_END) + len(README_END)]
    assert block == readme_figures(results), "run: python benchmarks/readme_figures.py --render-only"
    machine = results["summary"]["machine"]
    assert machine["cpu"] in block and f"with {results['threads']} thread" in block
    from tinymobilebert.demo import DEFAULTS

    assert results["summary"]["settings"] == DEFAULTS  # the demo as the README runs it
    assert "python benchmarks/readme_figures.py" in text and "added in another order" in text


def test_the_demo_records_its_machine_and_threads():
    from tinymobilebert.demo import machine

    info = machine()
    assert info["numba_threads"] >= 1 and info["cpu"] and info["blas"] and "thread_env" in info
