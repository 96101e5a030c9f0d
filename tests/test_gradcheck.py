"""The gradient checker itself: it samples where the gradient is, and an absent gradient fails.

A checker that samples uniformly passes a backward pass that forgot a tensor whenever every
sampled entry happens to have a zero gradient (most of an embedding table). These tests feed it
deliberately wrong analytic gradients and require a failure.
"""

import numpy as np

from tinymobilebert import MobileBertForSequenceClassification
from tinymobilebert.config import tiny
from tinymobilebert.gradcheck import check_arrays, gradcheck, looked_up_rows, perturb_parameters


def table_problem(seed=0):
    """f = sum_t <R_t, W[ids_t]>: an embedding lookup; rows outside ``ids`` have no gradient."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((50, 4))
    ids = np.array([3, 7, 7, 41])
    R = rng.standard_normal((4, 4))
    grad = np.zeros_like(W)
    np.add.at(grad, ids, R)
    return {"W": W}, {"W": grad}, (lambda arrays: lambda: float(np.sum(R * arrays["W"][ids]))), ids


def test_samples_land_where_the_gradient_is():
    arrays, analytic, make_f, ids = table_problem()
    report = check_arrays(make_f(arrays), arrays, analytic, max_entries=4)
    assert report.ok() and report.checks[0].scale > 0  # a uniform draw of 4 in 200 would mostly see zeros


def test_a_forgotten_tensor_fails():
    arrays, analytic, make_f, _ = table_problem()
    forgot = {"W": np.zeros_like(analytic["W"])}
    report = check_arrays(make_f(arrays), arrays, forgot, max_entries=4)
    assert not report.ok() and report.checks[0].all_zero and "ALL-ZERO GRADIENT" in str(report)
    assert check_arrays(make_f(arrays), arrays, forgot, max_entries=4, allow_zero=("W",)).checks[0].all_zero is False


def test_a_forgotten_row_fails():
    arrays, analytic, make_f, ids = table_problem()
    partial = {"W": analytic["W"].copy()}
    partial["W"][41] = 0  # the backward pass lost one looked-up row
    report = check_arrays(make_f(arrays), arrays, partial, max_entries=2, rows={"W": ids})
    assert not report.ok() and report.checks[0].rows_without_gradient == (41,)
    report = check_arrays(make_f(arrays), arrays, analytic, max_entries=2, rows={"W": ids})
    assert report.ok() and report.checks[0].checked == 3 + 2  # one per looked-up row, then the budget


def test_zero_entries_are_sampled_too():
    """Where the analytic gradient is zero but the true one is not, the quarter of zero entries shows it."""
    rng = np.random.default_rng(1)
    arrays = {"x": rng.standard_normal(40)}
    R = rng.standard_normal(40)
    half = R.copy()
    half[::2] = 0  # a backward pass that drops every other entry
    report = check_arrays(lambda: float(R @ arrays["x"]), arrays, {"x": half}, max_entries=8)
    assert not report.ok()


def test_looked_up_rows_of_a_padded_batch():
    m = MobileBertForSequenceClassification(tiny(), seed=0, dtype=np.float64)
    ids = np.array([[2, 5, 9, 0], [2, 6, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    rows = looked_up_rows(m, {"input_ids": ids, "attention_mask": mask})
    assert list(rows["mobilebert.embeddings.word_embeddings.weight"]) == [2, 5, 6, 9]  # [PAD] = 0 left out
    assert list(rows["mobilebert.embeddings.position_embeddings.weight"]) == [0, 1, 2]
    assert list(rows["mobilebert.embeddings.token_type_embeddings.weight"]) == [0]


def test_model_check_covers_every_looked_up_row():
    m = MobileBertForSequenceClassification(tiny(pad_token_id=None), seed=0, dtype=np.float64).eval()
    perturb_parameters(m, np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, m.config.vocab_size, (2, 6))
    report = gradcheck(m, {"input_ids": ids, "labels": np.array([0, 1])}, max_entries=3)
    assert report.ok(), "\n" + str(report)
    by_name = {c.name: c for c in report.checks}
    assert by_name["mobilebert.embeddings.word_embeddings.weight"].checked >= len(np.unique(ids))
    assert by_name["mobilebert.embeddings.position_embeddings.weight"].checked >= 6
    assert all(c.scale > 0 for c in report.checks)  # no tensor passed on zeros alone
