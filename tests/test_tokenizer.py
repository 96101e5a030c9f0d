"""BertTokenizer against transformers' gold outputs, plus properties and error messages.

The gold (``fixtures/tokenizer/cases.json``) was written by transformers' Python BertTokenizer
(see ``fixtures/generate_tokenizer_fixtures.py``); this file needs neither torch nor transformers.
"""

import json
import os
import string
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import examples

from tinymobilebert.tokenizer import BasicTokenizer, BertTokenizer
from tinymobilebert.tokenizer.encoding import truncate_longest_first

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer")
UNCASED_VOCAB = os.path.join(FIXTURES, "bert-base-uncased-vocab.txt")
with open(os.path.join(FIXTURES, "cases.json"), encoding="utf-8") as _f:
    CASES = json.load(_f)


@lru_cache(maxsize=None)
def tokenizer(config_name):
    """Our tokenizer built with the settings of one fixture config."""
    config = dict(CASES["configs"][config_name])
    return BertTokenizer(os.path.join(FIXTURES, config.pop("vocab")), **config)


def explain(tok, ours, gold):
    """Both id lists as tokens, for a failure message a person can read."""
    return f"\n ours: {tok.convert_ids_to_tokens(ours)}\n gold: {tok.convert_ids_to_tokens(gold)}"


# ---- gold cases ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES["single"], ids=lambda c: c["config"])
def test_single_matches_transformers(case):
    tok = tokenizer(case["config"])
    text = case["text"]
    ids = tok.encode(text)
    assert ids == case["ids"], explain(tok, ids, case["ids"])
    assert tok.encode(text, add_special_tokens=False) == case["ids"][1:-1]
    assert tok.convert_tokens_to_ids(tok.tokenize(text)) == case["ids"][1:-1]
    truncated = tok.encode(text, max_length=case["max_length"], truncation=True)
    assert truncated == case["truncated_ids"], explain(tok, truncated, case["truncated_ids"])
    assert tok.decode(case["ids"]) == case["decode"]
    assert tok.decode(case["ids"], skip_special_tokens=True, clean_up_tokenization_spaces=False) == \
        case["decode_skip_raw"]


@pytest.mark.parametrize("case", CASES["pairs"], ids=lambda c: c["config"])
def test_pair_matches_transformers(case):
    tok = tokenizer(case["config"])
    a, b, m = case["text"], case["text_pair"], case["max_length"]
    ids = tok.encode(a, b)
    assert ids == case["ids"], explain(tok, ids, case["ids"])
    truncated = tok.encode(a, b, max_length=m, truncation=True)
    assert truncated == case["truncated_ids"], explain(tok, truncated, case["truncated_ids"])
    batch = tok([a], [b], max_length=m, truncation=True)
    assert batch["input_ids"][0].tolist() == case["truncated_ids"]
    assert batch["token_type_ids"][0].tolist() == case["truncated_token_type_ids"]
    assert tok([a], [b])["token_type_ids"][0].tolist() == case["token_type_ids"]


@pytest.mark.parametrize("case", CASES["batches"], ids=lambda c: f"{c['config']}-padding={c['padding']}")
def test_batch_matches_transformers(case):
    tok = tokenizer(case["config"])
    args = (case["texts"],) if case["text_pairs"] is None else (case["texts"], case["text_pairs"])
    batch = tok(*args, max_length=case["max_length"], padding=case["padding"], truncation=True)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[key].dtype == np.int64
        np.testing.assert_array_equal(batch[key], np.array(case[key], dtype=np.int64), err_msg=key)


@pytest.mark.parametrize("case", CASES["decodes"], ids=lambda c: c["config"])
def test_decode_matches_transformers(case):
    tok = tokenizer(case["config"])
    text = tok.decode(case["ids"], skip_special_tokens=case["skip_special_tokens"],
                      clean_up_tokenization_spaces=case["clean_up_tokenization_spaces"])
    assert text == case["text"]
    assert tok.decode(np.array(case["ids"], dtype=np.int64), skip_special_tokens=case["skip_special_tokens"],
                      clean_up_tokenization_spaces=case["clean_up_tokenization_spaces"]) == text


