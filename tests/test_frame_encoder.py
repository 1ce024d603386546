"""The global frame branch: EfficientNet-Lite0 exported to ONNX and run by FrameEncoder.

Real photographs only (scikit-image). ImageNet-1k indices: 281-285 cats (tabby, tiger
cat, Persian, Siamese, Egyptian cat), 504 coffee mug, 967 espresso, 968 cup.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from conftest import RecordBundle

from ecmf_edge.errors import InputError
from ecmf_edge.vision.frame_encoder import FrameEncoder

pytest.importorskip("torch")

from ecmf_edge.build.efficientnet_lite import (
    CAT_CLASSES,
    CUP_CLASSES,
    build_efficientnet_lite0,
    export_frame_encoder,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("frame_encoder")
    return root, export_frame_encoder(root)


@pytest.fixture(scope="module")
def encoder(exported) -> FrameEncoder:
    root, record = exported
    return FrameEncoder.from_bundle(RecordBundle(root, record))


def _bgr(name: str) -> np.ndarray:
    return cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: _bgr(name) for name in ("chelsea", "coffee", "astronaut")}


def _top5(logits: np.ndarray) -> set[int]:
    return {int(i) for i in np.argsort(-logits)[:5]}


def test_record_describes_model(exported):
    root, record = exported
    assert (root / "frame_encoder.onnx").is_file()
    assert record.inputs == [{"name": "image", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]
    assert {o["name"]: o["shape"] for o in record.outputs} == {"features": ["batch", 1280], "logits": ["batch", 1000]}
    assert record.attributes["feature_dim"] == 1280
    assert record.parity["max_abs_diff"] < 1e-4
    assert abs(record.parity["stem_log_variance_ratio"]) < 0.7


def test_imagenet_classes_of_real_photos(encoder, photos):
    features, logits = encoder.predict([photos["chelsea"], photos["coffee"]])
    assert features.shape == (2, 1280) and logits.shape == (2, 1000)
    assert _top5(logits[0]) & set(CAT_CLASSES)
    assert _top5(logits[1]) & set(CUP_CLASSES)
    assert int(np.argmax(logits[0])) in CAT_CLASSES and int(np.argmax(logits[1])) in CUP_CLASSES


def test_shifted_scene_embeds_closer_than_other_scenes(encoder, photos):
    cat = photos["chelsea"]
    a, b = cat[:-6, :-6], cat[6:, 6:]  # the same scene, 6 px apart
    emb = encoder.encode([a, b, photos["coffee"], photos["astronaut"]])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    same = float(emb[0] @ emb[1])
    assert same > 0.9
    assert same > float(emb[0] @ emb[2]) + 0.2
    assert same > float(emb[0] @ emb[3]) + 0.2


def test_input_forms_agree(encoder, photos):
    frame = photos["coffee"]
    reference = encoder.encode(frame)
    assert reference.shape == (1, 1280)
    np.testing.assert_allclose(encoder.encode(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)), reference, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(frame[None]), reference, atol=1e-5)
    # float frames skip the uint8 rounding after resizing: nearly the same embedding
    as_float = encoder.encode(frame.astype(np.float32) / 255.0)
    cosine = float(as_float[0] @ reference[0] / np.linalg.norm(as_float) / np.linalg.norm(reference))
    assert cosine > 0.99, cosine
    grey = encoder.encode(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert grey.shape == (1, 1280) and np.all(np.isfinite(grey))


def test_parity_with_torch(encoder, photos):
    import torch

    frames = list(photos.values())
    batch = encoder.preprocess(frames)
    with torch.no_grad():
        features, logits = (t.numpy() for t in build_efficientnet_lite0()(torch.from_numpy(batch)))
    got_features, got_logits = encoder.predict(frames)
    np.testing.assert_allclose(got_features, features, atol=1e-4)
    np.testing.assert_allclose(got_logits, logits, atol=1e-4)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "empty"),
        (np.zeros((480, 0, 3), np.uint8), "empty"),
        (np.zeros((48, 64, 2), np.uint8), r"expected \(H, W\) grey"),
        (np.full((48, 64, 3), np.inf, np.float32), "NaN or infinite"),
        (np.full((48, 64, 3), 255.0, np.float64), r"outside \[0, 1\]"),
        (np.zeros((48, 64, 3), np.uint16), "dtype uint16"),
        (None, "numpy array"),
    ],
)
def test_bad_inputs(encoder, bad, match):
    with pytest.raises(InputError, match=match):
        encoder.encode(bad)
