"""Smoke test of the benchmark harness: it runs, and its JSON has the documented structure.

No timing is asserted (the numbers depend on the machine and its load); only that every
measurement produced numbers of the right kind, or says why it was skipped.
"""

import copy
import json
import math

import pytest

from tinymobilebert import benchmark
from tinymobilebert.benchmark.measure import IMPLS, MODES, TORCH_SKIPPED
from tinymobilebert.benchmark.report import format_report
from tinymobilebert.benchmark.run import ratios, torch_available
from tinymobilebert.benchmark.workers import run_worker


def _number(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Ours and the twins through the whole harness; PyTorch (slow to import) has its own test."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    res = benchmark.main(["--quick", "--sizes", "micro", "--repeats", "1", "--no-jit", "--impls",
                          "tinymobilebert,numpy-twins", "--distill-sizes", "micro", "--json", str(path)])
    return res, json.loads(path.read_text())


def test_json_has_every_section(quick_run):
    _, data = quick_run
    assert set(data) >= {"machine", "settings", "matmul_peak", "steps", "kernels", "ratios", "targets"}
    assert data["machine"]["threads"] >= 1 and data["machine"]["numpy"]
    assert data["settings"]["sizes"] == ["micro"]
    assert "jit" not in data  # --no-jit
    assert _number(data["matmul_peak"]["numpy_1024"]) and data["matmul_peak"]["numpy_1024"] > 0


def test_steps_have_times_and_memory(quick_run):
    _, data = quick_run
    st = data["steps"]["micro"]
    assert _number(st["flops"]["train_all"]) and st["flops"]["train_all"] > st["flops"]["train_useful"] > 0
    for impl in IMPLS:
        for mode in MODES:
            e = st[f"{impl}/{mode}"]
            if impl == "pytorch":
                assert e == {"skipped": "skipped (not in --impls)"}
                continue
            _check_step(e, repeats=1)


def _check_step(e, repeats):
    assert "error" not in e, e
    t = e["time"]
    assert t["n"] == repeats == len(t["samples"]) and t["min"] <= t["median"] <= t["max"]
    assert _number(t["cpu_per_call"])
    assert _number(e["check"])  # a finite loss / logit: the step really ran
    assert e["peak_rss_mb"] >= e["rss_model_mb"] > 0
    assert _number(e["peak_over_model_mb"])


def test_token_dropping_row(quick_run):
    res, data = quick_run
    e = data["token_dropping"]["micro"]
    assert "error" not in e, e
    for name in ("plain", "dropping"):
        assert e[name]["n"] == 1 and _number(e[name]["median"]) and _number(e[name]["cpu_per_call"])
    assert _number(e["ratio"]) and _number(e["ratio_cpu"]) and _number(e["check"])
    assert e["keep"] == 0.5 and e["layers"] == 2
    assert any(t["target"] == "micro token-dropping train step <= 0.8x plain" for t in data["targets"])
    assert "Token dropping: training step with keep 0.5" in format_report(res)


@pytest.mark.skipif(not torch_available(), reason="torch/transformers not installed")
def test_pytorch_worker():
    spec = {"impl": "pytorch", "size": "micro", "mode": "train", "warmup": 1, "repeats": 1, "threads": 1}
    e = run_worker("step", spec, threads=1)
    _check_step(e, repeats=1)
    assert e["attn_implementation"] == "eager" and e["torch_threads"] == 1


def test_ratios_and_targets(quick_run):
    _, data = quick_run
    r = data["ratios"]["micro"]["train"]
    assert _number(r["ours_vs_twins"]) and _number(r["tinymobilebert_fraction_of_peak"])
    assert set(r) >= {"ours_vs_torch", "peak_rss_vs_torch", "peak_over_model_vs_torch"}
    for t in data["targets"]:
        assert set(t) == {"target", "value", "limit", "at_most", "pass"}
        assert t["pass"] in (True, False, None)


def test_kernels_compare_numba_with_twins(quick_run):
    _, data = quick_run
    k = data["kernels"]
    import tinymobilebert.distill  # noqa: F401  (registers the distillation kernels, as the worker does)
    import tinymobilebert.optim  # noqa: F401  (registers the optimizer kernels, as the worker does)
    from tinymobilebert.kernels import REGISTRY

    names = {row["kernel"] for row in k["rows"]}
    assert names | set(k["no_recipe"]) == set(REGISTRY)  # every registered kernel is measured or listed
    assert {"norm_forward", "attention_softmax", "cross_entropy_backward", "adamw_update"} <= names
    for row in k["rows"]:
        assert row["speedup"] > 0 and row["numba"]["median"] > 0 and row["numpy"]["median"] > 0
        assert isinstance(row["used_by_model"], bool)
    assert "norm_forward" in k["used"] and "adamw_update" in k["used"]
    distill_kernels = {"feature_map_loss_forward", "feature_map_loss_backward", "row_moments", "row_moments_backward",
                       "soft_target_ce_forward", "soft_target_ce_backward"}
    assert distill_kernels <= names and distill_kernels <= set(k["used"])  # measured, with the 2x target
    shapes = {row["shape"] for row in k["rows"] if row["kernel"] == "soft_target_ce_forward"}
    assert any(s.startswith("attention transfer") for s in shapes) and any(s.startswith("MLM distillation")
                                                                           for s in shapes)
    assert not k["no_recipe"]  # every registered kernel has a recipe
    blas = [row for row in k["rows"] if not row["numba_kernel"]]
    assert {row["kernel"] for row in blas} == {"gemm_accumulate"}
    assert not any(t["target"].startswith("kernel gemm_accumulate") for t in data["targets"])  # no 2x target


