"""Diagnostics: NaN reaches the loss, check_finite names the first bad block, statistics are the
tensors' own, export warnings follow their rules, ``inspect`` runs on saved models, and the trainer
stops at a non-finite loss or gradient without ever saving non-finite weights."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tinymobilebert import MobileBertForPreTraining, MobileBertForSequenceClassification
from tinymobilebert.config import bert_tiny, ib_bert_tiny, tiny
from tinymobilebert.diagnostics import (FLOAT16_MAX, FLOAT16_NEAR, ActivationStats, NonFiniteError, activation_stats,
                                        check_finite, export_warnings, first_nonfinite, nonfinite_parameters)
from tinymobilebert.kernels import use_numpy_twins
from tinymobilebert.optim import AdamW
from tinymobilebert.train import Trainer, latest_checkpoint, read_log
from tinymobilebert.train.checkpoints import load_training_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:(invalid value|overflow) encountered:RuntimeWarning")
FFN_WEIGHT = "mobilebert.encoder.layer.1.ffn.0.intermediate.dense.weight"


def batch(cfg, B=2, T=9, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, cfg.vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    labels = np.where(rng.random((B, T)) < 0.4, ids, -100)
    labels[0, 1] = ids[0, 1]
    return dict(input_ids=ids, attention_mask=mask, labels=labels, next_sentence_label=np.array([0, 1]))


@pytest.mark.parametrize("twins", [False, True])
def test_one_nan_weight_reaches_the_loss(twins):
    """The bug that started issue 13: one NaN in a ReLU layer's weights gave a finite loss."""
    cfg = tiny(num_feedforward_networks=2)
    m = MobileBertForPreTraining(cfg, seed=0).eval()
    m.params[FFN_WEIGHT][0, 0] = np.nan
    with use_numpy_twins(twins):
        out = m.forward(**batch(cfg))
    assert np.isnan(out.loss) and np.isnan(out.prediction_logits).any()


def test_check_finite_names_the_first_block():
    cfg = tiny(num_feedforward_networks=2)
    m = MobileBertForPreTraining(cfg, seed=0).eval()
    out = check_finite(m, **batch(cfg))  # all finite: the output comes back
    assert np.isfinite(out.loss)
    m.params[FFN_WEIGHT][3, :] = np.inf
    with pytest.raises(NonFiniteError, match=r"layer 1 / ffn\.0\.intermediate \(pre-activation\).*"
                                             r"non-finite parameters: " + FFN_WEIGHT) as e:
        check_finite(m, **batch(cfg))
    assert (e.value.where, e.value.block, e.value.tensor) == ("layer 1", "ffn.0.intermediate", "pre-activation")
    assert isinstance(e.value, FloatingPointError)
    assert nonfinite_parameters(m) == {FFN_WEIGHT: m.params[FFN_WEIGHT].shape[1]}  # one row


def test_check_finite_in_the_embeddings_and_the_attention():
    cfg = bert_tiny()
    m = MobileBertForSequenceClassification(cfg, seed=0).eval()
    b = batch(cfg)
    ids = b["input_ids"]
    m.params["bert.embeddings.word_embeddings.weight"][ids[0, 0], 0] = np.nan
    with pytest.raises(NonFiniteError) as e:
        check_finite(m, input_ids=ids, attention_mask=b["attention_mask"])
    assert (e.value.where, e.value.block) == ("embeddings", "word_embeddings")
    m = MobileBertForSequenceClassification(cfg, seed=0).eval()
    m.params["bert.encoder.layer.0.attention.self.key.bias"][:] = np.inf
    with pytest.raises(NonFiniteError) as e:
        check_finite(m, input_ids=ids)
    assert (e.value.where, e.value.block, e.value.tensor) == ("layer 0", "attention.self", "key")


@pytest.mark.parametrize("cfg", [tiny(num_feedforward_networks=3), ib_bert_tiny(), bert_tiny(),
                                 tiny(use_bottleneck_attention=True, key_query_shared_bottleneck=False)],
                         ids=["student", "teacher", "bert", "tiny_bottleneck_attention"])
