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
