"""Shared test settings.

Hypothesis runs derandomized: the same examples every run, so CI cannot fail on an example no
one has seen locally. Set TINYMOBILEBERT_HYPOTHESIS=explore to draw fresh examples (and let
hypothesis remember any failure it finds in .hypothesis/).
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, database=None)
settings.register_profile("explore", deadline=None, max_examples=200)
settings.load_profile("explore" if os.environ.get("TINYMOBILEBERT_HYPOTHESIS") == "explore" else "ci")
