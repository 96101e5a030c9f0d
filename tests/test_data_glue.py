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
