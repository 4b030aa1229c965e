"""The sentence encoder on the real default model (all-MiniLM-L6-v2 from its PyPI package)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.models.encoder import Encoder, EncoderConfig
from engine.models.llm import ModelError, package_dir


@pytest.fixture(scope="module")
def encoder():
    try:
        package_dir("minilm-l6")
    except ModelError as exc:
        pytest.skip(str(exc))
    return Encoder(EncoderConfig(batch_size=2))


def test_unit_vectors_of_the_model_width(encoder):
    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
             "Heat (1995). Genres: Action, Crime, Thriller.", "x"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_similar_texts_are_closer(encoder):
    a, b, c = encoder.encode(["A cartoon about toys that come alive.",
                              "An animated film where toys are alive.",
                              "A bank robbery thriller in Los Angeles."])
    assert a @ b > a @ c + 0.2


def test_batching_by_length_keeps_the_order(encoder):
    texts = ["short", "a much longer sentence about a film with many words in it", "mid text"]
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(encoder.encode(texts), one_by_one, atol=1e-5)


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="batch_size"):
        EncoderConfig(batch_size=0)
