"""``EmotionEvent``: what the recognizer reports, per fusion tick or per ``predict`` call."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ecmf_edge.modalities import MODALITIES

__all__ = ["EmotionEvent", "Person", "Box", "as_box", "SCHEMA_VERSION", "EVENT_SCHEMA_PATH", "LATENCY_KEYS", "UNCERTAIN",
           "event_schema"]

# Version of the JSON form of events (``to_dict``): the minor number grows when keys are added, the major
# number when a key changes meaning or goes away. Every event carries it as "schema_version".
SCHEMA_VERSION = "1.0"
# The JSON Schema of that form, shipped in the package (and served by ``ecmf-edge serve`` at /schema).
EVENT_SCHEMA_PATH = Path(__file__).with_name("assets") / "event.schema.json"

# The steps whose milliseconds an event reports (``latency_ms``), in pipeline order.
LATENCY_KEYS: tuple[str, ...] = ("face_detect", "face_encode", "scene_check", "frame_encoder", "vad", "audio_encoder",
                                 "prosody", "speech_head", "asr", "llm", "text_encoder", "fusion", "capture_to_event")
# The label of an event whose held label's probability is below ``StreamOptions.min_confidence``.
UNCERTAIN = "uncertain"

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


def _maybe(value: float | None, digits: int) -> float | None:
    return None if value is None else _r(value, digits)


@dataclass(frozen=True)
class Person:
    """One tracked face in view: who (track id), where, and what the face alone says.

    The label here is the fusion head's with the face as its only input; audio and text attach to the
    focus person only (``EmotionEvent.focus_id``), whose fused label is the event's ``label``.

    Attributes:
        id: track id, stable while the person stays in view (in ``predict``: 0, 1 ... largest first).
        box: (x1, y1, x2, y2) of the face in frame pixels.
        label: most probable label of the face alone (unsmoothed).
        confidence: its probability (0-1).
        probabilities: probability (0-1) of every label of the stream's label set, from the face alone.
        tracked_s: seconds since the track began (0 in ``predict``).
    """

    id: int
    box: Box
    label: str
    confidence: float
    probabilities: dict[str, float]
    tracked_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "box": [_r(v, 1) for v in self.box], "label": self.label,
                "confidence": _r(self.confidence), "probabilities": {k: _r(v) for k, v in self.probabilities.items()},
                "tracked_s": _r(self.tracked_s, 3)}


@dataclass(frozen=True)
class EmotionEvent:
    """One recognition result: per fusion tick of a stream, or per ``predict`` call. Treat the dicts as read-only.

    ``to_dict()`` gives the JSON form that ``serve``, ``run --json`` and ``--log-events`` send; its schema
    (fixed keys, types, units) is :data:`EVENT_SCHEMA_PATH`, version :data:`SCHEMA_VERSION`, served at ``/schema``.

    Attributes:
        timestamp: stream time in seconds since the stream started (the file position for file playback;
            the recognizer clock for ``predict``).
        label: the label to show: the smoothed, held label; ``"uncertain"`` when its smoothed probability is
            below ``StreamOptions.min_confidence``; None when there is no evidence at all (no modality present,
            or the fusion step failed: ``absent`` says why).
        confidence: smoothed probability (0-1) of the held label; 0 when ``label`` is None.
        probabilities: smoothed probability (0-1) of every label of the stream's label set (the bundle's, or
            the application's with ``StreamOptions.labels``); every label is always there, all 0 when ``label``
            is None. They sum to 1 otherwise.
        modality_weights: the weight (0-1) the fusion head gave each present modality; they sum to 1.
        present: the modalities that took part, in the fusion head's order (``MODALITIES``).
        absent: why each other modality was left out (no face, no speech, stale, a language the text branch
            does not read, a stage failed ...); the key "fusion" appears when the fusion step itself failed.
        transcript: the newest utterance's words as heard, when its text is still fresh: also when the text
            branch left it out (another language), so an application can show what was said. None otherwise.
        latency_ms: milliseconds per pipeline step at this tick (face_detect, face_encode, scene_check,
            frame_encoder, vad, audio_encoder, prosody, speech_head, asr, llm, text_encoder, fusion) and
            capture_to_event (capture of the freshest input to this event). In JSON every key is always there,
            null for a step that gave nothing to this event.
        index: running number of the event in its stream, from 1 (0 for ``predict``).
        label_changed: True when ``label`` differs from the previous event's.
        raw_label: the unsmoothed top label of this tick (None without evidence).
        uncertain: True when ``label`` is "uncertain" (``raw_label`` still says what the model read).
        relabelled: True when ``probabilities`` are over the application's label set (``StreamOptions.labels``),
            folded from the bundle's and renormalised.
        ages_s: age in seconds of the feature each modality contributed (or would have); in JSON every
            modality is there, null before anything was seen.
        face_box: (x1, y1, x2, y2) of the focus face in frame pixels, or None.
        language: language of the newest utterance ("en", "de" ...; "unsure" when Whisper's guess had a
            probability below 0.5), None before any speech was transcribed.
        language_probability: Whisper's probability (0-1) for its language guess, None before any speech.
        people: every tracked face in view, largest first (at most ``max_people``), each with its own label.
        focus_id: track id of the focus person, whose face the fused label used (None without one).
        people_skipped: faces seen but not tracked because of ``max_people``.
        stream: the name of the stream the event belongs to (``Recognizer.stream(stream_id=...)``, ``serve
            --name``; by default the input file's stem or "camera0", made unique in the process); None for
            ``predict``.
    """

    timestamp: float
    label: str | None
    confidence: float
    probabilities: dict[str, float]
    modality_weights: dict[str, float]
    present: tuple[str, ...]
    absent: dict[str, str]
    transcript: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    index: int = 0
    label_changed: bool = False
    raw_label: str | None = None
    ages_s: dict[str, float] = field(default_factory=dict)
    face_box: Box | None = None
    language: str | None = None
    language_probability: float | None = None
    people: tuple[Person, ...] = ()
    focus_id: int | None = None
    people_skipped: int = 0
    stream: str | None = None
    uncertain: bool = False
    relabelled: bool = False

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
            "modality_weights": {m: _r(self.modality_weights.get(m, 0.0)) for m in MODALITIES},
            "present": list(self.present),
            "absent": dict(self.absent),
            "transcript": self.transcript,
            "latency_ms": {k: _maybe(self.latency_ms.get(k), 2) for k in LATENCY_KEYS},
            "ages_s": {m: _maybe(self.ages_s.get(m), 3) for m in MODALITIES},
            "face_box": None if self.face_box is None else [_r(v, 1) for v in self.face_box],
            "language": self.language,
            "language_probability": None if self.language_probability is None else _r(self.language_probability),
            "people": [p.to_dict() for p in self.people],
            "focus_id": self.focus_id,
            "people_skipped": self.people_skipped,
            "stream": self.stream,
            "uncertain": self.uncertain,
            "relabelled": self.relabelled,
            "schema_version": SCHEMA_VERSION,
        }


@cache
def event_schema() -> dict[str, Any]:
    """The JSON Schema of ``EmotionEvent.to_dict()`` (and of the ``end`` message of ``serve``)."""
    import json

    return json.loads(EVENT_SCHEMA_PATH.read_text(encoding="utf-8"))
