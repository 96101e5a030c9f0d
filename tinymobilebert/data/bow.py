"""A bag-of-words baseline: logistic regression on word-piece features, in NumPy.

Shapes: N examples, V vocabulary, D features, C classes, K stored (non-zero) feature values.

Features, binary over the tokenizer's vocabulary (special tokens left out):

- one text: which pieces occur in it (V features);
- a pair: the pieces of A, the pieces of B, the pieces they share (A and B) (3V features), plus
  six statistics of overlap (the share of B's distinct pieces found in A and of A's in B, the
  Jaccard index, log counts of shared, A's and B's pieces), unpenalised, so that "B repeats A's
  words" is as easy for it to learn as possible: a *strong* baseline.

Multinomial logistic regression with an L2 penalty (not on the bias), fitted full batch
by Nesterov's accelerated gradient with step 1/L, L a bound on the loss's curvature (1/4 for a
sigmoid, 1/2 for a softmax, times the largest squared singular value of X over N, plus the
penalty). The penalty is chosen from a grid on a fifth of the training set held out; the model
fitted on all of it with that penalty is scored on dev. The best dev score over the grid is
reported too, as a ceiling. X is sparse, K stored values, kept as (row, column, value) triplets.
"""

import numpy as np

from .batching import TASK, derived_rng

L2_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4)
_PAIR_EXTRAS = 6  # shares of B in A and of A in B, Jaccard, log counts of shared, A's and B's pieces


class SparseRows:
    """An (N, D) matrix as K triplets: ``value`` at (``row``, ``col``), every row non-empty.

    Kept twice, sorted by row and by column, so both products are one gather of K rows and one
    ``np.add.reduceat`` over their contiguous runs.
    """

    def __init__(self, row, col, value, shape):
        self.row, self.col, self.value, self.shape = row, col, value, shape
        by_row = np.lexsort((col, row))
        self._r_col, self._r_value = col[by_row], value[by_row]
        self._r_starts = np.flatnonzero(np.diff(row[by_row], prepend=-1))
        if len(self._r_starts) != shape[0]:
            raise ValueError("every row needs a stored value (the bias column gives one)")
        by_col = np.lexsort((row, col))
        self._c_row, self._c_value = row[by_col], value[by_col]
        self._c_starts = np.flatnonzero(np.diff(col[by_col], prepend=-1))
        self._c_cols = col[by_col][self._c_starts]  # the non-empty columns

    def dot(self, w):
        """X @ w for w of shape (D, C) -> (N, C)."""
        return np.add.reduceat(self._r_value[:, None] * w[self._r_col], self._r_starts, axis=0)

    def tdot(self, g):
        """X.T @ g for g of shape (N, C) -> (D, C)."""
        out = np.zeros((self.shape[1], g.shape[1]))
        out[self._c_cols] = np.add.reduceat(self._c_value[:, None] * g[self._c_row], self._c_starts, axis=0)
        return out

    def take(self, rows):
        """The sub-matrix of the given rows (in that order)."""
        new_index = np.full(self.shape[0], -1)
        new_index[rows] = np.arange(len(rows))
        keep = new_index[self.row] >= 0
        return SparseRows(new_index[self.row[keep]], self.col[keep], self.value[keep], (len(rows), self.shape[1]))


def _piece_ids(text, tokenizer, special):
    ids = set(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))
    return sorted(ids - special)


def bow_features(examples, tokenizer):
    """Binary bag-of-words features (see the module docstring) -> SparseRows (N, D).

    The last column is the bias (always 1).
    """
    V = tokenizer.vocab_size
    special = set(tokenizer.all_special_ids)
    pair = any(ex.text_b is not None for ex in examples)
    D = (3 * V + _PAIR_EXTRAS if pair else V) + 1
    rows, cols, values = [], [], []
    for n, ex in enumerate(examples):
        a = _piece_ids(ex.text_a, tokenizer, special)
        entries = [(i, 1.0) for i in a]
        if pair:
            b = _piece_ids(ex.text_b or "", tokenizer, special)
            shared = sorted(set(a) & set(b))
            union = len(set(a) | set(b))
            entries += [(V + i, 1.0) for i in b] + [(2 * V + i, 1.0) for i in shared]
            extras = (len(shared) / max(len(b), 1), len(shared) / max(len(a), 1), len(shared) / max(union, 1),
                      np.log1p(len(shared)), np.log1p(len(a)), np.log1p(len(b)))
            entries += [(3 * V + k, float(x)) for k, x in enumerate(extras)]
        entries.append((D - 1, 1.0))
        rows += [n] * len(entries)
        cols += [c for c, _ in entries]
        values += [v for _, v in entries]
    return SparseRows(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                      np.array(values, dtype=np.float64), (len(examples), D))


def _probabilities(z):
    """Class probabilities from scores: a sigmoid for one column (two classes), else a softmax."""
    if z.shape[1] == 1:
        return 0.5 * (1 + np.tanh(0.5 * z))  # the sigmoid, without overflow
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(X, w):
    """Predicted class ids (N,) from features X (N, D) and weights w (D, 1) or (D, C)."""
    scores = X.dot(w)
    return (scores[:, 0] > 0).astype(np.int64) if w.shape[1] == 1 else scores.argmax(axis=1)