def test_uncased_vocab_facts():
    tok = tokenizer("uncased")
    assert len(tok) == 30522 and len(tok.vocab) == 30522 and len(tok.ids_to_tokens) == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert tok.convert_ids_to_tokens(tok.mask_token_id) == tok.mask_token == "[MASK]"
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert tok.convert_tokens_to_ids(["hello", "no-such-token"]) == [7592, tok.unk_token_id]


# ---- properties ------------------------------------------------------------------------------
SETTINGS = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
any_text = st.text(st.characters(codec="utf-8"), max_size=60) | st.text(string.printable, max_size=60)
# Letters, digits, accented letters, punctuation and CJK from the uncased vocab: all splittable.
covered_text = st.text(string.ascii_letters + string.digits + "éèñüÅçÉ .,;:!?()-'\"/\t\n中文日本", max_size=80)


@SETTINGS
@given(text=any_text)
def test_any_text_encodes_to_valid_ids(text):
    tok = tokenizer("uncased")
    ids = tok.encode(text)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert all(0 <= i < len(tok) for i in ids)
    tok.decode(ids)


@SETTINGS
@given(text=covered_text)
def test_decode_of_encode_is_the_basic_words(text):
    tok = tokenizer("uncased")
    ids = tok.encode(text, add_special_tokens=False)
    assume(tok.unk_token_id not in ids)
    words = BasicTokenizer(do_lower_case=True).tokenize(text)
    assert tok.decode(ids, clean_up_tokenization_spaces=False) == " ".join(words)


@SETTINGS
@given(text=st.text(string.printable, max_size=80), lower=st.booleans(), never_split=st.booleans())
def test_ascii_fast_path_equals_unicode_path(text, lower, never_split):
    basic = BasicTokenizer(do_lower_case=lower, never_split=["[MASK]", "[cls]"] if never_split else None)
    assert basic._tokenize_ascii(text) == basic._tokenize_unicode(text)


@SETTINGS
@given(a=any_text, b=any_text | st.none(), max_length=st.integers(3, 40))
def test_truncation_never_exceeds_max_length(a, b, max_length):
    tok = tokenizer("uncased")
    full = tok.encode(a, b)
    cut = tok.encode(a, b, max_length=max_length, truncation=True)
    assert len(cut) == min(len(full), max_length)
    if b is None:  # a single text loses its end
        assert cut[:-1] == full[: len(cut) - 1]


@SETTINGS
@given(a=covered_text, b=covered_text, max_length=st.integers(3, 40) | st.none())
def test_pairs_keep_sep_positions(a, b, max_length):
    tok = tokenizer("uncased")
    batch = tok([a], [b], max_length=max_length, truncation=max_length is not None)
    ids, types = batch["input_ids"][0], batch["token_type_ids"][0]
    first_len = int((types == 0).sum())
    assert (types[:first_len] == 0).all() and (types[first_len:] == 1).all()
    assert ids[0] == tok.cls_token_id and ids[first_len - 1] == tok.sep_token_id and ids[-1] == tok.sep_token_id
    assert (ids == tok.sep_token_id).sum() == 2  # no "[SEP]" in these texts, so only ours


@given(len_a=st.integers(0, 30), len_b=st.integers(0, 30), data=st.data())
def test_longest_first_equals_one_at_a_time(len_a, len_b, data):
    remove = data.draw(st.integers(0, len_a + len_b))
    a, b = list(range(len_a)), list(range(100, 100 + len_b))
    ref_a, ref_b = list(a), list(b)
    for _ in range(remove):  # gold: drop one token from the longer sequence, the second on ties
        (ref_a if len(ref_a) > len(ref_b) else ref_b).pop()
    assert truncate_longest_first(a, b, remove) == (ref_a, ref_b)


