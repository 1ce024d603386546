"""MTCNN face detector: export + parity, detection on real photographs, alignment, input checks."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
pytest.importorskip("torch")

from ecmf_edge.errors import InputError, ModelError  # noqa: E402
from ecmf_edge.runtime.sessions import SessionConfig, create_session  # noqa: E402
from ecmf_edge.vision.alignment import align_face, crop_box, face_template, similarity_transform  # noqa: E402
from ecmf_edge.vision.face_detector import Face, FaceDetector, nms  # noqa: E402

# Astronaut (skimage.data.astronaut, 512x512): face box and eye centres checked by eye on a 3x zoom.
ASTRONAUT_FACE = (180.0, 70.0, 270.0, 175.0)
ASTRONAUT_EYES = ((203.0, 101.0), (247.0, 103.0))


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


class _Bundle:
    """The two Bundle methods the detector uses."""

    def __init__(self, root, record, with_stage_files=True):
        self.root, self.record, self.opened = root, record, []
        self.attributes = dict(record.attributes)
        if not with_stage_files:
            self.attributes.pop("stage_files")

    def spec(self, key):
        assert key == "face_detector"
        return {"file": self.record.file, "extra_files": list(self.record.extra_files), "attributes": self.attributes}

    def session(self, relative):
        self.opened.append(relative)
        return create_session(self.root / relative, SessionConfig(intra_op_threads=1))


class _Counting:
    """Session wrapper that counts run() calls."""

    def __init__(self, session):
        self.session, self.calls = session, 0

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, *args, **kwargs):
        self.calls += 1
        return self.session.run(*args, **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ecmf_edge.build.mtcnn import export_face_detector

    out = tmp_path_factory.mktemp("face_detector")
    return out, export_face_detector(out)


@pytest.fixture(scope="module")
def detector(exported):
    return FaceDetector.from_bundle(_Bundle(*exported))


@pytest.fixture(scope="module")
def astronaut():
    return bgr(skdata.astronaut())


def test_export_record(exported):
    out, record = exported
    assert record.key == "face_detector"
    assert record.file == "face_pnet.onnx" and record.extra_files == ["face_rnet.onnx", "face_onet.onnx"]
    for name in [record.file, *record.extra_files]:
        assert (out / name).is_file()
    assert record.inputs[0]["shape"] == ["batch", 3, "height", "width"]
    io = record.attributes["stage_io"]
    assert io["rnet"]["inputs"][0]["shape"] == ["batch", 3, 24, 24]
    assert io["onet"]["inputs"][0]["shape"] == ["batch", 3, 48, 48]
    assert record.attributes["thresholds"] == [0.6, 0.7, 0.7]
    assert record.attributes["pyramid_factor"] == 0.709
    assert record.preprocessing["colour"] == "RGB" and record.preprocessing["layout"] == "NCHW"
    assert record.provenance["licence"] == "MIT"
    assert record.parity["max_abs_diff"] <= record.parity["tolerance"] <= 1e-4
    json.dumps(dataclasses.asdict(record))  # goes into manifest.json


def test_onnx_matches_torch_on_real_crops(exported, astronaut):
    import onnxruntime as ort
    import torch

    from ecmf_edge.build.mtcnn import load_mtcnn

    out, _ = exported
    modules = dict(zip(("pnet", "rnet", "onet"), load_mtcnn()))
    rgb = skdata.astronaut()
    whole = cv2.resize(rgb, (157, 131), interpolation=cv2.INTER_AREA)[None]  # another size than the exporter's
    corners = [(170, 60), (190, 90), (40, 300), (300, 40), (0, 0)]
    inputs = {
        "pnet": whole,
        "rnet": np.stack([cv2.resize(rgb[y:y + 100, x:x + 100], (24, 24), interpolation=cv2.INTER_AREA) for x, y in corners]),
        "onet": np.stack([cv2.resize(rgb[y:y + 100, x:x + 100], (48, 48), interpolation=cv2.INTER_AREA) for x, y in corners]),
    }
    for stage, batch in inputs.items():
        x = ((batch.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy()
        with torch.no_grad():
            reference = [t.numpy() for t in modules[stage](torch.from_numpy(x))]
        got = ort.InferenceSession(str(out / f"face_{stage}.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})
        for ref, cand in zip(reference, got):
            assert ref.shape == cand.shape
            assert np.max(np.abs(ref - cand)) < 1e-4
    # The flatten order of R-/O-Net is right: the face crop scores as a face, the others do not.
    with torch.no_grad():
        prob = modules["onet"](torch.from_numpy(((inputs["onet"].astype(np.float32) - 127.5) / 128).transpose(0, 3, 1, 2).copy()))[2]
    assert prob[0, 1] > 0.9 and bool((prob[2:, 1] < 0.5).all())


@pytest.mark.parametrize("max_side", [None, 480, 320])
def test_astronaut_has_one_face(detector, astronaut, max_side):
    det = FaceDetector(detector._sessions, {"attributes": {}}, max_side=max_side)
    faces = det.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.95
    assert iou(face.box, ASTRONAUT_FACE) > 0.6
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    assert np.linalg.norm(lm[0] - ASTRONAUT_EYES[0]) < 6 and np.linalg.norm(lm[1] - ASTRONAUT_EYES[1]) < 6
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left of right, as seen in the image
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes above nose above mouth


def test_box_follows_shift_scale_and_mirror(detector, astronaut):
    scale, (ox, oy) = 0.6, (330, 150)
    frame = np.full((480, 640, 3), 90, np.uint8)
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small[: 480 - oy, : 640 - ox]
    expected = (ASTRONAUT_FACE[0] * scale + ox, ASTRONAUT_FACE[1] * scale + oy,
                ASTRONAUT_FACE[2] * scale + ox, ASTRONAUT_FACE[3] * scale + oy)
    faces = detector.detect(frame)
    assert len(faces) == 1 and iou(faces[0].box, expected) > 0.6

    mirrored = detector.detect(frame[:, ::-1])
    assert len(mirrored) == 1
    mirror_expected = (640 - expected[2], expected[1], 640 - expected[0], expected[3])
    assert iou(mirrored[0].box, mirror_expected) > 0.6
    assert mirrored[0].landmarks[0, 0] < mirrored[0].landmarks[1, 0]


def test_grey_and_bgra_inputs(detector, astronaut):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    for image in (grey, grey[:, :, None], cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)):
        faces = detector.detect(image)
        assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) > 0.6


def test_largest_first_and_max_faces(detector, astronaut):
    frame = np.full((512, 850, 3), 200, np.uint8)
    frame[:, :512] = astronaut
    frame[100:100 + 307, 530:530 + 307] = cv2.resize(astronaut, (307, 307), interpolation=cv2.INTER_AREA)
    det = FaceDetector(detector._sessions, {"attributes": {}}, max_side=None)
    faces = det.detect(frame)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.6 and faces[1].center[0] > 512
    assert det.detect(frame, max_faces=1)[0].box == faces[0].box


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_no_face_in_cat_or_coffee(detector, name):
    image = bgr(getattr(skdata, name)())
    assert detector.detect(image) == []
    assert FaceDetector(detector._sessions, {"attributes": {}}, max_side=None).detect(image) == []


def test_black_frame_returns_without_running_models(detector):
    counting = {k: _Counting(s) for k, s in detector._sessions.items()}
    det = FaceDetector(counting, {"attributes": {}})
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert det.detect(np.full((480, 640), 128, np.uint8)) == []
    assert det.detect(np.zeros((8, 8, 3), np.uint8)) == []
    assert sum(c.calls for c in counting.values()) == 0


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((48, 64, 3), np.float32), "dtype float32"),
        (np.zeros((48, 64, 2), np.uint8), r"shape \(48, 64, 2\)"),
        (np.zeros((2, 48, 64, 3), np.uint8), "shape"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_bad_images_raise(detector, image, match):
    with pytest.raises(InputError, match=match) as info:
        detector.detect(image)
    assert "(H, W, 3) BGR" in str(info.value)


def test_bad_options_raise(detector, exported):
    with pytest.raises(InputError, match="max_faces"):
        detector.detect(np.zeros((32, 32, 3), np.uint8), max_faces=0)
    with pytest.raises(InputError, match="max_side"):
        FaceDetector(detector._sessions, {}, max_side=10)
    with pytest.raises(InputError, match="min_face_size"):
        FaceDetector(detector._sessions, {}, min_face_size=5)
    with pytest.raises(ModelError, match="onet"):
        FaceDetector({k: v for k, v in detector._sessions.items() if k != "onet"}, {})


def test_from_bundle_without_stage_files(exported, astronaut):
    bundle = _Bundle(*exported, with_stage_files=False)
    det = FaceDetector.from_bundle(bundle, max_side=480, min_face_size=40)
    assert sorted(bundle.opened) == ["face_onet.onnx", "face_pnet.onnx", "face_rnet.onnx"]
    assert len(det.detect(astronaut)) == 1


def test_nms_keeps_best_of_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0


def test_align_face_maps_landmarks_onto_template(detector, astronaut):
    face = detector.detect(astronaut)[0]
    crop = align_face(astronaut, face, size=64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    matrix = similarity_transform(face.landmarks, face_template(64))
    mapped = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    error = np.linalg.norm(mapped - face_template(64), axis=1)
    assert error[:2].max() < 2.5 and error.max() < 5.0  # a smile widens the mouth: the fit is not exact
    # The aligned crop is the face: bright skin at the template's nose, not background.
    nose = face_template(64)[2].round().astype(int)
    assert crop[nose[1], nose[0]].mean() > 100


def test_align_face_levels_a_rotated_face(detector, astronaut):
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), 25, 1.0), (512, 512))
    faces = detector.detect(rotated)
    assert len(faces) == 1
    lm = faces[0].landmarks
    assert abs(lm[1, 1] - lm[0, 1]) > 10  # eyes are tilted in the frame
    matrix = similarity_transform(lm, face_template(64))
    eyes = lm[:2] @ matrix[:, :2].T + matrix[:, 2]
    assert abs(eyes[1, 1] - eyes[0, 1]) < 2.0
    assert align_face(rotated, faces[0], size=48).shape == (48, 48, 3)


def test_unusable_landmarks_fall_back_to_box_crop(detector, astronaut):
    face = detector.detect(astronaut)[0]
    broken = Face(face.box, face.score, np.full((5, 2), np.nan, np.float32))
    assert np.array_equal(align_face(astronaut, broken, size=64), crop_box(astronaut, face.box, 64, margin=0.2))


def test_crop_box_pads_outside_and_checks_arguments(astronaut):
    crop = crop_box(astronaut, (-100, -100, 50, 50), size=32, margin=0.0)
    assert crop.shape == (32, 32, 3)
    assert crop[:10, :10].max() == 0 and crop[-5:, -5:].max() > 0
    with pytest.raises(InputError, match="box"):
        crop_box(astronaut, (10, 10, 5, 20), size=32)
    with pytest.raises(InputError, match="size"):
        crop_box(astronaut, ASTRONAUT_FACE, size=2)


def test_runtime_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ecmf_edge.vision.face_detector, ecmf_edge.vision.alignment; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
