"""Per-stage latency with the models a :class:`~ecmf_edge.Recognizer` streams with.

Every stage is timed on real input from the replay clip: its frames (decode, face
detection, face encoder, frame encoder), its speech (VAD chunk, 1 s audio-encoder
window, ASR of one utterance), the transcript (LLM context, text encoder) and the
resulting features (fusion head). Warm-up calls are not timed. ASR and the LLM take
about a second per call, so they get fewer repetitions (``heavy_repeats``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ecmf_edge.bench.replay import ReplayClip
from ecmf_edge.bench.stats import summarize, time_calls
from ecmf_edge.errors import EcmfError

__all__ = ["STAGES", "first_utterance", "measure_stages", "replay_inputs"]

logger = logging.getLogger("ecmf_edge")

# The stages in pipeline order, as reported.
STAGES = ("capture_decode", "face_detect", "face_encoder", "frame_encoder", "vad", "audio_encoder", "asr", "llm",
          "text_encoder", "fusion")


class _Inputs:
    """Real inputs taken from the replay clip."""

    def __init__(self, clip: ReplayClip) -> None:
        import cv2

        from ecmf_edge.audio.io import load_audio

        cap = cv2.VideoCapture(str(clip.video))
        ok, frame = cap.read()
        cap.release()
        if not ok:
            raise EcmfError(f"{clip.video} has no decodable frame: delete it and run the benchmark again")
        self.frame = frame
        self.pcm = load_audio(clip.audio)
        self.speech = first_utterance(self.pcm)
        middle = self.speech.size // 2
        self.window_1s = self.speech[max(0, middle - 8000): max(0, middle - 8000) + 16000]
        self.vad_chunk = self.speech[middle: middle + 512]


def first_utterance(pcm: np.ndarray, rate: int = 16000, pause_s: float = 0.5, level: float = 0.01) -> np.ndarray:
    """The first stretch of speech: from the first loud sample to the first pause of ``pause_s`` seconds."""
    frame = rate // 50  # 20 ms
    loud = np.array([np.abs(pcm[i:i + frame]).max(initial=0.0) > level for i in range(0, pcm.size, frame)])
    voiced = np.flatnonzero(loud)
    if voiced.size == 0:
        return pcm[: 4 * rate]
    start, quiet, end = int(voiced[0]), 0, len(loud)
    for i in range(start, len(loud)):
        quiet = 0 if loud[i] else quiet + 1
        if quiet * frame >= pause_s * rate:
            end = i - quiet + 1
            break
    return pcm[start * frame: end * frame]


def replay_inputs(clip: ReplayClip) -> _Inputs:
    """The first frame, the first utterance, a 1 s window and a VAD chunk of the clip."""
    return _Inputs(clip)


def _decode_timer(clip: ReplayClip) -> Callable[[], object]:
    from ecmf_edge.capture.files import VideoFileSource

    source = VideoFileSource(clip.video, realtime=False)
    source.open()
    holder = {"source": source}

    def read() -> object:
        from ecmf_edge.capture.base import SourceEnded

        try:
            return holder["source"].read(1.0)
        except SourceEnded:
            holder["source"].close()
            holder["source"] = VideoFileSource(clip.video, realtime=False)
            holder["source"].open()
            return holder["source"].read(1.0)

    return read


def _row(description: str, times: list[float], **extra: Any) -> dict[str, Any]:
    return {"input": description, **summarize(times), **extra}


def measure_stages(recognizer: Any, clip: ReplayClip, repeats: int = 30, warmup: int = 3, heavy_repeats: int = 3,
                   llm: bool = True) -> dict[str, dict[str, Any]]:
    """Latency of each stage, ``{stage: {input, p50_ms, p95_ms, p99_ms, ...}}``; a stage that cannot run
    has ``{"skipped": reason}`` instead.

    ``recognizer`` is a :class:`~ecmf_edge.Recognizer`: its loader opens the models the stream uses,
    with the same backend, precision and threads.
    """
    from ecmf_edge.audio.vad import VoiceActivityDetector
    from ecmf_edge.runtime.fusion_head import FusionHead
    from ecmf_edge.text.text_encoder import TextEncoder
    from ecmf_edge.vision.alignment import align_face

    inputs = replay_inputs(clip)
    models, bundle = recognizer.models, recognizer.bundle
    results: dict[str, dict[str, Any]] = {}

    def run(name: str, description: str, fn: Callable[[], object], n: int = repeats, w: int = warmup, **extra: Any) -> None:
        try:
            results[name] = _row(description, time_calls(fn, n, w), **extra)
        except (EcmfError, RuntimeError, ValueError, OSError) as exc:
            results[name] = {"skipped": f"{type(exc).__name__}: {exc}"}

    frame = inputs.frame
    run("capture_decode", f"MJPG {clip.size[0]}x{clip.size[1]} frame (file source)", _decode_timer(clip))
    detector, encoder = models.face_detector, models.face_encoder
    faces = detector.detect(frame)
    run("face_detect", f"{frame.shape[1]}x{frame.shape[0]} frame, {len(faces)} face", lambda: detector.detect(frame))
    if faces:
        run("face_encoder", f"align + encode 1 face ({encoder.input_size}x{encoder.input_size})",
            lambda: encoder.encode(align_face(frame, faces[0], size=encoder.input_size)))
    else:
        results["face_encoder"] = {"skipped": "no face found in the replay frame"}
    frame_encoder = models.frame_encoder
    run("frame_encoder", f"{frame.shape[1]}x{frame.shape[0]} frame", lambda: frame_encoder.encode(frame))
    vad = VoiceActivityDetector.from_bundle(bundle)
    run("vad", "one 32 ms chunk (512 samples)", lambda: vad.chunk_probability(inputs.vad_chunk), n=repeats * 5)
    speech_encoder = models.speech_encoder
    run("audio_encoder", "1 s speech window", lambda: speech_encoder.encode(inputs.window_1s, 16000))

    transcript = ""
    asr, reason = models.asr
    if asr is None:
        results["asr"] = {"skipped": reason}
    else:
        seconds = inputs.speech.size / 16000
        run("asr", f"one {seconds:.1f} s utterance", lambda: asr.transcribe(inputs.speech), n=heavy_repeats, w=1)
        transcript = asr.transcribe(inputs.speech).text
        if "p50_ms" in results.get("asr", {}):
            results["asr"]["real_time_factor"] = round(results["asr"]["p50_ms"] / 1000.0 / seconds, 3)
    transcript = transcript or "Hello there. I am really happy to see you again today."
    enriched = transcript
    if llm:
        results["llm"], enriched = _measure_llm(transcript, heavy_repeats)
    else:
        results["llm"] = {"skipped": "off (the default; --llm times it)"}
    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.text.text_branch import TextBranch

    branch = TextBranch.from_bundle(bundle)
    if branch is not None:  # what the live text path runs: the utterance with its context
        context = enriched[: max(0, len(enriched) - len(transcript))].strip()
        run("text_encoder", f"text branch: transcript + context ({len(transcript.split())} + {len(context.split())} words)",
            lambda: branch(transcript, (), context))
        text_token = branch(transcript, (), context)[0]
    else:
        text_encoder = TextEncoder.from_bundle(bundle)
        texts = [enriched, transcript]  # LLM-enriched text and the transcript
        run("text_encoder", f"enriched text + transcript ({len(enriched.split())} + {len(transcript.split())} words)",
            lambda: text_encoder.encode(texts))
        text_token = np.asarray(text_encoder.encode(texts), dtype=np.float32).reshape(-1)

    head = FusionHead.from_bundle(bundle)
    audio_token = _audio_token(speech_encoder, inputs.window_1s)
    speech_branch = SpeechBranch.from_bundle(bundle)
    if speech_branch is not None:
        audio_token = speech_branch(audio_token, observe=False)[0]
    features = {"frame": frame_encoder.encode(frame)[0], "text": text_token,
                "face": encoder.encode(align_face(frame, faces[0], size=encoder.input_size)).features[0] if faces else None,
                "audio": audio_token}
    run("fusion", "4 modality tokens", lambda: head.predict(features), n=repeats * 3)
    return {name: results[name] for name in STAGES if name in results}


def _audio_token(encoder: Any, pcm: np.ndarray) -> np.ndarray:
    from ecmf_edge.audio.prosody import prosody_features
    from ecmf_edge.audio.speech_encoder import audio_token

    return audio_token(encoder.encode(pcm, 16000), prosody_features(pcm, 16000))


def _measure_llm(transcript: str, repeats: int) -> tuple[dict[str, Any], str]:
    """Context enrichment of one transcript from a cold prompt each time (no KV-cache reuse);
    returns the row and the enriched text."""
    from ecmf_edge.errors import DependencyError, ModelError
    from ecmf_edge.text.llm_context import ContextEnricher

    try:
        enricher = ContextEnricher()
    except (DependencyError, ModelError) as exc:
        return {"skipped": str(exc)}, transcript
    try:
        results = []
        for i in range(repeats + 1):
            enricher.reset()
            result = enricher.enrich(transcript)
            if i:  # the first answer warms llama.cpp up
                results.append(result)
    finally:
        enricher.close()
    row = _row(f"context for a {len(transcript.split())}-word transcript", [r.latency_ms for r in results])
    ttft = [r.first_token_ms for r in results if r.first_token_ms]
    row["first_token_ms"] = round(float(np.median(ttft)), 1) if ttft else None
    row["tokens"] = int(np.median([r.tokens for r in results]))
    row["used_llm_share"] = round(sum(r.used_llm for r in results) / len(results), 3)
    return row, results[-1].enriched or transcript
