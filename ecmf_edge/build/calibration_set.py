"""Versioned calibration sets: real faces, frames, speech windows and texts in one folder.

A calibration set is what post-training quantization (ONNX Runtime static INT8) and
TensorRT's INT8 calibrator read. ``ecmf-edge calibrate`` samples it from the user's own
clips (the face crops come from the runtime's own detector and alignment, speech windows
from the VAD's speech segments), or from the offline default sources, and writes::

    <set>/manifest.json      format, version, sources, counts, sha256 + size of every file
    <set>/faces/0000.png     aligned face crops (grey or BGR)
    <set>/frames/0000.jpg    whole frames (BGR)
    <set>/speech/0000.wav    16 kHz mono speech windows of 1, 2 and 4 s
    <set>/texts.txt          one sentence per line

Default sources (no network, nothing downloaded): scikit-image's LFW faces and
photographs, speech synthesised with espeak-ng from the sentences in
``ecmf_edge/assets/calibration_sentences.txt`` in several voices, and those sentences as
texts. The ``held_out`` split uses other faces, photos and sentences and only feeds the
accuracy gates of :mod:`ecmf_edge.build.quantize`.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._assets import asset_path
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.modalities import SAMPLE_RATE

__all__ = [
    "CalibrationSet", "FORMAT", "VERSION", "SPLITS", "build_calibration_set", "load_calibration_set",
    "default_calibration_set", "default_set_dir", "sentences", "is_calibration_set",
]

logger = logging.getLogger("ecmf_edge")

FORMAT = "ecmf-edge-calibration"
VERSION = 1
SPLITS = ("calibration", "held_out")
WINDOW_SECONDS = (1.0, 2.0, 4.0)
# espeak-ng voices x speeds x pitches for the default speech windows (synthetic, varied).
_VOICES = {
    "calibration": (("en-us", 150, 50), ("en-gb", 175, 35), ("en-gb-scotland", 135, 65), ("en-029", 160, 45)),
    "held_out": (("en-gb-x-rp", 155, 55), ("en-us", 185, 30)),
}
_MIN_SPEECH_DBFS = -50.0
_FIX = "rebuild it with `ecmf-edge calibrate --out DIR` (or omit --calibration to use the default set)"


@dataclass
class CalibrationSet:
    """A loaded calibration set; any kind may be empty when its sources were not given."""

    root: Path
    manifest: dict[str, Any]
    faces: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    speech: list[np.ndarray] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    def items(self, kind: str) -> list[Any]:
        """The items of one kind (faces, frames, speech, texts).

        Raises:
            InputError: the set holds none of that kind.
        """
        values = getattr(self, kind)
        if not values:
            raise InputError(f"calibration set {self.root} holds no {kind}: add them to the recipe "
                             f"(`ecmf-edge calibrate` with --video/--audio/--texts) or use the default set")
        return values


def sentences(split: str) -> list[str]:
    """The packaged sentences of one split."""
    if split not in SPLITS:
        raise InputError(f"unknown calibration split '{split}': use one of {', '.join(SPLITS)}")
    current, found = None, {s: [] for s in SPLITS}
    for line in asset_path("calibration_sentences.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        if current in found:
            found[current].append(line)
    return found[split]


def default_set_dir(split: str = "calibration") -> Path:
    """Where the default set of a split is cached: ``<engines>/calibration/<split>-v<VERSION>``."""
    from ecmf_edge.runtime.bundle import engines_dir

    if split not in SPLITS:
        raise InputError(f"unknown calibration split '{split}': use one of {', '.join(SPLITS)}")
    return engines_dir() / "calibration" / f"{split}-v{VERSION}"


def default_calibration_set(split: str = "calibration") -> CalibrationSet:
    """The default set of a split, built from the offline sources on first use."""
    root = default_set_dir(split)
    if not (root / "manifest.json").is_file():
        build_calibration_set(root, split=split)
    return load_calibration_set(root)


def is_calibration_set(folder: str | Path) -> bool:
    """Whether ``folder`` holds a calibration-set manifest (rather than loose images)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# ----------------------------------------------------------------------------- building

