"""The demo end to end at a toy size (slow: the built-in corpus is tokenized and a teacher
trained; run with ``-m slow``): its table holds every row, a second run reuses the teacher."""

import json

import pytest

from tinymobilebert.demo import format_table, run_demo


@pytest.mark.slow
def test_demo_runs_and_reuses_its_teacher(tmp_path):
    lines = []
    kw = dict(teacher_steps=6, budget_steps=10, finetune_steps=4, progress=False, print_fn=lines.append)
    s = run_demo(tmp_path / "demo", **kw)
    assert [r["model"] for r in s["rows"]] == ["IB-BERT teacher", "MobileBERT, distilled (PKT + PD)",
                                               "MobileBERT, MLM only"]
    teacher, dist, alone = s["rows"]
    assert dist["parameters"] == alone["parameters"] <= 0.5 * teacher["parameters"]
    assert teacher["mflops_per_token"] > dist["mflops_per_token"] and all(r["latency_ms"] > 0 for r in s["rows"])
    assert 0 <= s["bag_of_words_dev_accuracy"] <= 1 and s["budget"]["mlm_steps"] >= 1
    assert any("pretraining an IB-BERT" in x for x in lines) and not teacher["reused"]
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["rows"][0]["model"] == "IB-BERT teacher"
    assert "bag of words" in "\n".join(format_table(s))
    lines.clear()
    again = run_demo(tmp_path / "demo", overwrite=True, **kw)
    assert any("reusing" in x for x in lines) and again["rows"][0]["reused"]
