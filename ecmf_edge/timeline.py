"""A recorded session's events folded into a timeline: one row per step, and a summary per clip.

Events come from a fast, deterministic playback of the file (every frame and audio sample
processed, 10 fusion ticks per second of media). A step's row averages the fused
probabilities and modality weights of the ticks inside it that had any modality, lists the
modalities present at any tick, and carries the transcripts of the utterances first heard in
it. The clip's label is the argmax of the probabilities averaged over the steps that had
any modality.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.modalities import MODALITIES

__all__ = ["TimelineRow", "PersonRow", "ClipSummary", "ClipResult", "build_clip_result", "TranscriptSegment", "check_step",
           "SUMMARY_COLUMNS", "timeline_columns", "people_columns"]


def check_step(step: Any) -> float:
    """A timeline step in seconds.

    Raises:
        InputError: not a number between 0.05 and 3600.
    """
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0.05 <= float(step) <= 3600:
        raise InputError(f"step={step!r} is invalid: use seconds between 0.05 and 3600 (default 1)")
    return float(step)


@dataclass(frozen=True)
class TimelineRow:
    """One step of a clip."""

    # Step start and end, seconds of media time.
    start: float
    end: float
    # Argmax of ``probabilities``, and its value (None / 0 when no modality was present in the step).
    label: str | None
    confidence: float
    # Mean fused probability per label over the step's ticks with any modality.
    probabilities: dict[str, float]
    # Mean modality weight per modality over those ticks.
    modality_weights: dict[str, float]
    # Modalities present at any tick of the step, in the fusion head's order.
    present: tuple[str, ...]
    # Transcripts of the utterances first heard in this step (joined with " / ").
    transcript: str = ""
    # The language heard in the step (most ticks; "unsure" as in events), "" before any speech was transcribed.
    language: str = ""
    # Why the text modality was absent in the step (its most frequent reason), "" when text was present at any tick.
    text_absent_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["present"] = list(self.present)
        return out


@dataclass(frozen=True)
class PersonRow:
    """One tracked person in one step (from the face alone; audio and text attach to the focus person)."""

    start: float
    end: float
    # Track id.
    person: int
    # Argmax of ``probabilities`` and its value.
    label: str
    confidence: float
    # Mean probability per label of this person's face over the ticks of the step where it was in view.
    probabilities: dict[str, float]
    # Share of the step's fusion ticks at which this person was in view (0..1).
    seen: float
    # Share of the step's fusion ticks at which this person was the focus, whose face the fused label used (0..1).
    focus: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TranscriptSegment:
    """An utterance as the timeline saw it: when its transcript first reached the events."""

    time: float
    text: str
    language: str | None = None


@dataclass(frozen=True)
class ClipSummary:
    """One clip in one line.

    Attributes:
        file: the media file.
        label: the clip's label: argmax of the probabilities averaged over the steps that had any modality (None
            without any).
        confidence: that averaged probability.
        presence: the share of the clip's fusion ticks (0-1) at which each modality was present.
        duration_s: media duration, seconds.
        language: the language heard over most of the clip ("" when no speech was transcribed).
        real_time_factor: processing time / media duration.
        status: "ok", or the one-line error that stopped this file.

    ``to_dict()`` is the row of summary.csv / summary.jsonl / ``<name>.summary.json``: the same keys in all three,
    :data:`SUMMARY_COLUMNS` (``presence`` as ``present_<modality>``).
    """

    file: str
    label: str | None
    confidence: float
    presence: dict[str, float]
    duration_s: float
    language: str
    real_time_factor: float
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "status": self.status, "label": self.label, "confidence": self.confidence,
                "duration_s": self.duration_s, "language": self.language, "real_time_factor": self.real_time_factor,
                **{f"present_{m}": self.presence.get(m, 0.0) for m in MODALITIES}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSummary:
        """Inverse of :meth:`to_dict` (also reads the summaries of earlier versions: ``duration``, ``presence``)."""
        presence = data.get("presence") or {m: float(data.get(f"present_{m}", 0.0)) for m in MODALITIES}
        return cls(str(data["file"]), data.get("label"), float(data.get("confidence", 0.0)), dict(presence),
                   float(data.get("duration_s", data.get("duration", 0.0))), str(data.get("language", "")),
                   float(data.get("real_time_factor", 0.0)), str(data.get("status", "ok")))


# The keys of a clip's summary row, in the order of summary.csv's columns.
SUMMARY_COLUMNS: tuple[str, ...] = ("file", "status", "label", "confidence", "duration_s", "language", "real_time_factor",
                                    *(f"present_{m}" for m in MODALITIES))


@dataclass(frozen=True)
class ClipResult:
    """What labelling one recorded file gives."""

    summary: ClipSummary
    rows: tuple[TimelineRow, ...]
    labels: tuple[str, ...]
    step: float
    transcripts: tuple[TranscriptSegment, ...] = field(default_factory=tuple)
    # Per step, one row per tracked person in view (empty without faces).
    people: tuple[PersonRow, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict(), "labels": list(self.labels), "step": self.step,
                "rows": [r.to_dict() for r in self.rows], "transcripts": [asdict(t) for t in self.transcripts],
                "people": [p.to_dict() for p in self.people]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipResult:
        """Inverse of :meth:`to_dict` (results travel from worker processes and Ray actors as dicts)."""
        rows = tuple(TimelineRow(**{**r, "present": tuple(r["present"])}) for r in data["rows"])
        return cls(ClipSummary.from_dict(data["summary"]), rows, tuple(data["labels"]), float(data["step"]),
                   tuple(TranscriptSegment(**t) for t in data.get("transcripts", [])),
                   tuple(PersonRow(**p) for p in data.get("people", [])))


def timeline_columns(labels: Sequence[str]) -> tuple[str, ...]:
    """The columns of ``<name>.timeline.csv`` for a bundle's labels (the keys of ``TimelineRow.to_dict`` flattened)."""
    return ("start", "end", "label", "confidence", *(f"p_{label}" for label in labels), *(f"weight_{m}" for m in MODALITIES),
            "present", "transcript", "language", "text_absent_reason")


