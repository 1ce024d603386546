"""Several people in view: which face the fused label follows (the focus), and each face's own label.

Used by the stream's face stage and fusion tick and by ``Recognizer.predict``, so a face gives the
same per-person result everywhere: the fusion head with the face as its only input.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecmf_edge.events import Person, as_box
from ecmf_edge.modalities import MODALITIES

__all__ = ["FaceEntry", "choose_focus", "people_results", "focus_reason", "FRAME_ALONE_REASON", "frame_alone"]

# The current "largest" focus is kept while its face has at least this share of the largest face's area,
# so two people of about the same size do not swap the fused label back and forth.
_KEEP_AREA = 0.75
# The current "center" focus is kept while no face is nearer the centre by more than this share of the
# frame's shorter side.
_KEEP_CENTER = 0.05

# Why a label is withheld when the whole-frame token is the only input: the fusion head was trained on
# face, speech and text samples whose frame token came from the same face image, never on scenes alone.
FRAME_ALONE_REASON = "the whole frame alone gives no emotion label: no face, voice or text"


@dataclass(frozen=True, eq=False)
class FaceEntry:
    """One face of a frame as the face stage hands it to the fusion tick."""

    id: int
    box: tuple[float, float, float, float]
    # Face-encoder features of this person's newest encoding.
    features: np.ndarray
    # Stream time the track began, seconds.
    since_t: float
    # Stream time of the frame the features were computed from.
    encoded_t: float = 0.0

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0


def choose_focus(entries: Sequence[Any], focus: str | int, current: int | None,
                 frame_shape: tuple[int, ...]) -> Any | None:
    """The entry whose face the fused label uses; ``entries`` have ``id``, ``box`` (and ``area``/``center``).

    ``focus``: "largest", "center" or a track id (None when that person is not in view). ``current``:
    the id chosen last time, kept unless another face is clearly larger / nearer the centre.
    """
    if not entries:
        return None
    if not isinstance(focus, str):
        return next((e for e in entries if e.id == focus), None)
    held = next((e for e in entries if e.id == current), None)
    if focus == "center":
        cy, cx = frame_shape[0] / 2.0, frame_shape[1] / 2.0

        def distance(e: Any) -> float:
            x, y = e.center
            return float(np.hypot(x - cx, y - cy))

        best = min(entries, key=distance)
        if held is not None and distance(held) <= distance(best) + _KEEP_CENTER * min(frame_shape[:2]):
            return held
        return best
    best = max(entries, key=lambda e: e.area)
    if held is not None and held.area >= _KEEP_AREA * best.area:
        return held
    return best


def focus_reason(focus: str | int) -> str:
    """Why the face is absent when people are in view but none is the focus."""
    return f"person {focus} (the focus) is not in view"


def people_results(entries: Sequence[FaceEntry], fusion: Callable[[Mapping[str, np.ndarray | None]], Any],
                   cache: dict[int, tuple[float, Person]] | None = None, now_t: float = 0.0) -> tuple[Person, ...]:
    """Each face's own label: the fusion head with that face as its only input.

    ``cache`` (per stream) maps a track id to the result of its last features, so a face encoded at a
    lower rate than the ticks is not fused again until it has new features.
    """
    people = []
    for entry in entries:
        key = entry.encoded_t
        hit = cache.get(entry.id) if cache is not None else None
        if hit is not None and hit[0] == key:
            label, confidence, probabilities = hit[1].label, hit[1].confidence, hit[1].probabilities
        else:
            result = fusion({m: (entry.features if m == "face" else None) for m in MODALITIES})
            probs = np.asarray(result.probabilities, dtype=np.float64)
            best = int(np.argmax(probs))
            label, confidence = result.labels[best], float(probs[best])
            probabilities = {name: float(p) for name, p in zip(result.labels, probs)}
        person = Person(id=entry.id, box=as_box(entry.box), label=label, confidence=confidence,
                        probabilities=probabilities, tracked_s=max(0.0, now_t - entry.since_t))
        if cache is not None:
            cache[entry.id] = (key, person)
        people.append(person)
    if cache is not None:
        for gone in set(cache) - {e.id for e in entries}:
            del cache[gone]
    return tuple(people)


def frame_alone(present: Sequence[str]) -> bool:
    """Whether the whole-frame token is the only present modality (no label is given then)."""
    return tuple(present) == ("frame",)
