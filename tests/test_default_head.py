"""The shipped fusion head inside the exported bundle, on real inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ecmf_edge.features import FeatureExtractor
from ecmf_edge.modalities import RAW_TOKEN_DIMS
from ecmf_edge.runtime.fusion_head import FusionHead


@pytest.fixture(scope="module")
def head(bundle):
    return FusionHead.from_bundle(bundle)


@pytest.fixture(scope="module")
def extractor(bundle):
    return FeatureExtractor(bundle)


def test_manifest_describes_the_trained_head(bundle):
    spec = bundle.spec("fusion_head")
    assert spec["attributes"]["labels"] == bundle.labels
    assert spec["attributes"]["dims"] == bundle.token_dims() == {
        **RAW_TOKEN_DIMS, "audio": bundle.spec("speech_head")["attributes"]["embedding_dim"],
        "text": bundle.spec("text_branch")["attributes"]["embedding_dim"]}
    assert bundle.encoder_dims() == RAW_TOKEN_DIMS  # the sizes training uses before a bundle exists
    assert spec["parity"]["bundle_copy_max_abs_diff"] <= 1e-4
    record = json.loads(bundle.path("fusion_head.json").read_text())
    assert record["data"]["fer2013"]["train"] > 20000 and record["data"]["ravdess"]["train"] > 500
    assert record["metrics"]["family:face"]["weighted_f1"] > 0.5


def test_smiling_face_is_happy_with_weights_on_the_visual_tokens(head, extractor, astronaut_bgr):
    visual = extractor.from_frames([astronaut_bgr])
    result = head.predict({"frame": visual.frame, "face": visual.face})
    assert result.label == "happy" and result.confidence > 0.6
    assert set(result.modality_weights) == {"frame", "face"}
    assert sum(result.modality_weights.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("text, label", [
    ("I am so happy you came to visit me today!", "happy"),
    ("How dare you! Get out of my house!", "angry"),
    ("I'm terrified, what if something happens to her?", "worried"),
])
def test_clear_sentences(head, extractor, text, label):
    result = head.predict({"text": extractor.from_text(text).text})
    assert result.label == label, (text, result.probabilities)


def test_all_four_tokens_are_used(head, extractor, astronaut_bgr, speech_wav):
    visual = extractor.from_frames([astronaut_bgr])
    audio = extractor.from_audio_file(speech_wav)
    text = extractor.from_text("I am so happy that you came to visit me today.")
    from ecmf_edge.audio.speech_branch import SpeechBranch

    token = SpeechBranch.from_bundle(extractor.bundle)(audio.token("audio"))[0]  # what the live loop feeds
    result = head.predict({"frame": visual.frame, "face": visual.face, "audio": token, "text": text.text})
    assert set(result.modality_weights) == {"frame", "face", "audio", "text"}
    assert all(w > 0 for w in result.modality_weights.values())
    assert np.isclose(result.probabilities.sum(), 1.0, atol=1e-5)