def _largest_singular_value_squared(X, rng, steps=30):
    v = rng.standard_normal((X.shape[1], 1))
    for _ in range(steps):  # power iteration on X.T X
        v = X.tdot(X.dot(v))
        norm = np.linalg.norm(v)
        if norm == 0:
            return 0.0
        v /= norm
    return float(np.linalg.norm(X.dot(v)) ** 2)


def fit_logistic(X, y, num_classes, l2, *, iterations=400, w0=None, rng=None, num_free=0):
    """Multinomial logistic regression by accelerated full-batch gradient descent.

    Parameters
    ----------
    X : SparseRows, shape (N, D)
        Features, the last column the (unpenalised) bias.
    y : np.ndarray of int, shape (N,)
    num_classes : int
        C.
    l2 : float
        The penalty ``l2 / 2 * ||W||^2`` added to the mean cross-entropy.
    iterations : int
    w0 : np.ndarray, shape (D, C), optional
        A starting point (e.g. the solution for a nearby ``l2``).
    num_free : int
        How many columns before the bias go unpenalised too (a few dense statistics, which a
        penalty sized for thousands of sparse indicators would silence).

    Returns
    -------
    np.ndarray, shape (D, 1) for two classes, else (D, C)
    """
    N, D = X.shape
    # Two classes need one score (a sigmoid), whose curvature is at most 1/4; a softmax's, 1/2.
    Y = y[:, None].astype(np.float64) if num_classes == 2 else np.eye(num_classes)[y]  # (N, 1) or (N, C)
    curvature = 0.25 if num_classes == 2 else 0.5
    penalty = np.full((D, 1), l2)
    penalty[X.shape[1] - 1 - num_free:] = 0.0  # the bias and the pair statistics go free
    L = curvature * _largest_singular_value_squared(X, rng or np.random.default_rng(0)) / N + l2
    w = np.zeros((D, Y.shape[1])) if w0 is None else w0.copy()
    previous, t = w.copy(), 1.0
    for _ in range(iterations):
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        look = w + (t - 1) / t_next * (w - previous)  # Nesterov's look-ahead point
        grad = X.tdot(_probabilities(X.dot(look)) - Y) / N + penalty * look  # (D, C)
        previous, w, t = w, look - grad / L, t_next
    return w


def accuracy(X, y, w):
    return float(np.mean(predict(X, w) == y)) if len(y) else float("nan")


def bow_baseline(task, tokenizer, *, l2_grid=L2_GRID, iterations=300, seed=0):
    """Fit the bag-of-words baseline on ``task.train`` and score it on ``task.dev``.

    Parameters
    ----------
    task : Task
    tokenizer : BertTokenizer
        Its vocabulary is the feature space.
    l2_grid : sequence of float
        Penalties tried, largest first, each fit warm-starting the next.
    iterations : int
        Gradient steps per fit.
    seed : int
        Picks the held-out fifth of the training set.

    Returns
    -------
    dict
        ``dev_accuracy`` and ``train_accuracy`` at the penalty ``l2`` that scores best on the
        held-out fifth; ``best_dev_accuracy``, the best dev accuracy over the whole grid (a
        ceiling, chosen by looking at dev: quote it when arguing a task is hard for a bag of
        words); ``majority_accuracy``, dev accuracy of the most frequent training label.
    """
    if not task.train or not task.dev:
        raise ValueError(f"task {task.name!r} needs train and dev examples, has {len(task.train)} and {len(task.dev)}")
    X = bow_features(task.train + task.dev, tokenizer)
    n_train = len(task.train)
    X_train, X_dev = X.take(np.arange(n_train)), X.take(np.arange(n_train, X.shape[0]))
    y_train = np.array([ex.label for ex in task.train], dtype=np.int64)
    y_dev = np.array([ex.label for ex in task.dev], dtype=np.int64)
    num_free = _PAIR_EXTRAS if X.shape[1] != tokenizer.vocab_size + 1 else 0
    rng = derived_rng(TASK, seed, 10)
    order = rng.permutation(n_train)
    held, fit = order[: n_train // 5], order[n_train // 5:]
    X_fit, X_held = X_train.take(fit), X_train.take(held)
    results, w_fit, w_all = [], None, None
    for l2 in sorted(l2_grid, reverse=True):
        fit_args = {"iterations": iterations, "rng": rng, "num_free": num_free}
        w_fit = fit_logistic(X_fit, y_train[fit], task.num_labels, l2, w0=w_fit, **fit_args)
        w_all = fit_logistic(X_train, y_train, task.num_labels, l2, w0=w_all, **fit_args)
        results.append({"l2": l2, "held_out": accuracy(X_held, y_train[held], w_fit),
                        "train_accuracy": accuracy(X_train, y_train, w_all),
                        "dev_accuracy": accuracy(X_dev, y_dev, w_all)})
    chosen = max(results, key=lambda r: (r["held_out"], r["l2"]))  # ties: the stronger penalty
    return {"train_accuracy": chosen["train_accuracy"], "dev_accuracy": chosen["dev_accuracy"], "l2": chosen["l2"],
            "best_dev_accuracy": max(r["dev_accuracy"] for r in results), "majority_accuracy": task.majority_accuracy()}