def people_columns(labels: Sequence[str]) -> tuple[str, ...]:
    """The columns of ``<name>.people.csv`` for a bundle's labels."""
    return ("start", "end", "person", "label", "confidence", *(f"p_{label}" for label in labels), "seen", "focus")


def _mean(dicts: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    if not dicts:
        return {}
    return {k: round(float(np.mean([d.get(k, 0.0) for d in dicts])), 6) for k in keys}


def build_clip_result(file: str | Path, events: Sequence[Any], duration: float, step: float, labels: Sequence[str],
                      processing_s: float) -> ClipResult:
    """Fold a clip's events (in time order) into its timeline and summary."""
    labels = tuple(labels)
    duration = max(float(duration), max((float(e.timestamp) for e in events), default=0.0))
    count = max(1, math.ceil(duration / step - 0.05))  # a remainder under 5 % of a step joins the last row
    buckets: list[list[Any]] = [[] for _ in range(count)]
    transcripts: list[TranscriptSegment] = []
    heard: list[list[str]] = [[] for _ in range(count)]
    previous = None
    for event in events:
        k = min(count - 1, max(0, math.ceil(float(event.timestamp) / step - 1e-9) - 1))  # tick t belongs to (k*step, (k+1)*step]
        buckets[k].append(event)
        if event.transcript and event.transcript != previous:
            transcripts.append(TranscriptSegment(round(float(event.timestamp), 3), event.transcript, event.language))
            heard[k].append(event.transcript)
        if event.transcript:
            previous = event.transcript
    rows = []
    people_rows: list[PersonRow] = []
    present_ticks: Counter = Counter()
    for k, bucket in enumerate(buckets):
        labelled = [e for e in bucket if e.present]
        for e in bucket:
            present_ticks.update(e.present)
        probs = _mean([e.probabilities for e in labelled], labels)
        weights = _mean([e.modality_weights for e in labelled], MODALITIES)
        present = tuple(m for m in MODALITIES if any(m in e.present for e in bucket))
        label = max(probs, key=probs.__getitem__) if probs else None
        start, end = round(k * step, 3), round(duration if k == count - 1 else (k + 1) * step, 3)
        languages = Counter(e.language for e in bucket if getattr(e, "language", None))
        reasons = Counter(e.absent.get("text") for e in bucket if e.absent.get("text"))
        rows.append(TimelineRow(start, end, label, round(probs[label], 6) if label else 0.0, probs, weights, present,
                                " / ".join(heard[k]), languages.most_common(1)[0][0] if languages else "",
                                reasons.most_common(1)[0][0] if reasons and "text" not in present else ""))
        people_rows.extend(_people_rows(bucket, labels, start, end))
    scored = [r.probabilities for r in rows if r.label is not None]
    clip = _mean(scored, labels)
    clip_label = max(clip, key=clip.__getitem__) if clip else None
    ticks = max(1, len(events))
    languages = Counter(e.language for e in events if getattr(e, "language", None))  # ticks since each utterance
    summary = ClipSummary(str(file), clip_label, round(clip[clip_label], 6) if clip_label else 0.0,
                          {m: round(present_ticks[m] / ticks, 4) for m in MODALITIES}, round(duration, 3),
                          languages.most_common(1)[0][0] if languages else "",
                          round(processing_s / duration, 4) if duration > 0 else 0.0)
    return ClipResult(summary, tuple(rows), labels, float(step), tuple(transcripts), tuple(people_rows))


def _people_rows(bucket: Sequence[Any], labels: tuple[str, ...], start: float, end: float) -> list[PersonRow]:
    seen: dict[int, list[dict[str, float]]] = {}
    focus: Counter = Counter()
    for event in bucket:
        for person in getattr(event, "people", ()):
            seen.setdefault(person.id, []).append(person.probabilities)
            focus[person.id] += person.id == event.focus_id
    out = []
    ticks = max(1, len(bucket))
    for pid in sorted(seen):
        probs = _mean(seen[pid], labels)
        label = max(probs, key=probs.__getitem__)
        out.append(PersonRow(start, end, pid, label, probs[label], probs, round(len(seen[pid]) / ticks, 4),
                             round(focus[pid] / ticks, 4)))
    return out
