"""How cost grows: frame size, faces per frame, people tracked over a clip, audio window length, transcript
length (and ASR clip length).

All inputs are real: the astronaut photograph scaled into frames of each size, its face
tiled 0-4 times over the coffee photograph (a real scene, so the 0-face case still runs
the whole detector cascade), the shipped speech cut or repeated to each window length,
and transcripts of each length made of real sentences.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ecmf_edge._assets import asset_path
from ecmf_edge.bench.stats import summarize, time_calls

__all__ = ["FRAME_SIZES", "FACE_COUNTS", "PEOPLE_COUNTS", "AUDIO_WINDOWS_S", "TRANSCRIPT_WORDS", "ASR_SECONDS", "measure_scaling"]

FRAME_SIZES = ((320, 240), (640, 480), (1280, 720), (1920, 1080))
FACE_COUNTS = (0, 1, 2, 4)
AUDIO_WINDOWS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
TRANSCRIPT_WORDS = (5, 20, 80, 300)
ASR_SECONDS = (2.0, 4.0, 8.0)

_SENTENCES = ("Hello there, I am really happy to see you again today. I was worried that the train would be late, "
              "but everything went fine and we finally made it. Honestly I can't believe how much time has passed "
              "since we last met, and I have so much to tell you about the new job and the move.")


def _photo() -> np.ndarray:
    import cv2

    return cv2.imread(str(asset_path("astronaut.jpg")))


def frame_of_size(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """The photograph scaled to the frame height and centred on grey (the face keeps its share of the frame)."""
    import cv2

    canvas = np.full((height, width, 3), 90, dtype=np.uint8)
    side = min(height, width)
    scaled = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    x = (width - side) // 2
    canvas[(height - side) // 2:(height - side) // 2 + side, x:x + side] = scaled
    return canvas


def frame_with_faces(photo: np.ndarray, count: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A coffee-scene frame with the astronaut's head pasted into ``count`` cells of a 2x2 grid."""
    import cv2

    w, h = size
    frame = cv2.resize(cv2.imread(str(asset_path("coffee.jpg"))), (w, h), interpolation=cv2.INTER_LINEAR)
    head = photo[10:250, 110:430]  # 320x240: the head and shoulders
    cw, ch = w // 2, h // 2
    tile = cv2.resize(head, (cw, ch), interpolation=cv2.INTER_AREA)
    for i in range(count):
        r, c = divmod(i, 2)
        frame[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = tile
    return frame


def _row(label: str, times: list[float], **extra: Any) -> dict[str, Any]:
    stats = summarize(times)
    return {"input": label, "p50_ms": stats.get("p50_ms"), "p95_ms": stats.get("p95_ms"), "n": stats.get("n"), **extra}


def _frame_sizes(detector: Any, face_encoder: Any, frame_encoder: Any, repeats: int, warmup: int) -> list[dict]:
    import cv2

    from ecmf_edge.vision.alignment import align_face

    photo, rows = _photo(), []
    for w, h in FRAME_SIZES:
        frame = frame_of_size(photo, w, h)
        jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
        faces = detector.detect(frame)
        decode = summarize(time_calls(lambda: cv2.imdecode(jpeg, cv2.IMREAD_COLOR), repeats, warmup))
        detect = summarize(time_calls(lambda: detector.detect(frame), repeats, warmup))
        scene = summarize(time_calls(lambda: frame_encoder.encode(frame), repeats, warmup))
        encode = (summarize(time_calls(lambda: face_encoder.encode(align_face(frame, faces[0], size=face_encoder.input_size)),
                                       repeats, warmup)) if faces else {})
        rows.append({"input": f"{w}x{h}", "faces_found": len(faces), "decode_p50_ms": decode["p50_ms"],
                     "face_detect_p50_ms": detect["p50_ms"], "face_encoder_p50_ms": encode.get("p50_ms"),
                     "frame_encoder_p50_ms": scene["p50_ms"],
                     "vision_total_p50_ms": round(decode["p50_ms"] + detect["p50_ms"] + (encode.get("p50_ms") or 0.0), 3)})
    return rows


def _face_counts(detector: Any, face_encoder: Any, repeats: int, warmup: int) -> list[dict]:
    from ecmf_edge.vision.alignment import align_face

    photo, rows = _photo(), []
    for count in FACE_COUNTS:
        frame = frame_with_faces(photo, count)
        faces = detector.detect(frame)
        detect = summarize(time_calls(lambda: detector.detect(frame), repeats, warmup))

        def encode_all() -> object:
            crops = [align_face(frame, f, size=face_encoder.input_size) for f in faces]
            return face_encoder.encode(crops) if crops else None

        encode = summarize(time_calls(encode_all, repeats, warmup)) if faces else {"p50_ms": 0.0}
        rows.append({"input": f"{count} face(s) in 640x480", "faces_found": len(faces), "face_detect_p50_ms": detect["p50_ms"],
                     "encode_all_faces_p50_ms": encode["p50_ms"],
                     "total_p50_ms": round(detect["p50_ms"] + encode["p50_ms"], 3)})
    return rows


# Faces per frame in the people table (a 30 fps clip of still, swaying people per count).
PEOPLE_COUNTS = (0, 1, 2, 4, 8)
# The face path per frame: before tracking (detect and encode every face on every frame), and the
# stream's default (detect every 10th frame or when something changes; the focus face encoded at 10 Hz,
# the others at 5 Hz).
PEOPLE_MODES = {"detect every frame": dict(detect_every=1, period_s=0.0, others_period_s=0.0),
                "tracked (default)": dict(detect_every=10, period_s=0.1, others_period_s=0.2)}


def people_cost(detector: Any, face_encoder: Any, frames: int = 90) -> list[dict]:
    """Face path cost per frame averaged over a 30 fps clip, for 0-8 people, in both modes."""
    import time

    from ecmf_edge.bench.people_clips import grid_clip
    from ecmf_edge.vision.face_path import FacePath

    rows = []
    for count in PEOPLE_COUNTS:
        clip = grid_clip(count, frames=frames)
        row: dict[str, Any] = {"input": f"{count} face(s), 640x480 at 30 fps"}
        for options in PEOPLE_MODES.values():
            path = FacePath(detector, face_encoder, **options)
            times, seen = [], 0
            for k, frame in enumerate(clip.frames):
                started = time.perf_counter()
                step = path.step(frame, k / clip.fps)
                times.append((time.perf_counter() - started) * 1000.0)
                seen += len(step.people)
            key = "every_frame" if options["detect_every"] == 1 else "tracked"
            row[f"{key}_mean_ms"] = round(float(np.mean(times)), 3)
            row[f"{key}_p95_ms"] = round(float(np.percentile(times, 95)), 3)
            row[f"{key}_faces_per_frame"] = round(seen / len(clip.frames), 2)
            if key == "tracked":
                row["detections"] = f"{path.tracker.detections}/{len(clip.frames)}"
        row["speed_up"] = round(row["every_frame_mean_ms"] / max(row["tracked_mean_ms"], 1e-9), 2)
        rows.append(row)
    return rows


def people_tracking(detector: Any, face_encoder: Any) -> list[dict]:
    """Id switches on the moving clips (people walking, crossing, leaving and coming back)."""
    from ecmf_edge.bench.people_clips import SCENARIOS, id_switches, moving_clip
    from ecmf_edge.vision.face_path import FacePath

    rows = []
    for scenario in SCENARIOS:
        clip = moving_clip(scenario)
        path = FacePath(detector, face_encoder)
        tracks = []
        for k, frame in enumerate(clip.frames):
            tracks.append({p.id: p.box for p in path.step(frame, k / clip.fps).people})
        rows.append({"input": f"moving: {scenario}", "id_switches": id_switches(tracks, clip.heads),
                     "ids": len({tid for t in tracks for tid in t}),
                     "people": len({i for h in clip.heads for i in h}),
                     "detections": f"{path.tracker.detections}/{len(clip.frames)}"})
    return rows


def _audio_windows(encoder: Any, speech: np.ndarray, repeats: int, warmup: int) -> list[dict]:
    from ecmf_edge.audio.prosody import prosody_features

    rows = []
    for seconds in AUDIO_WINDOWS_S:
        pcm = np.resize(speech, int(seconds * 16000)).astype(np.float32)
        enc = summarize(time_calls(lambda: encoder.encode(pcm, 16000), repeats, warmup))
        pro = summarize(time_calls(lambda: prosody_features(pcm, 16000), repeats, warmup))
        rows.append({"input": f"{seconds:g} s", "audio_encoder_p50_ms": enc["p50_ms"], "prosody_p50_ms": pro["p50_ms"],
                     "total_p50_ms": round(enc["p50_ms"] + pro["p50_ms"], 3)})
    return rows


def _transcripts(encoder: Any, repeats: int, warmup: int) -> list[dict]:
    words = _SENTENCES.split()
    rows = []
    for count in TRANSCRIPT_WORDS:
        text = " ".join(words[i % len(words)] for i in range(count))
        stats = summarize(time_calls(lambda: encoder.encode(text), repeats, warmup))
        rows.append({"input": f"{count} words", "text_encoder_p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"],
                     "max_tokens": getattr(encoder, "max_tokens", None)})
    return rows


