"""The benchmark's contention rows: the competitor process, the auto-threads worker, the table.

No timing is asserted. The subprocess-free tests run by default; the whole harness with a real
competitor is a slow test (``python -m pytest -q -m slow``).
"""

import time

import pytest

from tinymobilebert import benchmark
from tinymobilebert.benchmark.contention import IMPLS, competitor, contention_ratios, format_contention, run_contention
from tinymobilebert.benchmark.report import format_report
from tinymobilebert.benchmark.workers import worker_step
from tinymobilebert.threads import get_threads, restored


def test_competitor_runs_and_is_stopped():
    with competitor("spin") as proc:
        time.sleep(0.2)
        assert proc.poll() is None  # still spinning
    assert proc.poll() is not None
    with competitor(None) as nothing:
        assert nothing is None
    with pytest.raises(ValueError, match="competitor must be one of"):
        with competitor("fork-bomb"):
            pass


def test_worker_step_with_auto_threads_reports_its_choice():
    before = get_threads()
    with restored():  # a worker owns its process's threads; here it shares ours
        e = worker_step({"impl": "tinymobilebert", "size": "micro", "mode": "train", "warmup": 1, "repeats": 2,
                         "threads": "auto"})
    assert e["time"]["n"] == 2 and e["threads_chosen"] >= 1
    assert e["thread_events"] and e["thread_events"][0]["reason"] in ("start", "one candidate")
    assert get_threads() == before



def fake_step(spec):
    """Quiet 10 ms; busy: 40 ms at fixed threads, 15 ms with auto threads (PyTorch 43 ms)."""
    busy = fake_step.busy
    t = {"tinymobilebert": 0.010, "pytorch": 0.010}[spec["impl"]]
    if busy:
        t = 0.015 if spec["threads"] == "auto" else (0.043 if spec["impl"] == "pytorch" else 0.040)
    out = {"time": {"median": t, "min": t, "max": t, "n": 1, "samples": [t]}, "peak_rss_mb": 1.0,
           "peak_over_model_mb": 0.0}
    if spec["threads"] == "auto":
        out["threads_chosen"] = 1 if busy else 2
    return out


def test_rows_ratios_targets_and_table(monkeypatch):
    from tinymobilebert.benchmark import contention

    real = contention.competitor

    def marking(kind):  # no real process here: record whether a competitor would run
        fake_step.busy = kind is not None
        return real(None)

    monkeypatch.setattr(contention, "competitor", marking)
    cont = run_contention(["micro"], 2, "spin", fake_step, lambda: {"cpu_pressure_avg10": 0.0}, None, True,
                          log=lambda s: None)
    assert set(cont["micro"]) == set(IMPLS) and cont["competitor"] == "spin"
    ratios, targets = contention_ratios(cont)
    assert ratios["micro"]["tinymobilebert/auto"] == pytest.approx(1.5)
    assert ratios["micro"]["tinymobilebert/fixed"] == pytest.approx(4.0)
    assert ratios["micro"]["pytorch"] == pytest.approx(4.3)
    assert [round(v, 3) for _, v, _ in targets] == [1.5, 1.0]
    text = "\n".join(format_contention(cont, ratios))
    assert "tinymobilebert (auto)" in text and "pytorch (2)" in text and "4.30x" in text and "2 / 1  pass" in text
    skipped = run_contention(["micro"], 2, "spin", fake_step, lambda: {}, "skipped (not in --impls)", True,
                             log=lambda s: None)
    assert skipped["micro"]["pytorch"] == {"skipped": "skipped (not in --impls)"}


@pytest.mark.slow
def test_bench_with_a_real_competitor(tmp_path):
    res = benchmark.main(["--quick", "--sizes", "micro", "--repeats", "2", "--no-jit", "--no-kernels", "--impls",
                          "tinymobilebert,numpy-twins", "--contention", "micro", "--json", str(tmp_path / "b.json")])
    rows = res["contention"]["micro"]
    for impl in ("tinymobilebert/auto", "tinymobilebert/fixed"):
        for key in ("quiet", "busy"):
            assert "error" not in rows[impl][key] and rows[impl][key]["time"]["n"] == 2
    assert rows["tinymobilebert/auto"]["busy"]["threads_chosen"] >= 1
    assert res["ratios"]["contention"]["micro"]["tinymobilebert/auto"] > 0
    assert "Contention: a training step" in format_report(res)