def test_stats_are_the_tensors_own(cfg):
    m = MobileBertForPreTraining(cfg, seed=1).eval()
    b = batch(cfg)
    stats = activation_stats(m, **b)
    out = m.forward(**b, output_hidden_states=True, output_attention_scores=True)
    by_name = {(s.where, s.block, s.tensor): s for s in stats}
    assert len(by_name) == len(stats)  # every entry named once
    L, F = cfg.num_hidden_layers, cfg.num_feedforward_networks
    per_layer = 3 + 2 + 2 + 4 * (F - 1) + 2 + 2  # q, k, v, scores, probs; attention.output; ffns; int.; output
    per_layer += (2 + 2 * (cfg.key_query_shared_bottleneck and not cfg.use_bottleneck_attention)
                  + 2) if cfg.use_bottleneck else 0
    assert len(stats) == 3 + L * per_layer + 3  # embeddings; layers; pooler + two logits
    for i, h in enumerate(out.hidden_states[1:]):  # the last norm's recomputed output is the layer's output
        last = "output.bottleneck" if cfg.use_bottleneck else "output"
        s = by_name[(f"layer {i}", last, "output")]
        assert s.max_abs == pytest.approx(float(np.abs(h).max()), rel=1e-6)
        assert s.mean == pytest.approx(float(h.astype(np.float64).mean()), rel=1e-5, abs=1e-6)
    # scores: masked keys (finfo.min added) left out
    s = by_name[("layer 0", "attention.self", "scores")]
    real = out.attention_scores[0][:, :, :, :][np.broadcast_to(b["attention_mask"][:, None, None, :] > 0,
                                                               out.attention_scores[0].shape)]
    assert s.max_abs == pytest.approx(float(np.abs(real).max()), rel=1e-6) and s.max_abs < 1e3
    assert all(s.nonfinite == 0 for s in stats)
    assert [s.where for s in stats][:3] == ["embeddings"] * 3 and stats[-1].where == "head"


def test_first_nonfinite_reads_the_kept_pass_only():
    m = MobileBertForPreTraining(tiny(), seed=0)
    with pytest.raises(RuntimeError, match="no kept forward pass"):
        first_nonfinite(m)
    m.forward(**batch(m.config))
    assert first_nonfinite(m) is None


def test_export_warning_rules():
    cfg = tiny()
    m = MobileBertForPreTraining(cfg, seed=0).eval()
    stats = activation_stats(m, **batch(cfg))
    assert export_warnings(stats) == []
    key = ("layer 0", "output.bottleneck", "output")
    size = next(s.max_abs for s in stats if (s.where, s.block, s.tensor) == key)
    gamma = "mobilebert.encoder.layer.0.output.bottleneck.LayerNorm.weight"  # NoNorm: y = z * gamma + 0

    def warnings_at(target):  # scale the block's output so its max|x| is ``target``
        m.params[gamma][:] *= target / size
        stats = activation_stats(m, **batch(cfg))
        found = {(lv, s.where, s.block, s.tensor): msg for lv, s, msg in export_warnings(stats)}
        m.params[gamma][:] *= size / target
        return found

    assert key not in {k[1:] for k in warnings_at(0.9 * FLOAT16_NEAR)}
    assert "within 16x of the limit" in warnings_at(2 * FLOAT16_NEAR)[("warning", *key)]
    assert "overflows" in warnings_at(2 * FLOAT16_MAX)[("error", *key)]
    # int8: max|x| > 32 std; attention probabilities exempt
    s = ActivationStats("layer 0", "intermediate", "pre-activation", (4, 8), 33.0, 0.0, 1.0, 0, 0, 0)
    assert [(lv, msg[:5]) for lv, _, msg in export_warnings([s])] == [("warning", "int8:")]
    assert export_warnings([ActivationStats("layer 0", "x", "output", (4, 8), 31.0, 0.0, 1.0, 0, 0, 0)]) == []
    probs = ActivationStats("layer 0", "attention.self", "probs", (4, 8), 1.0, 0.0, 0.01, 0, 0, 0)
    assert export_warnings([probs]) == []
    assert export_warnings([ActivationStats("layer 0", "x", "output", (4, 8), 1.0, 0.0, 1.0, 1, 0, 0)])[0][0] == "error"


# ------------------------------------------------------------------------------ inspect


def run_inspect(*args):
    return subprocess.run([sys.executable, "-m", "tinymobilebert", "inspect", *args], capture_output=True, text=True,
                          timeout=120)


