"""The test suite's own switches do what the README says: ``slow`` tests stay out of the default
run (and so out of CI's ``python -m pytest -q``), ``-m slow`` runs them, and the hypothesis
profile follows TINYMOBILEBERT_HYPOTHESIS."""

import os
import runpy
import subprocess
import sys

import pytest
from hypothesis import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_slow_probe():
    """Exists to be deselected by default (see below)."""


def collect(*args):
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                        os.path.relpath(__file__, ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return r.stdout + r.stderr


def test_slow_tests_are_left_out_by_default_and_run_with_m_slow():
    default = collect()
    assert "test_slow_probe" not in default and "1 deselected" in default
    assert "test_slow_probe" in collect("-m", "slow")  # (and "-m 'slow or not slow'" runs everything)


def test_hypothesis_profile_follows_the_environment(monkeypatch):
    if os.environ.get("TINYMOBILEBERT_HYPOTHESIS", "ci") == "ci":
        assert settings.default.derandomize and settings.default.max_examples == 25
    monkeypatch.setenv("TINYMOBILEBERT_HYPOTHESIS", "nonsense")  # refused before any profile is loaded
    with pytest.raises(ValueError, match="TINYMOBILEBERT_HYPOTHESIS must be ci, thorough or explore"):
        runpy.run_path(os.path.join(ROOT, "tests", "conftest.py"))
