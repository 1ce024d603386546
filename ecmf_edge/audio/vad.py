"""Voice activity detection with Silero VAD (ONNX), streaming or over a whole clip.

The model reads 512-sample chunks of 16 kHz audio (32 ms) plus the 64 samples that
preceded them, and carries a recurrent state between chunks. :class:`VoiceActivityDetector`
keeps that state explicitly: call :meth:`reset` between unrelated streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, check_pcm
from ecmf_edge.errors import InputError

__all__ = ["VoiceActivityDetector", "VadOptions", "SpeechSegment", "CHUNK_SAMPLES"]

# Samples per model step at 16 kHz (the only chunk size Silero VAD accepts there).
CHUNK_SAMPLES = 512
_CONTEXT = 64


@dataclass(frozen=True)
class VadOptions:
    """How chunk probabilities become speech segments."""

    # A chunk with probability above this starts or continues speech.
    threshold: float = 0.5
    # Speech ends only after probability stays below this (hysteresis); None = threshold - 0.15.
    neg_threshold: float | None = None
    # Segments shorter than this are dropped.
    min_speech_ms: int = 250
    # Silence shorter than this does not split a segment.
    min_silence_ms: int = 100
    # Each segment is widened by this much on both sides.
    pad_ms: int = 30


@dataclass(frozen=True)
class SpeechSegment:
    """A span of speech in seconds from the start of the audio."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class VoiceActivityDetector:
    """Silero VAD on ONNX Runtime with explicit stream state."""

    key = "vad"

    def __init__(self, session, spec: dict | None = None, options: VadOptions | None = None) -> None:
        self._session = session
        self.options = options or VadOptions()
        self.reset()

    @classmethod
    def from_bundle(cls, bundle, options: VadOptions | None = None) -> VoiceActivityDetector:
        spec = bundle.spec(cls.key)
        return cls(bundle.session(spec["file"]), spec, options)

    def reset(self) -> None:
        """Forget the recurrent state and context (start of a new stream)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def chunk_probability(self, chunk: np.ndarray) -> float:
        """Speech probability of the next 512-sample chunk of a 16 kHz stream.

        Raises:
            InputError: the chunk is not exactly 512 samples or holds NaN/Inf.
        """
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if x.size != CHUNK_SAMPLES:
            raise InputError(f"VAD chunks must be {CHUNK_SAMPLES} samples at 16 kHz (32 ms), got {x.size}: buffer the stream into {CHUNK_SAMPLES}-sample chunks")
        if not np.all(np.isfinite(x)):
            raise InputError("VAD chunk contains NaN or Inf samples: clean the signal before passing it")
        inp = np.concatenate([self._context, x])[None, :]
        out, self._state = self._session.run(None, {"input": inp, "state": self._state, "sr": np.array(SAMPLE_RATE, dtype=np.int64)})
        self._context = x[-_CONTEXT:].copy()
        return float(out.reshape(-1)[0])

    def probabilities(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Per-chunk speech probabilities over a whole clip (state is reset first).

        Raises:
            InputError: wrong rate, empty audio or NaN/Inf samples.
        """
        x = check_pcm(pcm, sample_rate, name="VAD input")
        self.reset()
        pad = (-x.size) % CHUNK_SAMPLES
        x = np.pad(x, (0, pad))
        probs = np.array([self.chunk_probability(x[i:i + CHUNK_SAMPLES]) for i in range(0, x.size, CHUNK_SAMPLES)], dtype=np.float32)
        self.reset()
        return probs

    def segments(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[SpeechSegment]:
        """Speech segments of a whole clip (empty list for silence or noise).

        Raises:
            InputError: wrong rate, empty audio or NaN/Inf samples.
        """
        probs = self.probabilities(pcm, sample_rate)
        duration = np.asarray(pcm).shape[0] / SAMPLE_RATE
        return segments_from_probabilities(probs, self.options, duration)


def segments_from_probabilities(probs: np.ndarray, options: VadOptions, duration: float) -> list[SpeechSegment]:
    """Hysteresis over chunk probabilities -> padded, merged segments in seconds."""
    step = CHUNK_SAMPLES / SAMPLE_RATE
    high = options.threshold
    low = options.neg_threshold if options.neg_threshold is not None else max(high - 0.15, 0.01)
    raw: list[list[float]] = []
    start: float | None = None
    silence_since: float | None = None
    for i, p in enumerate(probs):
        t = i * step
        if start is None:
            if p >= high:
                start, silence_since = t, None
            continue
        if p >= low:
            silence_since = None
        elif silence_since is None:
            silence_since = t
        elif t + step - silence_since >= options.min_silence_ms / 1000.0:
            raw.append([start, silence_since])
            start, silence_since = None, None
    if start is not None:
        raw.append([start, silence_since if silence_since is not None else len(probs) * step])
    pad = options.pad_ms / 1000.0
    merged: list[SpeechSegment] = []
    for s, e in raw:
        if e - s < options.min_speech_ms / 1000.0:
            continue
        s, e = max(0.0, s - pad), min(duration, e + pad)
        if merged and s <= merged[-1].end:
            merged[-1] = SpeechSegment(merged[-1].start, max(merged[-1].end, e))
        else:
            merged.append(SpeechSegment(round(s, 3), round(e, 3)))
    return merged
