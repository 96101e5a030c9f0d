"""Atomic writes: a failed write leaves the old file whole and no temporary file behind."""

import gzip
import json
import os
import stat

import pytest

from tinymobilebert import atomic
from tinymobilebert.tokenizer.files import write_folder


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "f.txt"
    atomic.write_text_atomic(path, "old\n")

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.atomic_write(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_text_is_utf8_with_unix_line_ends_and_normal_permissions(tmp_path):
    path = tmp_path / "v.txt"
    atomic.write_text_atomic(path, "é\nß\n")
    assert path.read_bytes() == "é\nß\n".encode("utf-8")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~atomic._umask()


def test_tokenizer_files_go_through_it(tmp_path):
    write_folder(tmp_path, ["[PAD]", "[UNK]", "a"], {"do_lower_case": True})
    assert (tmp_path / "vocab.txt").read_text() == "[PAD]\n[UNK]\na\n"
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["do_lower_case"] is True
    assert sorted(os.listdir(tmp_path)) == ["tokenizer_config.json", "vocab.txt"]


def test_gzip_writer(tmp_path):
    path = tmp_path / "c.json.gz"

    def write(tmp):
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump({"k": 1}, f)

    atomic.atomic_write(path, write)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert json.load(f) == {"k": 1}