def test_report_reprints_a_saved_run(quick_run, tmp_path, capsys):
    res, _ = quick_run
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(res))
    again = benchmark.main(["--report", str(path)])
    assert again["targets"] == res["targets"]
    assert capsys.readouterr().out.strip() == format_report(res).strip()


def test_report_says_when_torch_is_missing(quick_run):
    res, _ = quick_run
    res = copy.deepcopy(res)
    for mode in MODES:
        res["steps"]["micro"][f"pytorch/{mode}"] = {"skipped": TORCH_SKIPPED}
    res["ratios"], res["targets"] = ratios(res)
    assert res["ratios"]["micro"]["train"]["ours_vs_torch"] is None
    text = format_report(res)
    assert TORCH_SKIPPED in text and "Targets" in text


def test_distillation_step_is_measured(quick_run):
    res, data = quick_run
    _check_step(data["distill"]["micro"]["tinymobilebert"], repeats=1)
    assert "pytorch" not in data["distill"]["micro"]  # not in --impls
    assert "transformers cannot run" in data["distill"]["teacher"]
    assert "Distillation step" in format_report(res)
    assert any(t["target"].startswith("micro distillation step") for t in data["targets"])


@pytest.mark.skipif(not torch_available(), reason="torch/transformers not installed")
def test_pytorch_distillation_worker():
    e = run_worker("distill", {"impl": "pytorch", "size": "micro", "warmup": 1, "repeats": 1, "threads": 1}, threads=1)
    _check_step(e, repeats=1)


def test_dynabert_row(quick_run):
    """Every width x depth sub-network of both layouts, extracted and run in the supernet."""
    _, data = quick_run
    assert set(data["dynabert"]) == {"mobilebert/micro", "bert/micro"}
    for key, entry in data["dynabert"].items():
        assert "error" not in entry, entry
        assert [(r["width"], r["depth"]) for r in entry["rows"]] == [
            (w, d) for d in (0.5, 0.75, 1.0) for w in (0.25, 0.5, 0.75, 1.0)]
        for r in entry["rows"]:
            assert r["flops"] > 0 and r["extracted"]["median"] > 0 and r["supernet"]["median"] > 0
    names = [t["target"] for t in data["targets"]]
    assert any(n.startswith("dynabert bert/micro: supernet") for n in names)
    assert "DynaBERT sub-networks, mobilebert/micro" in format_report(data)


# ------------------------------------------------------------------------------ the one latency timer
class FakeClock:
    """A clock that only a "call" moves: the k-th call (from 1) takes k seconds."""

    def __init__(self):
        self.now, self.calls = 0.0, 0

    def __call__(self):
        return self.now

    def call(self, *args, **kwargs):
        self.calls += 1
        self.now += self.calls


def test_call_times_times_only_the_calls_after_warm_up():
    from tinymobilebert.benchmark.measure import call_times

    clock = FakeClock()
    assert call_times(clock.call, 2, 3, clock=clock) == [3.0, 4.0, 5.0]  # calls 1 and 2 warm up, untimed
    assert clock.calls == 5
    clock = FakeClock()  # at least 2 timed calls, then more until 10 s are spent, at most 6
    assert call_times(clock.call, 1, 2, budget_s=10.0, max_repeats=6, clock=clock) == [2.0, 3.0, 4.0, 5.0]
    clock = FakeClock()
    assert call_times(clock.call, 0, 1, budget_s=100.0, max_repeats=3, clock=clock) == [1.0, 2.0, 3.0]
    clock, reads = FakeClock(), []

    def counter():  # read right before and right after each timed call: 2 per timed call
        reads.append(clock.calls)
        return 10 * clock.calls

    samples, totals = call_times(clock.call, 1, 2, counters={"c": counter}, clock=clock)
    assert samples == [2.0, 3.0] and totals == {"c": 20} and reads == [1, 2, 2, 3]


def test_time_calls_and_time_adaptive_count_their_calls():
    from tinymobilebert.benchmark.measure import time_adaptive, time_calls

    calls = []
    out = time_calls(lambda: calls.append(1), 2, 3)
    assert len(calls) == 5 and out["n"] == 3 and len(out["samples"]) == 3 and out["cpu_per_call"] >= 0
    assert out["min"] <= out["median"] <= out["max"]
    calls.clear()
    assert time_adaptive(lambda: calls.append(1), 0.0, min_reps=4)["n"] == 4 and len(calls) == 5


def test_latency_helpers_report_the_median_of_the_timed_passes(monkeypatch):
    """DynaBERT's ``measure_latency`` (seconds) and the demo's ``inference_latency_ms`` time with
    ``call_times``: warm-up passes untimed, the median of the rest."""
    import types

    import numpy as np

    from tinymobilebert.benchmark import measure
    from tinymobilebert.demo import inference_latency_ms
    from tinymobilebert.dynabert.table import measure_latency

    clock = FakeClock()
    monkeypatch.setattr(measure, "time", types.SimpleNamespace(perf_counter=clock))
    model = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=10), forward=clock.call)
    model.eval = lambda: model
    assert measure_latency(model, 1, 4, repeats=3, warmup=2) == 4.0  # passes 3, 4, 5
    clock.__init__()
    batch = {"input_ids": np.zeros((1, 4), np.int64)}
    assert inference_latency_ms(model, batch, repeats=4) == 3500.0  # one warm-up, then 2, 3, 4, 5 s
