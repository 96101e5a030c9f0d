"""Shared test settings: the hypothesis profile, chosen by TINYMOBILEBERT_HYPOTHESIS, and the
fixtures and helpers of small training runs (a corpus file, a tiny pretraining configuration,
synthetic batches, a process killed mid-run), and the float64 gradient-check helpers several test
files share.

``ci`` (the default): derandomized, 25 examples per test. The same examples every run, so CI
cannot fail on an example no one has seen locally; fast enough for every commit.

``thorough``: fresh random examples every run, 40 times as many (1000 per test, and 40 times the
count of tests that set their own ``max_examples``), remembered in ``.hypothesis/`` so a failure
found once is replayed first next time. For a kernel change or before a release:

    TINYMOBILEBERT_HYPOTHESIS=thorough python -m pytest -q tests/test_kernels.py tests/test_distill_kernels.py \
        tests/test_kernels_nonfinite.py

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
    """``python -m tinymobilebert pretrain`` with a tiny model, as a subprocess argument list; one
    fixed thread, so that runs compared bit for bit add their sums in the same order."""
    return [sys.executable, "-m", "tinymobilebert", "pretrain", "--out", str(out), "--corpus", corpus,
            "--steps", str(steps), "--batch-size", "8", "--max-length", "32", "--vocab-size", "300",
            "--config", json.dumps(TINY_MODEL), "--threads", "1", "--no-progress", *extra]


# ------------------------------------------------------------------------------ synthetic trainer runs
def synthetic_batches(epoch, start, n=5):
    """``n`` pretraining batches (4 x 10, ids 5..98) per epoch, each a function of (epoch, k) only."""
    import numpy as np

    for k in range(start, n):
        rng = np.random.default_rng([7, epoch, k])
        ids = rng.integers(5, 99, (4, 10))
        labels = np.where(rng.random((4, 10)) < 0.3, ids, -100)
        labels[:, 1] = ids[:, 1]
        yield dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids),
                   labels=labels, next_sentence_label=rng.integers(0, 2, 4), mlm_positions="labelled")


def synthetic_trainer(out, steps, save_every=4):
    """A ``Trainer`` of the tiny model (dropout on) on ``synthetic_batches``, AdamW with warm-up."""
    from tinymobilebert import MobileBertForPreTraining
    from tinymobilebert.config import tiny
    from tinymobilebert.optim import AdamW, LinearWarmupDecay
    from tinymobilebert.train import Trainer

    m = MobileBertForPreTraining(tiny(hidden_dropout_prob=0.1), seed=0)
    opt = AdamW(m.store, lr=1e-3, schedule=LinearWarmupDecay(2, 12), max_grad_norm=1.0)
    return Trainer(m, opt, synthetic_batches, out, max_steps=steps, save_every=save_every, progress=False)


# ------------------------------------------------------------------------------ killed processes
def kill_midway_then_resume(argv, out, records, at_least, total, timeout=240):
    """Start ``argv`` (a command line writing a run to ``out``), SIGKILL it once ``records(out)``
    has ``at_least`` entries, check that it stopped before ``total``, then rerun it with
    ``--resume`` to the end. Returns how many records the killed run had left."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:  # once it has saved a checkpoint and run on past it
            if os.path.exists(os.path.join(out, "log.jsonl")) and len(records(out)) >= at_least:
                break
            time.sleep(0.02)
    finally:  # never leave the child running, whatever happened
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stopped_at = len(records(out))
    assert at_least <= stopped_at < total, f"the run was not killed mid-way (stopped at {stopped_at})"
    subprocess.run([*argv, "--resume"], check=True, capture_output=True, timeout=300)
    return stopped_at


def train_losses(out):
    """(step, loss) of every training record in a run's log."""
    from tinymobilebert.train import read_log

    return [(r["step"], r["loss"]) for r in read_log(out) if r["split"] == "train"]


# ------------------------------------------------------------------------------ float64 gradient checks
def assert_gradcheck(f, arrays, analytic, names=None, max_entries=40, tol=1e-6):
    """Central differences of ``f`` at ``arrays`` against ``analytic``; fails on an all-zero
    gradient too (a check that could not fail)."""
    from tinymobilebert.gradcheck import check_arrays

    report = check_arrays(f, arrays, analytic, names=names, max_entries=max_entries, tol=tol)
    assert report.ok(), "\n" + str(report)
    assert all(not c.zero_gradient for c in report.checks), "\n" + str(report)


def padded_batch(cfg, rng, B=3, T=7, lengths=(7, 5, 3), first_segment=3):
    """(input_ids, token_type_ids, attention_mask) with rows padded after ``lengths`` and a second
    segment from position ``first_segment``."""
    import numpy as np

    ids = rng.integers(0, cfg.vocab_size, (B, T))
    mask = (np.arange(T)[None] < np.asarray(lengths)[:B, None]).astype(np.int64)
    tt = np.zeros((B, T), np.int64)
    tt[:, first_segment:] = 1
    return ids, tt, mask


def float64_model(cls, cfg, seed=0):
    """``cls(cfg)`` in float64, eval mode, with non-trivial parameters (``perturb_parameters``) and
    no padding id, so every embedding row gets a gradient."""
    import numpy as np

    from tinymobilebert.gradcheck import perturb_parameters

    m = cls(cfg.replace(pad_token_id=None), seed=seed, dtype=np.float64).eval()
    perturb_parameters(m, np.random.default_rng(seed + 100))
    return m


def four_layer_layouts():
    """The four layouts at 4 layers (released student with 3 FFNs, bottleneck attention, IB-BERT
    teacher, plain BERT): deep enough for every width, depth and token-dropping plan."""
    from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny

    return {
        "released_student": tiny(num_hidden_layers=4, num_feedforward_networks=3),
        "tiny_bottleneck_attention": tiny(num_hidden_layers=4, use_bottleneck_attention=True,
                                          key_query_shared_bottleneck=False),
        "ib_bert_teacher": ib_bert_tiny(num_hidden_layers=4),
        "plain_bert": bert_tiny(num_hidden_layers=4),
    }