def test_inspect_on_fixtures(tmp_path):
    r = run_inspect("--model", "tests/fixtures/models/mobilebert_student", "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert "layer 1    ffn.1.intermediate" in r.stdout and "random token ids" in r.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["nonfinite_parameters"] == {} and len(data["stats"]) > 40
    r = run_inspect("--model", "tests/fixtures/models/bert_with_tokenizer", "--text", "hello world")
    assert r.returncode == 0 and "1 texts" in r.stdout and "vocab.txt" in r.stdout, r.stderr


def test_inspect_flags_a_nan_checkpoint(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    m.params[FFN_WEIGHT.replace("layer.1", "layer.0")][0, 0] = np.nan
    m.save_pretrained(tmp_path)
    r = run_inspect("--model", str(tmp_path))
    assert r.returncode == 1
    assert "NON-FINITE in mobilebert.encoder.layer.0.ffn.0.intermediate.dense.weight" in r.stdout
    assert "ERROR: layer 0 / ffn.0.intermediate (pre-activation)" in r.stdout


def test_inspect_on_a_pretrain_run(tmp_path):
    from tinymobilebert import workflows as wf
    from tinymobilebert.data import builtin_corpus

    config = {"hidden_size": 32, "embedding_size": 16, "intra_bottleneck_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32}
    wf.pretrain(tmp_path, docs=builtin_corpus()[:40], vocab_size=200, config=config, steps=2, batch_size=4,
                max_length=32, warmup=1, eval_every=0, save_every=1, progress=False)
    for folder in (tmp_path / "model", latest_checkpoint(tmp_path)):
        r = run_inspect("--model", str(folder), "--text", "json encodes python objects", "--text", "and decodes")
        assert r.returncode == 0, r.stderr
        assert "MobileBertForPreTraining, 1 layers" in r.stdout and "2 texts" in r.stdout


# ------------------------------------------------------------------------------ the trainer


def synthetic(poison_at=None, model=None, where=FFN_WEIGHT):
    def batches(epoch, start):
        for k in range(start, 6):
            if poison_at is not None and epoch * 6 + k == poison_at - 1:  # before step `poison_at`
                model.params[where][0, 0] = np.nan
            yield {**{k2: v for k2, v in batch(model.config, seed=epoch * 6 + k).items()}, "mlm_positions": "labelled"}
    return batches


def test_trainer_stops_at_a_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    m = MobileBertForPreTraining(tiny(num_feedforward_networks=2), seed=0)
    t = Trainer(m, AdamW(m.store, lr=1e-3), synthetic(poison_at=5, model=m), tmp_path, max_steps=10, save_every=2,
                progress=False)
    with pytest.raises(NonFiniteError, match=r"step 5: loss became nan; first non-finite activation: "
                                             r"layer 1 / ffn\.0\.intermediate \(pre-activation\)"):
        t.train()
    assert latest_checkpoint(tmp_path).endswith("step-00000004")
    assert not (tmp_path / "checkpoints" / "step-00000005").exists()
    fresh = MobileBertForPreTraining(tiny(num_feedforward_networks=2), seed=1)
    load_training_checkpoint(latest_checkpoint(tmp_path), fresh, AdamW(fresh.store, lr=1e-3))
    assert not nonfinite_parameters(fresh)
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4]  # the bad step is not logged


def test_trainer_stops_at_a_non_finite_gradient(tmp_path, monkeypatch):
    m = MobileBertForPreTraining(tiny(), seed=0)
    backward = m.backward

    def overflowing_backward(*a, **k):
        grads = backward(*a, **k)
        grads["mobilebert.embeddings.position_embeddings.weight"][2, 1] = np.inf  # as an overflow would
        return grads

    monkeypatch.setattr(m, "backward", overflowing_backward)
    before = m.store.data.copy()
    t = Trainer(m, AdamW(m.store, lr=1e-3), synthetic(model=m), tmp_path, max_steps=3, progress=False)
    with pytest.raises(NonFiniteError, match=r"non-finite gradients at step 1 with a finite loss: "
                                             r"mobilebert\.embeddings\.position_embeddings\.weight \(1\)"):
        t.train()
    np.testing.assert_array_equal(m.store.data, before)  # stopped before the update


def test_trainer_never_saves_non_finite_weights(tmp_path):
    m = MobileBertForPreTraining(tiny(), seed=0)
    t = Trainer(m, AdamW(m.store, lr=1e-3), synthetic(model=m), tmp_path, max_steps=2, save_every=1, progress=False)
    t.train()
    m.params["cls.predictions.bias"][0] = np.inf  # e.g. an update that overflowed after the loss was computed
    with pytest.raises(NonFiniteError, match="not saving the checkpoint of step 2: non-finite parameters: "
                                             r"cls\.predictions\.bias \(1\)"):
        t._save()
    assert latest_checkpoint(tmp_path).endswith("step-00000002")
    assert not nonfinite_parameters(_loaded(tmp_path))


def _loaded(run):
    fresh = MobileBertForPreTraining(tiny(), seed=3)
    load_training_checkpoint(latest_checkpoint(run), fresh, AdamW(fresh.store, lr=1e-3))
    return fresh
