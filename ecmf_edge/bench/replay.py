"""The fixed replay clip: real frames and real speech, the same bytes on every machine.

The video is the astronaut photograph (``ecmf_edge/assets/astronaut.jpg``) panning
slowly inside a 640x480 grey frame at camera rate (30 fps, MJPG AVI); the audio is the
shipped English speech (``speech_en.wav``) followed by one second of silence, repeated
to the clip length (16 kHz mono PCM). Both are written deterministically from the
assets and cached under ``<engines>/bench/replay-<key>/``, where the key hashes the
assets and the clip parameters, so a changed asset or parameter builds a new clip.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecmf_edge._assets import asset_path
from ecmf_edge.errors import InputError
from ecmf_edge.modalities import SAMPLE_RATE
from ecmf_edge.runtime.bundle import sha256_file

__all__ = ["ReplayClip", "build_replay_clip", "replay_frame", "REPLAY_FPS", "REPLAY_SIZE"]

# Camera rate and frame size of the clip.
REPLAY_FPS = 30.0
REPLAY_SIZE = (640, 480)
# Bump when the way the clip is drawn changes (it changes the cache key).
_RECIPE = 1
_SILENCE_S = 1.0
_SAMPLE_RATE = SAMPLE_RATE


@dataclass(frozen=True)
class ReplayClip:
    """Paths and facts of a built replay clip."""

    # MJPG AVI at REPLAY_FPS.
    video: Path
    # 16 kHz mono 16-bit WAV of the same length.
    audio: Path
    seconds: float
    fps: float
    size: tuple[int, int]
    # sha256 of the video and the audio file, so reports can prove two runs used the same input.
    sha256: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        return {"video": self.video.name, "audio": self.audio.name, "seconds": self.seconds, "fps": self.fps,
                "size": list(self.size), "sha256": dict(self.sha256),
                "content": "astronaut photograph panning in a 640x480 frame + espeak-ng English speech, 1 s pauses"}


def replay_frame(photo: np.ndarray, index: int, fps: float = REPLAY_FPS, size: tuple[int, int] = REPLAY_SIZE) -> np.ndarray:
    """Frame ``index`` of the clip: the photograph shifted on a sine path (period 4 s) in a grey frame."""
    w, h = size
    canvas = np.full((h, w, 3), 90, dtype=np.uint8)
    ph, pw = photo.shape[:2]
    scale = h / ph if ph > h else 1.0
    if scale != 1.0:
        import cv2

        photo = cv2.resize(photo, (max(1, round(pw * scale)), h), interpolation=cv2.INTER_AREA)
        ph, pw = photo.shape[:2]
    travel = max(0, w - pw)
    x = int(round(travel * (0.5 + 0.4 * math.sin(2 * math.pi * index / (4.0 * fps)))))
    canvas[:ph, x:x + pw] = photo[:h, : w - x]
    return canvas


def _speech_track(seconds: float) -> np.ndarray:
    from ecmf_edge.audio.io import load_audio

    speech = load_audio(asset_path("speech_en.wav"))
    unit = np.concatenate([speech, np.zeros(int(_SILENCE_S * _SAMPLE_RATE), dtype=np.float32)])
    total = int(round(seconds * _SAMPLE_RATE))
    return np.resize(unit, total).astype(np.float32)


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    samples = np.clip(np.round(pcm.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(_SAMPLE_RATE)
        out.writeframes(samples.tobytes())


def _write_video(path: Path, seconds: float, fps: float, size: tuple[int, int]) -> None:
    import cv2

    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    if photo is None:
        raise InputError(f"{asset_path('astronaut.jpg')} cannot be read: reinstall ecmf-edge")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise InputError("this OpenCV build cannot write MJPG video: install opencv-python-headless from PyPI")
    try:
        for index in range(int(round(seconds * fps))):
            writer.write(replay_frame(photo, index, fps, size))
    finally:
        writer.release()


def _cache_key(seconds: float, fps: float, size: tuple[int, int]) -> str:
    digest = hashlib.sha256()
    for name in ("astronaut.jpg", "speech_en.wav"):
        digest.update(sha256_file(asset_path(name)).encode())
    digest.update(f"{_RECIPE}:{seconds:.3f}:{fps:.3f}:{size[0]}x{size[1]}".encode())
    return digest.hexdigest()[:12]


def default_cache_dir() -> Path:
    """``<engines>/bench`` (see :func:`ecmf_edge.runtime.bundle.engines_dir`)."""
    from ecmf_edge.runtime.bundle import engines_dir

    return engines_dir() / "bench"


def build_replay_clip(seconds: float = 10.0, cache_dir: str | Path | None = None, fps: float = REPLAY_FPS,
                      size: tuple[int, int] = REPLAY_SIZE) -> ReplayClip:
    """The replay clip of ``seconds`` seconds, built once and then reused from ``cache_dir``.

    Raises:
        InputError: ``seconds`` is not in [1, 600], or OpenCV cannot write the video.
    """
    if not (isinstance(seconds, (int, float)) and 1.0 <= float(seconds) <= 600.0):
        raise InputError(f"seconds={seconds!r} is invalid: use a clip length from 1 to 600 seconds")
    seconds = float(seconds)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"replay-{_cache_key(seconds, fps, size)}"
    video, audio = folder / "replay.avi", folder / "replay.wav"
    if not (video.is_file() and audio.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tmp_video, tmp_audio = Path(tmp) / video.name, Path(tmp) / audio.name
            _write_video(tmp_video, seconds, fps, size)
            _write_wav(tmp_audio, _speech_track(seconds))
            os.replace(tmp_audio, audio)
            os.replace(tmp_video, video)
    return ReplayClip(video=video, audio=audio, seconds=seconds, fps=fps, size=size,
                      sha256={"video": sha256_file(video), "audio": sha256_file(audio)})
