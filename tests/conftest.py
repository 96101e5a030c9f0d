"""Shared test settings: the hypothesis profile, chosen by TINYMOBILEBERT_HYPOTHESIS.

``ci`` (the default): derandomized, 25 examples per test. The same examples every run, so CI
cannot fail on an example no one has seen locally; fast enough for every commit.

``thorough``: fresh random examples every run, 40 times as many (1000 per test, and 40 times the
count of tests that set their own ``max_examples``), remembered in ``.hypothesis/`` so a failure
found once is replayed first next time. For a kernel change or before a release:

    TINYMOBILEBERT_HYPOTHESIS=thorough python -m pytest -q tests/test_kernels.py tests/test_kernels_nonfinite.py

``explore`` is the old name of a lighter random run (200 examples), kept for habit.
"""

import os

from hypothesis import settings

PROFILE = os.environ.get("TINYMOBILEBERT_HYPOTHESIS", "ci")
THOROUGH_FACTOR = 40  # how many more examples "thorough" runs than "ci"

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, database=None)
settings.register_profile("thorough", deadline=None, max_examples=25 * THOROUGH_FACTOR)
settings.register_profile("explore", deadline=None, max_examples=200)
if PROFILE not in ("ci", "thorough", "explore"):
    raise ValueError(f"TINYMOBILEBERT_HYPOTHESIS must be ci, thorough or explore, got {PROFILE!r}")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``max_examples`` for a test that sets its own count: ``n`` in CI, more when thorough."""
    return n * THOROUGH_FACTOR if PROFILE == "thorough" else n
