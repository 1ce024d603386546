"""``EmotionEvent``: what the recognizer reports, per fusion tick or per ``predict`` call."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EmotionEvent", "Person", "Box", "as_box"]

# A face box in pixels: (x1, y1, x2, y2), left, top, right, bottom edges.
Box = tuple[float, float, float, float]


def as_box(values: Iterable[Any]) -> Box:
    """Four numbers (a tuple, an array row, numpy scalars) as a box of plain floats.

    Raises:
        ValueError: not exactly four values.
    """
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def _r(value: float, digits: int = 4) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


@dataclass(frozen=True)
class Person:
    """One tracked face in view: who (track id), where, and what the face alone says.

    The label here is the fusion head's with the face as its only input; audio and text attach to the
    focus person only (``EmotionEvent.focus_id``), whose fused label is the event's ``label``.
    """

    # Track id, stable while the person stays in view (in ``predict``: 0, 1 ... largest first).
    id: int
    # (x1, y1, x2, y2) of the face in frame pixels.
    box: Box
    # Most probable label of the face alone (unsmoothed).
    label: str
    # Its probability.
    confidence: float
    # Probability per bundle label, from the face alone.
    probabilities: dict[str, float]
    # Seconds since the track began (0 in ``predict``).
    tracked_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "box": [_r(v, 1) for v in self.box], "label": self.label,
                "confidence": _r(self.confidence), "probabilities": {k: _r(v) for k, v in self.probabilities.items()},
                "tracked_s": _r(self.tracked_s, 3)}


@dataclass(frozen=True)
class EmotionEvent:
    """One recognition result. Treat the dict fields as read-only.

    ``label`` is None when no modality was present at this tick (nothing to go on);
    ``absent`` then says why for each modality.
    """

    # Stream time in seconds (since the stream started; the file position for file playback).
    timestamp: float
    # The (smoothed, held) label, or None without any present modality.
    label: str | None
    # Smoothed probability of ``label`` (0 when label is None).
    confidence: float
    # Smoothed probability per bundle label.
    probabilities: dict[str, float]
    # Weight the fusion head gave each present modality (sums to 1).
    modality_weights: dict[str, float]
    # Modalities that took part, in the fusion head's order.
    present: tuple[str, ...]
    # Why each other modality was left out (no face, no speech, stale, stage failed ...); the key
    # "fusion" appears when the fusion step itself failed (label is then None).
    absent: dict[str, str]
    # The newest transcript the text modality used, if any.
    transcript: str | None = None
    # Milliseconds per stage step (face_detect, face_encode, frame_encoder, vad, audio_encoder, prosody,
    # asr, llm, text_encoder, fusion) and capture_to_event (capture of the freshest input -> this event).
    latency_ms: dict[str, float] = field(default_factory=dict)
    # Running number of the event in its stream (0 for predict()).
    index: int = 0
    # True when ``label`` differs from the previous event's.
    label_changed: bool = False
    # The unsmoothed top label of this tick (None without modalities).
    raw_label: str | None = None
    # Age in seconds of the feature each modality contributed (or would have).
    ages_s: dict[str, float] = field(default_factory=dict)
    # (x1, y1, x2, y2) of the face used, in frame pixels, if any.
    face_box: Box | None = None
    # Language detected in the newest utterance ("en", "zh" ...; "unsure" when Whisper's guess had a probability
    # below 0.5), None before any speech was transcribed.
    language: str | None = None
    # Whisper's probability for its language guess (0..1), None before any speech was transcribed.
    language_probability: float | None = None
    # Every tracked face in view, largest first (at most max_people).
    people: tuple[Person, ...] = ()
    # Track id of the focus person: the face whose features the fused label used (None without one).
    focus_id: int | None = None
    # Faces seen but left out because of max_people.
    people_skipped: int = 0
    # Which stream of the recognizer this event belongs to ("0", "1" ... or the id given to Recognizer.stream).
    stream: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (floats rounded, tuples as lists)."""
        return {
            "timestamp": _r(self.timestamp, 3),
            "index": self.index,
            "label": self.label,
            "confidence": _r(self.confidence),
            "label_changed": self.label_changed,
            "raw_label": self.raw_label,
            "probabilities": {k: _r(v) for k, v in self.probabilities.items()},
            "modality_weights": {k: _r(v) for k, v in self.modality_weights.items()},
            "present": list(self.present),
            "absent": dict(self.absent),
            "transcript": self.transcript,
            "latency_ms": {k: _r(v, 2) for k, v in self.latency_ms.items()},
            "ages_s": {k: _r(v, 3) for k, v in self.ages_s.items()},
            "face_box": None if self.face_box is None else [_r(v, 1) for v in self.face_box],
            "language": self.language,
            "language_probability": None if self.language_probability is None else _r(self.language_probability),
            "people": [p.to_dict() for p in self.people],
            "focus_id": self.focus_id,
            "people_skipped": self.people_skipped,
            "stream": self.stream,
        }
