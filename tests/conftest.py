"""Shared fixtures: the exported bundle (built once per run) and small real inputs.

Real inputs only: speech is synthesised with espeak-ng, faces and scenes are the
photographs scikit-image ships, and videos are assembled from those frames.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from ecmf_edge.audio.io import load_audio


@pytest.fixture(autouse=True)
def events_follow_the_schema(monkeypatch):
    """Every EmotionEvent a test makes (streams, predict, label, hand-made ones) must serialise to JSON that the
    shipped schema (ecmf_edge/assets/event.schema.json) accepts: checked when the test ends."""
    import jsonschema

    from ecmf_edge.events import EmotionEvent, event_schema

    made: list = []
    original = EmotionEvent.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if len(made) < 5000:
            made.append(self)

    monkeypatch.setattr(EmotionEvent, "__init__", recording_init)
    yield
    monkeypatch.setattr(EmotionEvent, "__init__", original)
    validator = jsonschema.Draft202012Validator(event_schema())
    for event in made:
        errors = sorted(validator.iter_errors(event.to_dict()), key=str)
        assert not errors, f"event {event.index} of stream {event.stream!r} breaks the event schema: {errors[0].message} " \
                           f"at {list(errors[0].absolute_path)}"


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory) -> Path:
    """The default bundle, exported once per test run (or reused from $ECMF_EDGE_TEST_BUNDLE)."""
    from ecmf_edge.build.bundle import export_bundle

    reuse = os.environ.get("ECMF_EDGE_TEST_BUNDLE")
    target = Path(reuse) if reuse else tmp_path_factory.mktemp("engines") / "default" / "onnxruntime-fp32"
    return export_bundle(target, progress=False)


@pytest.fixture(scope="session")
def bundle(bundle_root):
    from ecmf_edge.runtime.bundle import load_bundle

    return load_bundle(bundle_root)


def espeak(text: str, path: Path, voice: str = "en-us", speed: int = 150, rate: int = 16000) -> Path:
    """Synthesise speech with espeak-ng into a mono WAV at ``rate``."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True)
    x = load_audio(raw, sample_rate=rate)
    write_wav(path, x, rate)
    raw.unlink()
    return path


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    """Write float mono audio as 16-bit PCM WAV."""
    pcm = np.clip(np.asarray(x, dtype=np.float64) * 32767.0, -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_wav(media_dir) -> Path:
    """About 3 s of English speech at 16 kHz."""
    return espeak("I am so happy that you came to visit me today.", media_dir / "speech.wav")


@pytest.fixture(scope="session")
def padded_speech(media_dir, speech_wav) -> tuple[np.ndarray, float, float]:
    """1.5 s silence + speech + 1.5 s silence; returns (pcm, speech start s, speech end s)."""
    x = load_audio(speech_wav)
    voiced = np.flatnonzero(np.abs(x) > 0.01)
    x = x[voiced[0]: voiced[-1] + 1]
    pad = np.zeros(24000, dtype=np.float32)
    return np.concatenate([pad, x, pad]), 1.5, 1.5 + x.size / 16000


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def coffee_bgr() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)


def make_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write BGR frames as an MJPG AVI (readable by every OpenCV build)."""
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def face_video(media_dir, astronaut_bgr) -> Path:
    """2 s at 10 fps: the astronaut photograph panning slowly inside a 640x480 frame."""
    frames = []
    for i in range(20):
        canvas = np.full((480, 640, 3), 90, dtype=np.uint8)
        x, y = 40 + 3 * i, 0
        canvas[y:y + 480, x:x + 512] = astronaut_bgr[:480]
        frames.append(canvas)
    return make_video(media_dir / "face.avi", frames)


@pytest.fixture(scope="session")
def scene_video(media_dir, coffee_bgr) -> Path:
    """1 s at 10 fps of a coffee cup: a real scene without a face."""
    import cv2

    base = cv2.resize(coffee_bgr, (640, 480))
    frames = [np.roll(base, 2 * i, axis=1) for i in range(10)]
    return make_video(media_dir / "scene.avi", frames)


class RecordBundle:
    """The two Bundle calls an encoder's ``from_bundle`` makes, over one freshly exported record."""

    def __init__(self, root: Path, record) -> None:
        self.root, self.record = root, record

    def spec(self, key: str) -> dict:
        assert key == self.record.key
        return {"file": self.record.file, "extra_files": list(self.record.extra_files),
                "attributes": self.record.attributes, "preprocessing": self.record.preprocessing}

    def session(self, relative: str):
        from ecmf_edge.runtime.sessions import create_session

        return create_session(self.root / relative)


@pytest.fixture(scope="session")
def face_frames(face_video) -> list[np.ndarray]:
    """The frames of ``face_video`` as BGR arrays."""
    from ecmf_edge.capture.video import iter_video_frames

    return [frame for _, frame in iter_video_frames(face_video)]


@pytest.fixture(scope="session")
def speech(speech_wav) -> np.ndarray:
    """The espeak sentence as 16 kHz float32 samples."""
    return load_audio(speech_wav)


@pytest.fixture(scope="session")
def parts(bundle) -> dict:
    """The stream's vision, speech and fusion models of the default bundle."""
    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.audio.speech_encoder import SpeechEncoder
    from ecmf_edge.runtime.fusion_head import FusionHead
    from ecmf_edge.vision.face_detector import FaceDetector
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

    return {"face_detector": FaceDetector.from_bundle(bundle, min_face_size=40), "face_encoder": FaceEncoder.from_bundle(bundle),
            "frame_encoder": FrameEncoder.from_bundle(bundle), "speech_encoder": SpeechEncoder.from_bundle(bundle),
            "speech_branch": SpeechBranch.from_bundle(bundle), "fusion": FusionHead.from_bundle(bundle).predict}
