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


# ------------------------------------------------------------------------------ figures
def _plot_curves(path, tmp_path):
    from tinymobilebert.train.plot import plot_runs

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "log.jsonl").write_text("".join(json.dumps({"split": "train", "step": s, "loss": 3.0 - 0.1 * s}) + "\n"
                                           for s in range(1, 6)))
    return plot_runs([str(run)], str(path))


def _plot_head_importance(path, tmp_path):
    import numpy as np

    from tinymobilebert.dynabert.importance import plot_head_importance

    return plot_head_importance(np.random.default_rng(0).random((2, 3)), str(path))


def _plot_layer_view(path, tmp_path):
    import numpy as np

    from tinymobilebert.token_dropping.view import LayerView

    view = LayerView(["[CLS]", "a", "b", "[SEP]"], np.array([1e4, 0.5, 0.1, 1e4]), np.array([0, 1, 3]), [0, 1],
                     ["all", "kept"], np.array([[True] * 4, [True, True, False, True]]))
    return view.plot(str(path))


PLOTS = {"train.plot.plot_runs": _plot_curves, "dynabert.plot_head_importance": _plot_head_importance,
         "token_dropping.LayerView.plot": _plot_layer_view}


@pytest.mark.parametrize("plot", PLOTS.values(), ids=PLOTS.keys())
def test_every_figure_is_written_atomically(tmp_path, monkeypatch, plot):
    """A savefig that dies mid-write (half an image written) leaves the old PNG whole and no
    temporary file; the same call without the failure writes a PNG in its place."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    out = tmp_path / "figs"
    out.mkdir()
    path = out / "figure.png"
    path.write_bytes(b"the user's old figure")
    real_savefig = Figure.savefig

    def half_then_fail(fig, fname, **kw):
        real_savefig(fig, fname, **kw)
        with open(fname, "rb+") as f:
            f.truncate(os.path.getsize(fname) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plot(path, tmp_path)
    assert path.read_bytes() == b"the user's old figure"
    assert os.listdir(out) == ["figure.png"]
    monkeypatch.setattr(Figure, "savefig", real_savefig)
    assert plot(path, tmp_path) == str(path)
    assert path.read_bytes().startswith(b"\x89PNG") and os.listdir(out) == ["figure.png"]


def test_save_figure_takes_the_format_from_the_extension(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    assert atomic.save_figure(fig, tmp_path / "new" / "f.svg") == str(tmp_path / "new" / "f.svg")
    assert b"<svg" in (tmp_path / "new" / "f.svg").read_bytes()[:500]
    atomic.save_figure(fig, tmp_path / "f.out", format="png", dpi=50)
    assert (tmp_path / "f.out").read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(tmp_path)) == ["f.out", "new"]
