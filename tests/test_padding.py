"""How padding affects outputs at real positions.

Facts pinned down here:
1. With the trigram window off, outputs at real positions do not depend on how much padding
   follows (masked keys get exactly zero attention weight).
2. With transformers' trigram window (the default), they do: the last real token's "next"
   slot reads the [PAD] embedding, so its output, and through attention every output, changes
   between an unpadded and a padded batch (as users of transformers' MobileBERT report).
3. With ``trigram_padding_aware=True`` neighbours that are padding count as zeros, and outputs at
   real positions become padding-invariant.
"""

import numpy as np
import pytest

from tinymobilebert import MobileBertModel
from tinymobilebert.config import tiny
from tinymobilebert.gradcheck import perturb_parameters


def real_outputs(cfg, ids, pad, dtype=np.float64):
    """Hidden states at the real positions of ``ids`` followed by ``pad`` padding tokens."""
    m = MobileBertModel(cfg, seed=0, dtype=dtype).eval()
    perturb_parameters(m, np.random.default_rng(1))
    T = ids.shape[1]
    full = np.concatenate([ids, np.full((ids.shape[0], pad), cfg.pad_token_id)], axis=1)
    mask = np.concatenate([np.ones_like(ids), np.zeros((ids.shape[0], pad), np.int64)], axis=1)
    out = m.forward(full, attention_mask=mask, output_hidden_states=True)
    return [h[:, :T] for h in out.hidden_states], out.pooler_output


IDS = np.array([[5, 17, 23, 42, 8, 9]])


@pytest.mark.parametrize("pad", [1, 4, 9])
def test_without_trigram_padding_does_not_matter(pad):
    cfg = tiny(trigram_input=False, classifier_activation=True)
    ref, ref_pool = real_outputs(cfg, IDS, 0)
    got, got_pool = real_outputs(cfg, IDS, pad)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_pool, ref_pool, rtol=1e-12, atol=1e-12)


def test_transformers_trigram_reads_the_pad_embedding():
    cfg = tiny()  # trigram_padding_aware=False: transformers' behaviour
    ref, _ = real_outputs(cfg, IDS, 0)
    got, _ = real_outputs(cfg, IDS, 3)
    emb_diff = np.abs(got[0] - ref[0]).max(axis=-1)[0]  # per position, embedding output
    assert emb_diff[-1] > 1e-3  # the last real token saw [PAD] as its next neighbour
    assert np.all(emb_diff[:-1] < 1e-12)  # the others' windows are unchanged
    assert np.abs(got[-1] - ref[-1]).max(axis=-1)[0].min() > 1e-6  # spread to every position by attention
    # and how much padding follows beyond the first [PAD] no longer matters
    more, _ = real_outputs(cfg, IDS, 7)
    for a, b in zip(more, got):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pad", [1, 4, 9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_padding_aware_trigram_is_padding_invariant(pad, dtype):
    cfg = tiny(trigram_padding_aware=True, classifier_activation=True)
    ref, ref_pool = real_outputs(cfg, IDS, 0, dtype)
    got, got_pool = real_outputs(cfg, IDS, pad, dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_pool, ref_pool, rtol=tol, atol=tol)


def test_padding_aware_equals_default_without_padding():
    ids = IDS
    a, _ = real_outputs(tiny(), ids, 0)
    b, _ = real_outputs(tiny(trigram_padding_aware=True), ids, 0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
