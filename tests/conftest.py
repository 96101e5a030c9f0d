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
