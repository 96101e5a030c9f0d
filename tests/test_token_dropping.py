"""Token dropping: per-token MLM losses, importance, selection, training (exact resume), plain models after, the view.

The split and merge themselves (equality to a reference built from plain layer calls, all kept =
no dropping, gradient checks in every layout) are proven in tests/test_plan.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import kill_midway_then_resume, train_losses

from tinymobilebert import BertTokenizer, MobileBertForMaskedLM, MobileBertForPreTraining
from tinymobilebert import MobileBertForSequenceClassification
from tinymobilebert.config import bert_tiny, tiny
from tinymobilebert.data import PretrainingData, builtin_corpus
from tinymobilebert.optim import AdamW, LinearWarmupDecay
from tinymobilebert.token_dropping import TokenDropping, TokenImportance, layer_view, updated_tokens
from tinymobilebert.train import Trainer, read_log

# an unusual vocabulary order, so nothing can pass by assuming BERT's ids ([PAD] 0, [UNK] 100, ...)
VOCAB = ["the", "[SEP]", "cat", "[MASK]", "sat", "on", "[PAD]", "mat", "a", "[CLS]", "dog", "[UNK]", "ran", "fast",
         "and", "then", "slept", "##s", "big", "red"]


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer(VOCAB)


def importance_for(tok, **kw):
    return TokenImportance.from_tokenizer(tok, **kw)


# ---------------------------------------------------------------------------------- per-token losses
@pytest.mark.parametrize("cls", [MobileBertForPreTraining, MobileBertForMaskedLM])
@pytest.mark.parametrize("positions", ["all", "labelled"])
def test_per_token_mlm_losses_are_the_cross_entropy_at_each_label(cls, positions):
    m = cls(tiny(), seed=0, dtype=np.float64).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 99, (3, 9))
    labels = np.where(rng.random((3, 9)) < 0.4, ids, -100)
    labels[0, 2] = ids[0, 2]
    out = m.forward(ids, labels=labels, mlm_positions=positions)
    logits = out.prediction_logits if cls is MobileBertForPreTraining else out.logits
    logits = logits.reshape(-1, 99)
    y = labels.reshape(-1)
    rows = np.flatnonzero(y != -100) if positions == "all" else np.arange(len(out.mlm_positions))
    gold = y[y != -100]
    lse = np.log(np.exp(logits[rows]).sum(axis=1))
    expected = lse - logits[rows, gold]
    assert out.mlm_token_losses.shape == (len(gold),) and out.mlm_token_losses.dtype == np.float64
    np.testing.assert_allclose(out.mlm_token_losses, expected, rtol=1e-13)
    mlm = out.mlm_loss if cls is MobileBertForPreTraining else out.loss
    assert abs(out.mlm_token_losses.mean() - mlm) < 1e-13


def test_no_labels_no_per_token_losses():
    out = MobileBertForPreTraining(tiny(), seed=0).forward(np.array([[2, 5, 6, 3]]))
    assert out.mlm_token_losses is None


# ---------------------------------------------------------------------------------- importance
def test_special_ids_come_from_the_tokenizer(tok):
    imp = importance_for(tok)
    assert imp.vocab_size == len(VOCAB)
    assert sorted(imp.protected_ids.tolist()) == sorted([VOCAB.index(t) for t in ("[CLS]", "[SEP]", "[MASK]", "[UNK]")])
    assert imp.never_keep_ids.tolist() == [VOCAB.index("[PAD]")]
    assert imp.scores[VOCAB.index("[CLS]")] == 1e4 and imp.scores[VOCAB.index("[PAD]")] == -1e4
    assert imp.scores[VOCAB.index("cat")] == 10.0


def test_update_is_a_moving_average_and_a_repeated_id_moves_once_to_its_mean(tok):
    imp = importance_for(tok, init=10.0, beta=0.9)
    cat, dog = VOCAB.index("cat"), VOCAB.index("dog")
    used = imp.update(np.array([cat, dog, cat, cat]), np.array([1.0, 4.0, 2.0, 6.0]))
    assert used == 4 and imp.steps == 1
    assert imp.scores[cat] == pytest.approx(0.9 * 10 + 0.1 * 3.0, abs=1e-15)  # mean of 1, 2, 6
    assert imp.scores[dog] == pytest.approx(0.9 * 10 + 0.1 * 4.0, abs=1e-15)
    assert imp.counts[cat] == 3 and imp.counts[dog] == 1
    before = imp.scores.copy()
    imp.update(np.array([dog]), np.array([0.0]))
    assert imp.scores[dog] == pytest.approx(0.9 * before[dog], abs=1e-15) and imp.scores[cat] == before[cat]


def test_update_does_not_depend_on_the_order_of_the_slots(tok):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(VOCAB), 200)
    losses = rng.random(200) * 5
    a, b = importance_for(tok), importance_for(tok)
    a.update(labels, losses)
    p = rng.permutation(200)
    b.update(labels[p], losses[p])
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-15, atol=0)


def test_update_skips_unlabelled_weight_zero_and_fixed_ids(tok):
    imp = importance_for(tok)
    pad, unk, cat, sat = (VOCAB.index(t) for t in ("[PAD]", "[UNK]", "cat", "sat"))
    before = imp.scores.copy()
    labels = np.array([[-100, cat, pad], [unk, sat, -100]])  # (B, T) layout with -100
    losses = np.array([[np.nan, 2.0, 0.5], [3.0, 1.0, np.inf]])  # values at skipped slots are never read
    weights = np.array([[1, 1, 0], [1, 0, 1]])  # the original's padded slot: [PAD] label, weight 0
    assert imp.update(labels, losses, weights) == 1  # only (0, 1) = cat
    changed = np.flatnonzero(imp.scores != before)
    assert changed.tolist() == [cat]
    imp.update(np.array([pad, unk]), np.array([0.1, 0.1]))  # labelled fixed ids still do not move
    assert imp.scores[pad] == -1e4 and imp.scores[unk] == 1e4


@pytest.mark.parametrize("args, match", [
    ((np.array([1, 2]), np.array([1.0])), "shape of label_ids"),
    ((np.array([1, 99]), np.array([1.0, 1.0])), "vocab_size=20"),
    ((np.array([1.0, 2.0]), np.array([1.0, 1.0])), "integer ids"),
    ((np.array([2, 4]), np.array([1.0, np.nan])), "finite"),
])
def test_update_errors(tok, args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        importance_for(tok).update(*args)


def test_constructor_errors():
    with pytest.raises(ValueError, match="both protected and never kept"):
        TokenImportance(10, [1, 2], [2])
    with pytest.raises(ValueError, match="beta must be in"):
        TokenImportance(10, [1], [0], beta=1.0)
    with pytest.raises(ValueError, match="protected_ids must be ids in \\[0, vocab_size=10\\)"):
        TokenImportance(10, [10], [0])


# ---------------------------------------------------------------------------------- selection
def scored(tok, **scores):
    imp = importance_for(tok)
    for word, s in scores.items():
        imp.scores[VOCAB.index(word)] = s
    return imp


def ids_of(*words):
    return np.array([[VOCAB.index(w) for w in words]])


def test_select_keeps_the_highest_scores_and_protected_ids_first(tok):
    imp = scored(tok, cat=9.0, sat=1.0, on=5.0, mat=7.0, a=0.5)
    ids = ids_of("[CLS]", "cat", "sat", "on", "[MASK]", "mat", "a", "[SEP]")
    assert imp.select(ids, k=5).tolist() == [[0, 1, 4, 5, 7]]  # 3 protected + cat (9) + mat (7)
    assert imp.select(ids, k=2).tolist() == [[0, 4]]  # protected first, earlier ones first
    assert imp.select(ids, k=6).tolist() == [[0, 1, 3, 4, 5, 7]]
    assert imp.ranking(ids).tolist() == [[0, 4, 7, 1, 5, 3, 2, 6]]


def test_padding_is_never_kept_ahead_of_a_real_token(tok):
    imp = scored(tok, cat=0.1, sat=0.2)
    ids = ids_of("[CLS]", "cat", "sat", "[SEP]", "[PAD]", "dog", "dog")  # dog at padded positions
    mask = np.array([[1, 1, 1, 1, 0, 0, 0]])
    assert imp.select(ids, mask, k=4).tolist() == [[0, 1, 2, 3]]  # dog scores 10 but is padding
    assert imp.ranking(ids, mask)[0, 4:].tolist() == [4, 5, 6]
    # a [PAD] id at a real position ranks after every ordinary token, before padding
    ids2 = ids_of("[CLS]", "[PAD]", "cat", "[SEP]", "dog")
    assert imp.ranking(ids2, np.array([[1, 1, 1, 1, 0]])).tolist() == [[0, 3, 2, 1, 4]]
    imp.scores[VOCAB.index("cat")] = -5e4  # even a score below the deny value keeps a real token ahead
    assert imp.ranking(ids2, np.array([[1, 1, 1, 1, 0]])).tolist() == [[0, 3, 2, 1, 4]]


def test_ties_go_to_the_earlier_position(tok):
    imp = importance_for(tok)  # every ordinary id at init: all tied
    ids = ids_of("cat", "sat", "on", "mat", "a", "dog")
    assert imp.select(ids, k=3).tolist() == [[0, 1, 2]]
    imp.scores[VOCAB.index("a")] = 10.5
    assert imp.select(ids, k=3).tolist() == [[0, 1, 4]]
    ids2 = ids_of("cat", "dog", "cat", "dog")  # the same id twice: the same score, position decides
    imp.scores[VOCAB.index("dog")] = 11.0
    assert imp.select(ids2, k=3).tolist() == [[0, 1, 3]]


def test_keep_ratio_and_count(tok):
    imp = importance_for(tok)
    ids = np.zeros((2, 10), np.int64) + VOCAB.index("cat")
    assert imp.select(ids, keep=0.5).shape == (2, 5)
    assert imp.select(ids).shape == (2, 5)  # default 0.5
    assert imp.select(ids, keep=0.3).shape == (2, 3)  # 0.3 * 10 is 3.0000000000000004: still 3
    assert imp.select(ids, keep=0.55).shape == (2, 6)  # ceil
    assert imp.select(ids, keep=0.01).shape == (2, 1)
    assert imp.select(ids, keep=1.0).shape == (2, 10)
    assert imp.select(ids, k=7).shape == (2, 7)
    for kw, match in ((dict(keep=0.5, k=3), "not both"), (dict(k=11), "k=11 .* only T=10"), (dict(k=0), "positive"),
                      (dict(keep=0.0), "ratio in \\(0, 1\\]"), (dict(keep=1.5), "ratio"), (dict(k=2.0), "positive")):
        with pytest.raises(ValueError, match=match):
            imp.select(ids, **kw)
    with pytest.raises(ValueError, match="shape of input_ids"):
        imp.select(ids, np.ones((2, 9)))


def test_only_mask_replaced_targets_are_protected():
    """On real masked batches: every [MASK] is kept; targets shown as themselves or as a random
    token are ranked like any token, so some of them are dropped (spec B.2)."""
    docs = builtin_corpus()[:30]
    tok = BertTokenizer.train((s for d in docs for s in d.sentences), vocab_size=400)
    data = PretrainingData(docs, tok, max_length=48, seed=0)
    imp = TokenImportance.from_tokenizer(tok)
    imp.scores[imp.tier == 1] = np.random.default_rng(0).random(int((imp.tier == 1).sum())) * 10
    batch = next(data.batches(256, 0))
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    idx = imp.select(ids, mask, keep=0.5)
    kept = np.zeros(ids.shape, bool)
    np.put_along_axis(kept, idx, True, axis=1)
    is_mask = ids == tok.mask_token_id
    assert is_mask.any() and kept[is_mask].all()
    assert kept[np.isin(ids, [tok.cls_token_id, tok.sep_token_id])].all()
    other_targets = (labels != -100) & ~is_mask
    dropped_share = 1 - kept[other_targets].mean()
    assert other_targets.sum() > 100 and 0.2 < dropped_share < 0.9
    assert not (kept & (mask == 0) & (mask.sum(axis=1, keepdims=True) >= idx.shape[1])).any()


def test_state_dict_round_trip_and_mismatch(tok):
    imp = importance_for(tok)
    imp.update(np.array([2, 4, 2]), np.array([1.0, 2.0, 3.0]))
    other = importance_for(tok)
    other.load_state_dict(imp.state_dict())
    np.testing.assert_array_equal(other.scores, imp.scores)
    np.testing.assert_array_equal(other.counts, imp.counts)
    assert other.steps == 1
    with pytest.raises(ValueError, match="vocabulary of 20 ids, this one has 30"):
        TokenImportance(30, imp.protected_ids, imp.never_keep_ids).load_state_dict(imp.state_dict())
    with pytest.raises(ValueError, match="protected_ids"):
        TokenImportance(20, [0], [6]).load_state_dict(imp.state_dict())


def test_extremes(tok):
    imp = importance_for(tok, beta=0.5)
    cat, dog, sat = VOCAB.index("cat"), VOCAB.index("dog"), VOCAB.index("sat")
    imp.update(np.array([cat, dog, sat, dog]), np.array([2.0, 8.0, 4.0, 8.0]))
    most, least = imp.extremes(n=2)
    assert [i for i, *_ in most] == [dog, sat] and [i for i, *_ in least] == [cat, sat]
    assert most[0] == (dog, 9.0, 2)
    text = imp.format_extremes(tok, n=2)
    assert "dog" in text and "cat" in text and "3 ids seen" in text
    assert "[CLS]" not in text


# ---------------------------------------------------------------------------------- training
def synthetic_batches(epoch, start, n=5):
    for k in range(start, n):
        rng = np.random.default_rng([7, epoch, k])
        ids = rng.integers(5, 99, (4, 10))
        mask = np.ones_like(ids)
        mask[2, 7:] = 0
        labels = np.where((rng.random((4, 10)) < 0.3) & (mask > 0), ids, -100)
        labels[:, 1] = ids[:, 1]
        ids[:, 1] = 4  # [MASK]
        yield dict(input_ids=ids, attention_mask=mask, labels=labels, next_sentence_label=rng.integers(0, 2, 4),
                   mlm_positions="labelled")


def make(out, steps, cfg=None, save_every=4):
    m = MobileBertForPreTraining(cfg or tiny(hidden_dropout_prob=0.1, num_hidden_layers=4), seed=0)
    opt = AdamW(m.store, lr=1e-3, schedule=LinearWarmupDecay(2, 12), max_grad_norm=1.0)
    dropping = TokenDropping(TokenImportance(99, [1, 2, 3, 4], [0], beta=0.9), keep=0.5)
    return Trainer(m, opt, synthetic_batches, out, max_steps=steps, save_every=save_every, progress=False,
                   step_fn=dropping, extra_state={"token_importance": dropping}), dropping


def test_the_step_drops_tokens_and_learns(tmp_path):
    trainer, dropping = make(tmp_path, 3)
    seen = []
    original = trainer.model.forward
    trainer.model.forward = lambda **b: seen.append(b) or original(**b)
    trainer.train()
    assert len(seen) == 3 and all(b["keep_positions"].shape == (4, 5) for b in seen)
    assert all(np.all(b["keep_positions"][:, :2] == [0, 1]) for b in seen)  # ties: earliest; [MASK] at 1
    assert dropping.importance.steps == 3 and (dropping.importance.counts > 0).sum() > 10
    assert {"loss", "mlm_loss", "nsp_loss"} <= set(read_log(tmp_path)[-1])


def test_a_nan_stops_the_dropping_step_naming_its_block_and_leaves_the_table_alone(tmp_path):
    from tinymobilebert.diagnostics import NonFiniteError

    trainer, dropping = make(tmp_path, 3)
    trainer.model.params["mobilebert.embeddings.word_embeddings.weight"][...] = np.nan
    before = dropping.importance.scores.copy()
    with pytest.raises(NonFiniteError, match="step 1: loss became nan.*embeddings"):
        trainer.train()
    np.testing.assert_array_equal(dropping.importance.scores, before)  # nothing learned from NaN losses


@pytest.mark.parametrize("cfg", [tiny(hidden_dropout_prob=0.1, num_hidden_layers=4),
                                 bert_tiny(num_hidden_layers=4)], ids=["mobilebert", "bert"])
def test_resume_in_process_is_exact_with_the_importance_table(tmp_path, cfg):
    a, da = make(tmp_path / "a", 12, cfg)
    a.train()
    make(tmp_path / "b", 7, cfg)[0].train()  # saves at 4 and at its end (7)
    b, db = make(tmp_path / "b", 12, cfg)
    assert b.resume() and b.state == {"step": 7, "epoch": 1, "batch": 2}
    assert db.importance.steps == 7 and (db.importance.counts > 0).any()
    b.train()
    la = [r["loss"] for r in read_log(tmp_path / "a")]
    lb = [r["loss"] for r in read_log(tmp_path / "b")]
    assert len(la) == len(lb) == 12 and la == lb
    np.testing.assert_array_equal(da.importance.scores, db.importance.scores)
    # without the table the resumed run would select differently: the saved table is not the initial one
    fresh = TokenImportance(99, [1, 2, 3, 4], [0], beta=0.9)
    assert not np.array_equal(fresh.scores, db.importance.scores)


def test_a_model_pretrained_with_dropping_is_a_plain_model(tmp_path):
    trainer, dropping = make(tmp_path / "run", 6)
    trainer.train()
    model = trainer.model.eval()
    model.save_pretrained(tmp_path / "model")
    plain = MobileBertForPreTraining(model.config, seed=1)
    plain.save_pretrained(tmp_path / "never_dropped")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config == json.loads((tmp_path / "never_dropped" / "config.json").read_text())
    assert sorted(os.listdir(tmp_path / "model")) == sorted(os.listdir(tmp_path / "never_dropped"))
    loaded = MobileBertForPreTraining.from_pretrained(tmp_path / "model")
    batch = next(synthetic_batches(0, 0))
    args = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    a, b = model.forward(**args, keep_cache=False), loaded.forward(**args, keep_cache=False)
    np.testing.assert_array_equal(a.prediction_logits, b.prediction_logits)
    np.testing.assert_array_equal(a.seq_relationship_logits, b.seq_relationship_logits)
    with pytest.warns(UserWarning, match="newly initialised"):
        cls = MobileBertForSequenceClassification.from_pretrained(tmp_path / "model")
    np.testing.assert_array_equal(cls.forward(**args, keep_cache=False).last_hidden_state, a.last_hidden_state)


# ---------------------------------------------------------------------------------- the workflow and CLI
SMALL = {"hidden_size": 32, "embedding_size": 16, "intra_bottleneck_size": 16, "intermediate_size": 32,
         "num_hidden_layers": 3, "num_attention_heads": 2, "max_position_embeddings": 32}


def pretrain_cmd(out, corpus, steps, *extra):
    return [sys.executable, "-m", "tinymobilebert", "pretrain", "--out", str(out), "--corpus", corpus,
            "--steps", str(steps), "--batch-size", "8", "--max-length", "32", "--vocab-size", "300",
            "--save-every", "10", "--eval-every", "0", "--warmup", "5", "--config", json.dumps(SMALL),
            "--threads", "1", "--no-progress", "--token-dropping", "0.5", *extra]  # fixed: bit-identical sums


def test_killed_process_resumes_exactly_with_token_dropping(tmp_path, run_corpus):
    from safetensors.numpy import load_file

    steps = 80
    whole = tmp_path / "whole"
    subprocess.run(pretrain_cmd(whole, run_corpus, steps), check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    kill_midway_then_resume(pretrain_cmd(killed, run_corpus, steps), killed, train_losses, at_least=25, total=steps)
    assert train_losses(killed) == train_losses(whole)  # every step's loss, bit for bit
    a, b = load_file(whole / "token_importance.safetensors"), load_file(killed / "token_importance.safetensors")
    np.testing.assert_array_equal(a["scores"], b["scores"])
    assert int(a["steps"][0]) == steps


def test_workflow_logs_held_out_metrics_with_and_without_dropping(tmp_path, run_corpus):
    from tinymobilebert import workflows as wf

    r = wf.pretrain(tmp_path / "pre", corpus=run_corpus, vocab_size=300, config=SMALL, steps=6, batch_size=8,
                    max_length=32, warmup=2, eval_every=3, save_every=0, progress=False, token_dropping=0.5,
                    split_layer=0)
    table = TokenImportance.load(tmp_path / "pre" / "token_importance.safetensors")
    np.testing.assert_array_equal(table.scores, r["token_importance"].scores)
    assert table.steps == 6
    dev = [x for x in read_log(tmp_path / "pre") if x["split"] == "dev"]
    assert [x["step"] for x in dev] == [3, 6]
    for x in dev:
        assert {"mlm_loss", "mlm_accuracy", "dropping_mlm_loss", "dropping_mlm_accuracy"} <= set(x)
    assert dev[-1]["mlm_loss"] != dev[-1]["dropping_mlm_loss"]  # split at 0: the two really differ
    assert r["token_importance"].steps == 6
    assert json.loads((tmp_path / "pre" / "run.json").read_text())["settings"]["token_dropping"] == 0.5
    model = MobileBertForPreTraining.from_pretrained(tmp_path / "pre" / "model")
    assert "token_dropping" not in json.loads((tmp_path / "pre" / "model" / "config.json").read_text())
    assert model.config.num_hidden_layers == 3


@pytest.mark.parametrize("extra, status, message", [
    (["--token-dropping", "1.5"], 2, "--token-dropping: must be a share of tokens kept in (0, 1], got '1.5'"),
    (["--split-layer", "1"], 1, "error: --split-layer 1 needs --token-dropping"),
    (["--token-dropping", "0.5", "--split-layer", "3"], 1, "error: --split-layer: split_layer must be an integer in "
                                                           "[0, 2]"),
])
def test_cli_errors(tmp_path, run_corpus, extra, status, message):
    cmd = [sys.executable, "-m", "tinymobilebert", "pretrain", "--out", str(tmp_path / "x"), "--corpus", run_corpus,
           "--vocab-size", "300", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == status and message in out.stderr, out.stderr
    assert not (tmp_path / "x" / "run.json").exists()  # refused before anything was written


def test_a_split_layer_out_of_range_fails_before_training(tmp_path, run_corpus):
    from tinymobilebert import workflows as wf

    with pytest.raises(ValueError, match="--split-layer: split_layer must be an integer in \\[0, 1\\]"):
        wf.pretrain(tmp_path / "pre", corpus=run_corpus, vocab_size=300, config=SMALL, steps=2, batch_size=8,
                    max_length=32, warmup=1, progress=False, token_dropping=0.5, split_layer=2)


# ---------------------------------------------------------------------------------- the view
def test_the_view_matches_what_the_model_ran(tmp_path, tok):
    cfg = tiny(vocab_size=len(VOCAB), num_hidden_layers=6)
    imp = scored(tok, cat=9.0, sat=1.0, on=5.0, mat=7.0, a=0.5)
    view = layer_view(cfg, tok, imp, "the cat sat on a mat", keep=0.5)
    assert view.tokens == ["[CLS]", "the", "cat", "sat", "on", "a", "mat", "[SEP]"]
    assert view.kept.tolist() == [0, 1, 2, 7] and view.rows == ["all", "all", "split", "kept", "kept", "all"]
    # the model, run with the same kept positions, updates exactly the rows the view marks
    m = MobileBertForPreTraining(cfg, seed=0, dtype=np.float64).eval()
    ids = np.array([tok.encode("the cat sat on a mat")])
    out = m.forward(ids, keep_positions=view.kept[None], output_hidden_states=True, keep_cache=False)
    assert [h.shape[1] for h in out.hidden_states[1:]] == view.updated.sum(axis=1).tolist()
    text = view.format()
    assert text.count("dropped") == 4 and "L2s" in text and "always" in text
    png = view.plot(tmp_path / "view.png")
    assert os.path.getsize(png) > 2000
    layers, rows, updated = updated_tokens(cfg, 8, [0, 3], split_layer=0)
    assert rows == ["split"] + ["kept"] * 4 + ["all"] and updated[:5].sum(axis=1).tolist() == [2] * 5
