"""all-MiniLM-L6-v2 on ONNX Runtime: real sentence similarity and input checks."""
from __future__ import annotations

import numpy as np
import pytest

from ecmf_edge.errors import InputError
from ecmf_edge.text.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def encoder(bundle):
    return TextEncoder.from_bundle(bundle)


def test_paraphrases_embed_closer_than_unrelated_sentences(encoder):
    a, b, c, d = encoder.encode([
        "I am really angry about what you did.",
        "What you did makes me furious.",
        "The train to Berlin leaves at nine.",
        "Photosynthesis converts light into chemical energy.",
    ])
    assert float(a @ b) > float(a @ c) + 0.2
    assert float(a @ b) > float(a @ d) + 0.2
    assert float(a @ b) > 0.5


def test_embeddings_are_unit_length_and_batch_consistent(encoder):
    one = encoder.encode("Thank you, that means a lot to me.")
    many = encoder.encode(["Short.", "Thank you, that means a lot to me."])
    assert one.shape == (384,) and many.shape == (2, 384)
    assert np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-4)
    assert np.allclose(one, many[1], atol=1e-4), "padding changed the embedding"


def test_parity_with_transformers_recorded(bundle):
    parity = bundle.spec("text_encoder")["parity"]
    assert parity["max_abs_diff"] <= parity["tolerance"]


def test_long_text_is_truncated_not_rejected(encoder):
    text = "I feel great today. " * 2000
    assert encoder.encode(text).shape == (384,)


@pytest.mark.parametrize("bad, message", [("", "text is empty"), ("   \n", "text is empty"), (b"bytes", "text must be str"), ([], "no text given")])
def test_bad_text(encoder, bad, message):
    with pytest.raises(InputError, match=message):
        encoder.encode(bad)
