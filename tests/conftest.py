"""Shared test settings: the hypothesis profile, chosen by TINYMOBILEBERT_HYPOTHESIS, and the
fixtures of small training runs (a corpus file, a tiny pretraining configuration).

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


# ------------------------------------------------------------------------------ small training runs
import json  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

TINY_MODEL = {"hidden_size": 32, "embedding_size": 16, "intra_bottleneck_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32}


@pytest.fixture(scope="session")
def run_corpus(tmp_path_factory):
    """A small real-text corpus file: 40 standard-library modules' docstrings, one document each."""
    from tinymobilebert.data import builtin_corpus

    path = tmp_path_factory.mktemp("run_corpus") / "docs.txt"
    path.write_text("\n\n\n".join(d.text for d in builtin_corpus()[:40]))
    return str(path)


@pytest.fixture
def tiny_pretrain(run_corpus):
    """Settings of a pretraining run that takes a second or two: ``pretrain(out, **tiny_pretrain)``.

    The warm-up is given (1 step) so that these runs also start on code whose default warm-up was
    longer than a short run (tests of other findings then fail for their own reason there)."""
    return dict(corpus=run_corpus, vocab_size=300, config=dict(TINY_MODEL), batch_size=8, max_length=32, warmup=1,
                progress=False)


def pretrain_argv(out, corpus, steps, *extra):
    """``python -m tinymobilebert pretrain`` with a tiny model, as a subprocess argument list."""
    return [sys.executable, "-m", "tinymobilebert", "pretrain", "--out", str(out), "--corpus", corpus,
            "--steps", str(steps), "--batch-size", "8", "--max-length", "32", "--vocab-size", "300",
            "--config", json.dumps(TINY_MODEL), "--no-progress", *extra]
