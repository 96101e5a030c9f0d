"""BERT masking: 15% chosen, 80/10/10, never special tokens or padding, at least one per row."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinymobilebert.data.masking import IGNORE_INDEX, mask_tokens

V, MASK, SPECIAL = 500, 4, (0, 1, 2, 3, 4)  # ids 0-4 special, [MASK] = 4


def _batch(rng, B, T):
    lengths = rng.integers(3, T + 1, size=B)
    ids = rng.integers(len(SPECIAL), V, size=(B, T))
    special = np.arange(T) >= lengths[:, None]  # padding
    ids[special] = 0
    ids[:, 0] = 2  # [CLS]
    ids[np.arange(B), lengths - 1] = 3  # [SEP]
    special[:, 0] = True
    special[np.arange(B), lengths - 1] = True
    return ids, special


def test_statistics_on_a_large_batch():
    rng = np.random.default_rng(0)
    ids, special = _batch(rng, 2000, 64)
    masked, labels = mask_tokens(ids, special, np.random.default_rng(1), vocab_size=V, mask_token_id=MASK,
                                 never_ids=SPECIAL)
    chosen = labels != IGNORE_INDEX
    n = (~special).sum(1)
    assert abs(chosen.sum() / n.sum() - 0.15) < 0.005
    assert np.array_equal(chosen.sum(1), np.maximum(1, np.rint(0.15 * n)))  # BERT's count per row, exactly
    to_mask = masked[chosen] == MASK
    unchanged = masked[chosen] == ids[chosen]
    replaced = ~to_mask & ~unchanged
    assert abs(to_mask.mean() - 0.8) < 0.01
    assert abs(replaced.mean() - 0.1) < 0.01
    assert abs(unchanged.mean() - 0.1) < 0.011  # a random draw may hit the original id (1 in ~500)
    assert not np.isin(masked[chosen][replaced], SPECIAL).any()
    # the random ids cover the non-special vocabulary
    assert len(np.unique(masked[chosen][replaced])) > 0.8 * (V - len(SPECIAL))  # ~2 draws per id


@given(st.integers(1, 8), st.integers(1, 20), st.integers(0, 2**16), st.floats(0.01, 1.0))
def test_invariants(B, T, seed, prob):
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIAL), V, size=(B, T))
    special = rng.random((B, T)) < 0.4
    masked, labels = mask_tokens(ids, special, np.random.default_rng(seed), vocab_size=V, mask_token_id=MASK,
                                 mask_prob=prob, never_ids=SPECIAL)
    chosen = labels != IGNORE_INDEX
    assert masked.dtype == labels.dtype == np.int64 and masked.shape == labels.shape == (B, T)
    assert not (chosen & special).any()  # never special or padding
    assert np.array_equal(masked[~chosen], ids[~chosen])  # only chosen positions change
    assert np.array_equal(labels[chosen], ids[chosen])  # labels hold the originals
    has_text = (~special).any(1)
    assert np.array_equal(chosen.any(1), has_text)  # at least one wherever possible
    again = mask_tokens(ids, special, np.random.default_rng(seed), vocab_size=V, mask_token_id=MASK,
                        mask_prob=prob, never_ids=SPECIAL)
    assert np.array_equal(again[0], masked) and np.array_equal(again[1], labels)


def test_errors():
    ids = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="both be"):
        mask_tokens(ids, np.zeros((2, 4), bool), np.random.default_rng(0), vocab_size=V, mask_token_id=MASK)
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(ids, np.zeros((2, 3), bool), np.random.default_rng(0), vocab_size=V, mask_token_id=MASK,
                    mask_prob=0)
    with pytest.raises(ValueError, match="no token id is left"):
        mask_tokens(ids, np.zeros((2, 3), bool), np.random.default_rng(0), vocab_size=3, mask_token_id=2,
                    never_ids=(0, 1))
