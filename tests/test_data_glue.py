"""The TSV/CSV loader: GLUE layouts, headers, explicit columns, label ids, clear errors."""

import pytest

from tinymobilebert.data.glue import load_glue, read_table
from tinymobilebert.data.tasks import Example


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_sst2_folder(tmp_path):
    _write(tmp_path / "SST-2" / "train.tsv", ["sentence\tlabel", "a fine film \t1", "dull\t0", "it's \"quoted\t1"])
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "great\t1"])
    task = load_glue(tmp_path / "SST-2")
    assert task.name == "SST-2" and task.labels == ["0", "1"] and task.num_labels == 2
    assert task.train == [Example("a fine film ", None, 1), Example("dull", None, 0), Example('it\'s "quoted', None, 1)]
    assert task.dev == [Example("great", None, 1)]


def test_pair_layouts_are_found_from_the_header(tmp_path):
    _write(tmp_path / "rte" / "train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA cat.\tAn animal.\tentailment",
                                            "1\tA cat.\tA dog.\tnot_entailment"])
    _write(tmp_path / "rte" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tX.\tY.\tnot_entailment"])
    task = load_glue(tmp_path / "rte")
    assert task.labels == ["entailment", "not_entailment"]
    assert task.train[0] == Example("A cat.", "An animal.", 0) and task.dev == [Example("X.", "Y.", 1)]
    _write(tmp_path / "qnli.tsv", ["index\tquestion\tsentence\tlabel", "0\tWhy?\tBecause.\tentailment"])
    assert read_table(tmp_path / "qnli.tsv") == [("Why?", "Because.", "entailment", 2)]
    _write(tmp_path / "mrpc.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t7\t8\tOne.\tUno."])
    assert read_table(tmp_path / "mrpc.tsv") == [("One.", "Uno.", "1", 2)]


def test_explicit_columns_csv_numeric_labels_and_dev_split(tmp_path):
    rows = ["premise,hypothesis,y,other"] + [f'"Premise {i}, with a comma",Hyp {i},{i % 3 * 5},z' for i in range(30)]
    path = _write(tmp_path / "mine.csv", rows)
    task = load_glue(path, text_a="premise", text_b="hypothesis", label="y", dev_fraction=0.2)
    assert task.labels == ["0", "5", "10"]  # numeric labels sort as numbers
    assert len(task.train) == 24 and len(task.dev) == 6
    assert {ex.text_a for ex in task.train}.isdisjoint(ex.text_a for ex in task.dev)
    assert task.train[0].text_a.startswith("Premise ") and ", with a comma" in task.train[0].text_a
    assert load_glue(path, text_a="premise", label="y").train[0].text_b is None  # text_a alone: single texts
    again = load_glue(path, text_a="premise", text_b="hypothesis", label="y", dev_fraction=0.2)
    assert again.train == task.train and again.dev == task.dev