def _asr_lengths(asr: Any, speech: np.ndarray, repeats: int) -> list[dict]:
    rows = []
    for seconds in ASR_SECONDS:
        pcm = np.resize(speech, int(seconds * 16000)).astype(np.float32)
        stats = summarize(time_calls(lambda: asr.transcribe(pcm), repeats, 1))
        rows.append({"input": f"{seconds:g} s speech", "asr_p50_ms": stats["p50_ms"],
                     "real_time_factor": round(stats["p50_ms"] / 1000.0 / seconds, 3)})
    return rows


def measure_scaling(recognizer: Any, repeats: int = 10, warmup: int = 2, asr: bool = True) -> dict[str, Any]:
    """The scaling tables for the recognizer's models: ``{frame_size, faces, audio_window, transcript[, asr_length]}``."""
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.text.text_encoder import TextEncoder

    models = recognizer.models
    detector, face_encoder = models.face_detector, models.face_encoder
    speech = load_audio(asset_path("speech_en.wav"))
    voiced = np.flatnonzero(np.abs(speech) > 0.01)
    speech = speech[voiced[0]: voiced[-1] + 1] if voiced.size else speech
    tables: dict[str, Any] = {
        "frame_size": _frame_sizes(detector, face_encoder, models.frame_encoder, repeats, warmup),
        "faces": _face_counts(detector, face_encoder, repeats, warmup),
        "people": people_cost(detector, face_encoder),
        "people_tracking": people_tracking(detector, face_encoder),
        "audio_window": _audio_windows(models.speech_encoder, speech, repeats, warmup),
        "transcript": _transcripts(TextEncoder.from_bundle(recognizer.bundle), repeats, warmup),
    }
    if asr:
        recognizer_asr, reason = models.asr
        tables["asr_length"] = (_asr_lengths(recognizer_asr, speech, max(1, repeats // 5)) if recognizer_asr is not None
                                else {"skipped": reason})
    return tables