@SETTINGS
@given(texts=st.lists(any_text, min_size=1, max_size=5), padding=st.sampled_from([True, "longest", "max_length"]))
def test_padding_and_mask_agree(texts, padding):
    tok = tokenizer("uncased")
    batch = tok(texts, max_length=24, padding=padding, truncation=True)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    lengths = [len(tok.encode(t, max_length=24, truncation=True)) for t in texts]
    assert ids.shape == (len(texts), 24 if padding == "max_length" else max(lengths))
    assert mask.sum(axis=1).tolist() == lengths
    for row, n in enumerate(lengths):
        assert (mask[row, :n] == 1).all() and (ids[row, n:] == tok.pad_token_id).all() and (types[row] == 0).all()


# ---- files -----------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    tok = BertTokenizer(UNCASED_VOCAB, do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False,
                        model_max_length=128)
    paths = tok.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["tokenizer_config.json", "vocab.txt"]  # no temp files left
    with open(UNCASED_VOCAB, "rb") as original, open(paths[0], "rb") as saved:
        assert original.read() == saved.read()
    for source in (tmp_path / "saved", paths[0]):
        loaded = BertTokenizer.from_pretrained(source)
        assert loaded.ids_to_tokens == tok.ids_to_tokens
    loaded = BertTokenizer.from_pretrained(tmp_path / "saved")
    assert (loaded.do_lower_case, loaded.strip_accents, loaded.tokenize_chinese_chars, loaded.model_max_length) == \
        (False, True, False, 128)
    assert BertTokenizer.from_pretrained(tmp_path / "saved", do_lower_case=True).do_lower_case is True


def test_loads_a_transformers_style_config(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "Hello"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    config = {"do_lower_case": False, "strip_accents": None, "model_max_length": 1000000000000000019884624838656,
              "unk_token": {"content": "[UNK]", "special": True}, "tokenizer_class": "BertTokenizer", "extra": 1}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = BertTokenizer.from_pretrained(tmp_path)
    assert tok.model_max_length is None and tok.do_lower_case is False
    assert tok.encode("Hello hello") == [2, 6, 5, 3]


def test_vocab_as_token_list_and_train():
    tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"])
    assert tok.tokenize("ab a abb b") == ["a", "##b", "a", "a", "##b", "##b", "[UNK]"]
    trained = BertTokenizer.train(["hello world", "hello there world"] * 3, 60, min_frequency=2)
    assert trained.encode("hello world") == [2, trained.vocab["hello"], trained.vocab["world"], 3]


# ---- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda t: t(["a"], padding="bogus"), ValueError, "padding"),
    (lambda t: t(["a"], truncation="only_first", max_length=8), ValueError, "truncation"),
    (lambda t: t.encode("a b c", max_length=1, truncation=True), ValueError, "max_length=1"),
    (lambda t: t.encode("a", "b", max_length=2, truncation=True), ValueError, "max_length=2"),
    (lambda t: t(["a", "a b c"]), ValueError, "padding=False"),
    (lambda t: t(["a"], padding="max_length"), ValueError, "max_length"),
    (lambda t: t(["a b c d"], padding="max_length", max_length=3), ValueError, "truncation"),
    (lambda t: t(["a", "b"], ["c"]), ValueError, "text_pair"),
    (lambda t: t.decode([101, 30522]), IndexError, "30522"),
    (lambda t: t.decode([-1]), IndexError, "-1"),
    (lambda t: t.encode(None), TypeError, "str"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(tokenizer("uncased"))


def test_padding_false_is_fine_for_equal_rows():
    batch = tokenizer("uncased")(["a b", "c d"], padding=False)
    assert batch["input_ids"].shape == (2, 4) and batch["attention_mask"].all()


def test_missing_vocab_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        BertTokenizer(tmp_path / "no-such-file.txt")


def test_vocab_must_hold_the_special_tokens():
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(ValueError, match="'a' more than once"):
        BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "a"])