def test_cola_without_header(tmp_path):
    _write(tmp_path / "CoLA" / "train.tsv", ["gj04\t1\t\tOur friends won't buy this.", "gj04\t0\t*\tThey drank."])
    _write(tmp_path / "CoLA" / "dev.tsv", ["gj04\t1\t\tGood one."])
    task = load_glue(tmp_path / "CoLA", task="CoLA")
    assert task.train[1] == Example("They drank.", None, 0) and task.dev == [Example("Good one.", None, 1)]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_glue(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no train.tsv"):
        load_glue(tmp_path / "empty_dir")
    path = _write(tmp_path / "a.tsv", ["sentence\tlabel", "fine\t1", "short row"])
    with pytest.raises(ValueError, match=r"row 3: 1 fields"):
        load_glue(path)
    path = _write(tmp_path / "b.tsv", ["sentence\tlabel", "fine\t1"])
    with pytest.raises(ValueError, match=r"column 'sentence2' \(text_b\) is not in the header"):
        load_glue(path, text_a="sentence", text_b="sentence2", label="label")
    path = _write(tmp_path / "c.tsv", ["words\tlabel", "fine\t1"])
    with pytest.raises(ValueError, match="cannot tell the text_a column"):
        load_glue(path)
    path = _write(tmp_path / "d.tsv", ["sentence\tlabel", "fine\t"])
    with pytest.raises(ValueError, match="row 2: the label is empty"):
        load_glue(path)
    _write(tmp_path / "e" / "train.tsv", ["sentence\tlabel", "fine\t1", "bad\t0"])
    _write(tmp_path / "e" / "dev.tsv", ["sentence\tlabel", "fine\t1", "odd\t7"])
    with pytest.raises(ValueError, match=r"dev.tsv, row 3: label '7' never occurs in training"):
        load_glue(tmp_path / "e")
    with pytest.raises(ValueError, match="regression"):
        load_glue(tmp_path / "e", task="STS-B")
    with pytest.raises(ValueError, match="no header"):
        load_glue(_write(tmp_path / "f.tsv", ["x\t1"]))


# ------------------------------------------------------------------------------ label spellings, classes
def test_spellings_of_one_number_are_one_class(tmp_path):
    path = _write(tmp_path / "t.tsv", ["sentence\tlabel", "a\t1", "b\t1.0", "c\t+1", "d\t0", "e\t0.0", "f\t01"])
    task = load_glue(path, dev_path=_write(tmp_path / "d.tsv", ["sentence\tlabel", "g\t1.00", "h\t-0"]))
    assert task.labels == ["0", "1"] and task.num_labels == 2
    assert [e.label for e in task.train] == [1, 1, 1, 0, 0, 1] and [e.label for e in task.dev] == [1, 0]


@pytest.mark.parametrize("labels, message", [
    (["1", "1", "1.0"], r"every training label is '1'; a classifier needs at least two classes"),
    (["0.5", "1", "2.75"], r"labels \['0.5', '2.75'\] are not whole numbers: these look like scores"),
    (["Positive", "positive", "negative"], r"labels \['Positive', 'positive'\] differ only in case"),
])
def test_labels_that_cannot_make_a_classifier_are_named(tmp_path, labels, message):
    path = _write(tmp_path / "t.tsv", ["sentence\tlabel"] + [f"text {i}\t{v}" for i, v in enumerate(labels * 4)])
    with pytest.raises(ValueError, match=message):
        load_glue(path)


def test_finetune_refuses_one_class_and_saves_label_names(tmp_path):
    import json

    from conftest import TINY_MODEL

    from tinymobilebert import BertTokenizer
    from tinymobilebert import workflows as wf
    from tinymobilebert.cli import main

    rows = [f"a {'fine' if i % 2 else 'dull'} film number {i}\t{'pos' if i % 2 else 'neg'}" for i in range(24)]
    _write(tmp_path / "glue" / "train.tsv", ["sentence\tlabel"] + rows[:16])
    _write(tmp_path / "glue" / "dev.tsv", ["sentence\tlabel"] + rows[16:])
    tok = BertTokenizer.train([r.split("\t")[0] for r in rows], vocab_size=60, min_frequency=1)
    tok.save_pretrained(tmp_path / "vocab")
    r = wf.finetune(tmp_path / "ft", load_glue(tmp_path / "glue"), tokenizer=tok, config=TINY_MODEL, steps=2, warmup=1,
                    batch_size=4, max_length=16, progress=False, baseline=False)
    config = json.loads((tmp_path / "ft" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert r["task"] == "glue"
    _write(tmp_path / "one" / "train.tsv", ["sentence\tlabel"] + [f"text {i}\t1" for i in range(8)])
    _write(tmp_path / "one" / "dev.tsv", ["sentence\tlabel", "x\t1"])
    status = main(["finetune", "--out", str(tmp_path / "ft1"), "--task", str(tmp_path / "one"), "--from-scratch",
                   str(tmp_path / "vocab" / "vocab.txt"), "--steps", "2", "--warmup", "1", "--batch-size", "4",
                   "--config", json.dumps(TINY_MODEL), "--max-length", "16", "--no-progress"])
    assert status == 1 and not (tmp_path / "ft1").exists()  # not a regression head reporting accuracy 1.000