def build_calibration_set(
    out: str | Path,
    *,
    split: str = "calibration",
    videos: Sequence[str | Path] = (),
    audios: Sequence[str | Path] = (),
    texts: str | Path | None = None,
    bundle: Any = None,
    frames_per_video: int = 24,
    max_faces: int = 400,
    max_windows: int = 120,
    name: str | None = None,
) -> Path:
    """Sample a calibration set into ``out`` (written to ``out.partial`` and renamed on success).

    Each kind comes from the user's sources when given, otherwise from the default sources
    of ``split``: faces and frames from ``videos`` (faces found by the bundle's detector and
    aligned as at run time), speech windows from the speech segments of ``audios``, texts
    from the lines of the ``texts`` file.

    Raises:
        InputError: a source is missing or unreadable, or yields nothing usable.
    """
    if split not in SPLITS:
        raise InputError(f"unknown calibration split '{split}': use one of {', '.join(SPLITS)}")
    out = Path(out)
    sources: dict[str, str] = {}
    if videos:
        faces, frames = _from_videos(videos, bundle, frames_per_video, max_faces)
        sources["faces"] = sources["frames"] = "video: " + ", ".join(Path(v).name for v in videos)
    else:
        from ecmf_edge.build.calibration import face_crops, scene_frames

        faces, frames = face_crops(split), scene_frames(split)
        sources["faces"] = f"scikit-image lfw_subset faces ({split} split; as is, mirrored, +/-40 grey)"
        sources["frames"] = f"scikit-image photographs ({split} split; as is and mirrored)"
    if audios:
        speech = _from_audio(audios, bundle, max_windows)
        sources["speech"] = "audio: " + ", ".join(Path(a).name for a in audios)
    else:
        speech, how = _default_speech(split, max_windows)
        sources["speech"] = how
    if texts is not None:
        lines = _read_texts(texts)
        sources["texts"] = f"text file: {Path(texts).name}"
    else:
        lines = sentences(split)
        sources["texts"] = f"ecmf_edge/assets/calibration_sentences.txt [{split}]"
    if not (faces or frames or speech or lines):
        raise InputError("the calibration sources gave nothing usable: pass clips with visible faces and speech")
    from ecmf_edge.build.common import staged_dir

    with staged_dir(out) as partial:
        files = _write(partial, faces, frames, speech, lines)
        manifest = {
            "format": FORMAT, "version": VERSION, "name": name or out.name, "split": split,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": sources,
            "counts": {"faces": len(faces), "frames": len(frames), "speech": len(speech), "texts": len(lines)},
            "speech_seconds": round(sum(len(s) for s in speech) / SAMPLE_RATE, 2),
            "files": files,
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("calibration set written to %s (%s)", out, manifest["counts"])
    return out


def _write(root: Path, faces, frames, speech, lines) -> dict[str, dict[str, Any]]:
    import cv2

    from ecmf_edge.runtime.bundle import sha256_file

    written = []
    for sub, items, ext in (("faces", faces, ".png"), ("frames", frames, ".jpg")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(items):
            path = root / sub / f"{i:04d}{ext}"
            if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else []):
                raise InputError(f"cannot write {path}: check the folder is writable and the disk has space")
            written.append(path)
    (root / "speech").mkdir(parents=True, exist_ok=True)
    for i, pcm in enumerate(speech):
        path = root / "speech" / f"{i:04d}.wav"
        _write_wav(path, pcm)
        written.append(path)
    (root / "texts.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    written.append(root / "texts.txt")
    return {str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in written}


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    data = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(data.tobytes())


def _windows(pcm: np.ndarray, limit: int) -> list[np.ndarray]:
    """Cut 1, 2 and 4 s windows (hop = half a window) from a speech segment."""
    found = []
    for seconds in WINDOW_SECONDS:
        size = int(seconds * SAMPLE_RATE)
        if len(pcm) < size:
            if seconds == WINDOW_SECONDS[0] and len(pcm) >= SAMPLE_RATE // 2:
                found.append(pcm.copy())  # short utterances stay whole
            continue
        for start in range(0, len(pcm) - size + 1, size // 2):
            found.append(pcm[start:start + size].copy())
    from ecmf_edge.audio.io import rms_dbfs

    return [w for w in found if rms_dbfs(w) > _MIN_SPEECH_DBFS][:limit]


def _default_speech(split: str, limit: int) -> tuple[list[np.ndarray], str]:
    from ecmf_edge.audio.io import load_audio

    voices = _VOICES[split]
    windows: list[np.ndarray] = []
    if shutil.which("espeak-ng") is None:
        if split == "held_out":
            raise InputError("espeak-ng is needed to synthesise the held-out speech: install it (apt-get install espeak-ng)")
        pcm = load_audio(asset_path("speech_en.wav"))
        return _windows(pcm, limit), "ecmf_edge/assets/speech_en.wav (espeak-ng not installed)"
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(sentences(split)):
            voice, speed, pitch = voices[i % len(voices)]
            path = Path(tmp) / f"{i}.wav"
            done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
                                  capture_output=True, timeout=30)
            if done.returncode != 0 or not path.is_file():
                continue
            pcm = load_audio(path)
            windows.extend(_windows(_trim(pcm), limit))
    if not windows:
        raise InputError("espeak-ng produced no usable speech: check `espeak-ng -v en-us hello` works")
    rng = np.random.default_rng(0)  # keep every window length and voice represented when capping
    if len(windows) > limit:
        windows = [windows[i] for i in sorted(rng.choice(len(windows), limit, replace=False))]
    how = "espeak-ng: " + ", ".join(f"{v} {s} wpm pitch {p}" for v, s, p in voices) + f" reading the {split} sentences"
    return windows, how


def _trim(pcm: np.ndarray, floor_db: float = -45.0) -> np.ndarray:
    """Drop leading and trailing silence (synthesised speech carries ~0.1-0.3 s of it)."""
    frame = 160
    usable = len(pcm) // frame * frame
    if usable == 0:
        return pcm
    energy = 10 * np.log10(np.mean(pcm[:usable].reshape(-1, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy > floor_db)
    if loud.size == 0:
        return pcm
    return pcm[loud[0] * frame:(loud[-1] + 1) * frame]


def _from_audio(audios: Iterable[str | Path], bundle: Any, limit: int) -> list[np.ndarray]:
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.audio.vad import VoiceActivityDetector
    from ecmf_edge.runtime.bundle import load_bundle

    vad = VoiceActivityDetector.from_bundle(bundle or load_bundle("default"))
    windows: list[np.ndarray] = []
    for path in audios:
        pcm = load_audio(path)
        for segment in vad.segments(pcm):
            part = pcm[int(segment.start * SAMPLE_RATE):int(segment.end * SAMPLE_RATE)]
            windows.extend(_windows(part, limit - len(windows)))
            if len(windows) >= limit:
                return windows
    if not windows:
        raise InputError("no speech found in the calibration audio: pass WAV clips with at least 1 s of speech")
    return windows


def _from_videos(videos: Iterable[str | Path], bundle: Any, per_video: int, max_faces: int):
    import cv2

    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.vision.alignment import align_face
    from ecmf_edge.vision.face_detector import FaceDetector

    bundle = bundle or load_bundle("default")
    detector = FaceDetector.from_bundle(bundle)
    size = int(bundle.spec("face_encoder")["inputs"][0]["shape"][-1])
    faces, frames = [], []
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        if count <= 0:
            capture.release()
            raise InputError(f"calibration video {video} cannot be read: check the path and that it is a video file")
        for index in np.linspace(0, count - 1, min(per_video, count)).astype(int):
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = capture.read()
            if not ok or frame is None:
                continue
            frames.append(frame)
            for face in detector.detect(frame, max_faces=4):
                if len(faces) < max_faces:
                    faces.append(align_face(frame, face, size=size))
        capture.release()
    if not frames:
        raise InputError("no frame could be decoded from the calibration videos: check the files")
    if not faces:
        raise InputError("no face was found in the calibration videos: pass clips where faces are visible")
    return faces, frames


def _read_texts(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"calibration texts {path} cannot be read ({type(exc).__name__}): pass a UTF-8 text file") from None
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"calibration texts {path} hold no sentence: write one sentence per line")
    return lines


# ----------------------------------------------------------------------------- loading

def load_calibration_set(folder: str | Path) -> CalibrationSet:
    """Read and verify a calibration set written by :func:`build_calibration_set`.

    Raises:
        InputError: no manifest, another format or version, a missing/changed file, an
            undecodable image or WAV, or a set without any item.
    """
    import cv2

    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.runtime.bundle import sha256_file

    root = Path(folder)
    path = root / "manifest.json"
    if not path.is_file():
        raise InputError(f"{root} is not a calibration set (no manifest.json): {_FIX}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"calibration manifest {path} is unreadable ({type(exc).__name__}): {_FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not an ecmf-edge calibration manifest: {_FIX}")
    if manifest.get("version") != VERSION:
        raise InputError(f"calibration set {root} is version {manifest.get('version')}, this release reads {VERSION}: {_FIX}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(f"calibration set {root} lists no file: {_FIX}")
    loaded = CalibrationSet(root=root, manifest=manifest)
    for relative, record in sorted(files.items()):
        file = root / relative
        if not file.is_file():
            raise InputError(f"calibration file {file} is missing: {_FIX}")
        if sha256_file(file) != record.get("sha256"):
            raise InputError(f"calibration file {file} changed since the set was written (sha256 mismatch): {_FIX}")
        kind = relative.split("/", 1)[0]
        if kind in ("faces", "frames"):
            image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if image is None or image.size == 0:
                raise InputError(f"calibration image {file} cannot be decoded: {_FIX}")
            getattr(loaded, kind).append(image)
        elif kind == "speech":
            try:
                loaded.speech.append(load_audio(file))
            except (InputError, ModelError) as exc:
                raise InputError(f"calibration speech {file} is unusable ({exc}): {_FIX}") from None
        elif relative == "texts.txt":
            loaded.texts = [t for t in (line.strip() for line in file.read_text(encoding="utf-8").splitlines()) if t]
    if not (loaded.faces or loaded.frames or loaded.speech or loaded.texts):
        raise InputError(f"calibration set {root} is empty: {_FIX}")
    return loaded
