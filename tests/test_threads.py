"""Thread counts: setting and restoring them, the tuner's decisions (on a simulated clock, so no
timing is asserted), and determinism: the same seed and thread count give bit-identical losses."""

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining
from tinymobilebert import threads as T
from tinymobilebert.benchmark.measure import make_batch, size_config
from tinymobilebert.config import tiny
from tinymobilebert.kernels import _jit
from tinymobilebert.optim import AdamW
from tinymobilebert.train import Trainer, read_log


class Machine:
    """A fake clock whose step takes ``cost[threads]`` seconds per unit of work."""

    def __init__(self, cost):
        self.cost, self.now, self.applied = dict(cost), 0.0, []

    def clock(self):
        return self.now

    def apply(self, n):
        self.applied.append(n)

    def run(self, tuner, steps, work=100.0):
        for _ in range(steps):
            tuner.before_step()
            self.now += self.cost[tuner.threads] * work
            tuner.after_step(work)


def tuner(machine, **kw):
    return T.ThreadTuner((2, 1), clock=machine.clock, apply=machine.apply, **kw)


def test_tuner_picks_the_faster_count_and_follows_the_load():
    quiet = Machine({2: 1.0, 1: 1.7})
    t = tuner(quiet, warmup_steps=2, probe_steps=3, recheck_every=50, window=5, jump=1.5)
    quiet.run(t, 2)  # warm-up at the most threads, untimed
    assert t.threads == 2 and not t.events
    quiet.run(t, 6)  # the probe: 2, 1, 2, 1, 2, 1
    assert quiet.applied == [2, 1, 2, 1, 2, 1, 2]  # set at start, switched per probe step, then the best
    assert t.threads == 2 and t.events[-1]["reason"] == "start" and t.events[-1]["per_work"] == {"2": 1.0, "1": 1.7}
    quiet.run(t, 10)
    assert t.threads == 2 and len(t.events) == 1  # steady: no probe
    quiet.cost[2] = 4.2  # a busy competitor: 2 threads spin waiting for each other
    quiet.run(t, 5)  # the window's median is now 4.2x the probe's: probe again
    quiet.run(t, 6)
    assert t.threads == 1 and t.events[-1]["reason"] == "slower"
    quiet.cost[2] = 1.0  # the competitor leaves; at 1 thread nothing changes, the periodic probe sees it
    quiet.run(t, 50 + 6)
    assert t.threads == 2 and t.events[-1]["reason"] == "periodic"


def test_tuner_ties_single_candidate_and_no_warmup():
    m = Machine({2: 1.0, 1: 1.0})
    t = tuner(m, warmup_steps=0, probe_steps=1)
    m.run(t, 2)
    assert t.threads == 1  # a tie goes to fewer threads (less to wait for)
    m = Machine({3: 1.0})
    t = T.ThreadTuner((3,), clock=m.clock, apply=m.apply)
    m.run(t, 20)
    assert t.threads == 3 and m.applied == [3] and t.events[0]["reason"] == "one candidate"
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        T.ThreadTuner((0, 1), apply=lambda n: None)


def test_set_and_restore_threads():
    before = T.get_threads()
    with T.restored():
        T.set_threads(1)
        assert T.get_threads() == {"blas": 1, "kernels": 1}
        assert _jit.row_chunks(10**7, 1.0) == [(0, 10**7)]  # the kernels split no more
    assert T.get_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        T.set_threads(0)


@pytest.mark.parametrize("bad", ["two", 0, -1, 1.5])
def test_policy_errors_name_the_value(bad):
    with pytest.raises(ValueError, match="threads must be 'auto', a number >= 1 or None"):
        T.check_policy(bad)


def test_policy_defaults(monkeypatch):
    assert T.check_policy("3") == 3 and T.check_policy("auto") == "auto" and T.check_policy(None) is None
    monkeypatch.setattr(T, "_default_policy", None)
    monkeypatch.delenv("TINYMOBILEBERT_THREADS", raising=False)
    assert T.default_policy() is None
    monkeypatch.setenv("TINYMOBILEBERT_THREADS", "auto")
    assert T.default_policy() == "auto"
    T.set_default_policy(1)
    assert T.default_policy() == 1


def losses(tmp_path, name, threads, steps=4):
    """Losses of a short training run of the tiny benchmark size's layout on a fixed batch of
    4 x 64 tokens (products big enough for OpenBLAS to use several threads)."""
    cfg, B, S = size_config("tiny")
    cfg = cfg.replace(num_hidden_layers=1)
    ids, labels, nsp = make_batch(cfg, 4, S)
    m = MobileBertForPreTraining(cfg, seed=0)

    def batches(epoch, start):
        for _ in range(start, 3):
            yield dict(input_ids=ids, labels=labels, next_sentence_label=nsp, mlm_positions="labelled")

    Trainer(m, AdamW(m.store, lr=1e-3), batches, tmp_path / name, max_steps=steps, progress=False,
            threads=threads).train()
    return [r["loss"] for r in read_log(tmp_path / name) if r["split"] == "train"]


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_and_threads_give_bit_identical_losses(tmp_path, threads):
    before = T.get_threads()
    a, b = losses(tmp_path, "a", threads), losses(tmp_path, "b", threads)
    assert len(a) == 4 and a == b  # bit for bit (README, "Threads and reproducibility")
    assert T.get_threads() == before  # the trainer restored the thread counts


def test_auto_threads_run_and_are_logged(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 99, (4, 10))

    def batches(epoch, start):
        for _ in range(start, 4):
            yield dict(input_ids=ids, labels=np.where(rng.random(ids.shape) < 0.3, ids, -100))

    Trainer(m, AdamW(m.store, lr=1e-3), batches, tmp_path, max_steps=12, progress=False, threads="auto").train()
    logged = {r["threads"] for r in read_log(tmp_path) if r["split"] == "train"}
    assert logged and logged <= {1, T.available_cpus(), max(1, T.available_cpus() // 2)}
