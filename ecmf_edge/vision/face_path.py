"""The per-frame face path of a stream: tracked faces -> aligned crops -> face-encoder features, and the focus.

One :class:`FacePath` per stream (it carries the tracks). The focus face is encoded at most every
``period_s`` of stream time and the other people's at most every ``others_period_s``, the faces due in a frame in one batched call; between encodings a face
keeps its newest features while its box follows every frame. Each person's features are corrected for their
resting face (:mod:`ecmf_edge.vision.resting_face`) as they are encoded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecmf_edge.events import as_box
from ecmf_edge.people import FaceEntry, choose_focus, focus_reason
from ecmf_edge.vision.alignment import align_face
from ecmf_edge.vision.resting_face import RestingFaces
from ecmf_edge.vision.tracking import FaceTracker

__all__ = ["FacePath", "FaceStep"]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@dataclass(frozen=True, eq=False)
class FaceStep:
    """What one frame gave."""

    # Every tracked face in view, largest first (at most max_people).
    people: tuple[FaceEntry, ...]
    # The focus person's entry, or None (nobody in view, or the chosen track id is not in view).
    focus: FaceEntry | None
    # Why there is no focus face (None when there is one).
    reason: str | None
    # Faces left out because of max_people.
    skipped: int
    # face_detect (finding the faces: full detection or tracking) and face_encode (when faces were encoded), ms.
    latency_ms: dict[str, float] = field(default_factory=dict)
    # The focus face's detector score and FER2013 expression probabilities.
    score: float = 0.0
    expression: dict[str, float] = field(default_factory=dict)
    # Whether the full detector ran on this frame.
    detected: bool = False


class FacePath:
    """Tracks, encodes and picks the focus face frame by frame (not thread-safe: one per stream)."""

    def __init__(self, detector: Any, encoder: Any, *, focus: str | int = "largest", max_people: int = 8,
                 detect_every: int = 10, buffer_frames: int = 30, period_s: float = 0.1,
                 others_period_s: float = 0.2, resting_face: bool | None = None, calibrate_s: float | None = None) -> None:
        self.tracker = FaceTracker(detector, detect_every=detect_every, buffer_frames=buffer_frames,
                                   max_people=max_people)
        self.encoder = encoder
        self.focus = focus
        self.period_s = float(period_s)
        # People other than the focus only feed their own labels: they are encoded less often.
        self.others_period_s = max(float(others_period_s), self.period_s)
        self._encoded: dict[int, tuple[float, np.ndarray, dict[str, float]]] = {}
        self._focus_id: int | None = None
        # Per-person resting-face corrections (none when the encoder's bundle carries no statistics).
        self.resting = RestingFaces(getattr(encoder, "resting_face", None), enabled=resting_face)
        if calibrate_s is not None:
            self.resting.calibrate(calibrate_s)

    @classmethod
    def from_options(cls, detector: Any, encoder: Any, options: Any) -> FacePath:
        """A face path with a :class:`~ecmf_edge.stream.options.StreamOptions`' people settings."""
        return cls(detector, encoder, focus=options.focus, max_people=options.max_people,
                   detect_every=options.detect_every, buffer_frames=options.track_buffer_frames,
                   period_s=options.face_period_s, others_period_s=1.0 / options.people_encoder_hz,
                   resting_face=options.resting_face, calibrate_s=options.calibrate_s)

    def step(self, image: np.ndarray, t: float) -> FaceStep:
        """The faces of the next frame (BGR uint8) at stream time ``t``."""
        started = time.perf_counter()
        tracking = self.tracker.update(image, t)
        latency = {"face_detect": _ms(started)}
        faces = tracking.faces
        live = {tf.id for tf in faces}
        for gone in set(self._encoded) - live:
            del self._encoded[gone]
        self.resting.forget(live)
        if not faces:
            self._focus_id = None
            return FaceStep((), None, "no face in the frame", tracking.skipped, latency, detected=tracking.detected)
        def period(track_id: int) -> float:
            return self.period_s if track_id == self._focus_id or len(faces) == 1 else self.others_period_s

        due = [tf for tf in faces if tf.id not in self._encoded or t - self._encoded[tf.id][0] >= period(tf.id) - 1e-6]
        if due:
            started = time.perf_counter()
            size = self.encoder.input_size
            out = self.encoder.encode([align_face(image, tf.face, size=size) for tf in due])
            # the focus is known from the last frame (a new face is the focus when it is the only one)
            focus_id = self._focus_id if self._focus_id in live else (faces[0].id if len(faces) == 1 else None)
            for k, tf in enumerate(due):
                # one second of a stream counts as one view of the face (consecutive frames are nearly the same)
                views = min(1.0, t - self._encoded[tf.id][0]) if tf.id in self._encoded else period(tf.id)
                token = self.resting.correct(tf.id, out.features[k], float(t), views, focus=tf.id == focus_id)
                self._encoded[tf.id] = (float(t), token, {label: float(p) for label, p in zip(out.labels, out.probs[k])})
            latency["face_encode"] = _ms(started)
        people = tuple(FaceEntry(id=tf.id, box=as_box(tf.face.box), features=self._encoded[tf.id][1],
                                 since_t=tf.since_t, encoded_t=self._encoded[tf.id][0]) for tf in faces)
        chosen = choose_focus(people, self.focus, self._focus_id, image.shape)
        self._focus_id = chosen.id if chosen is not None else None
        if chosen is None:
            return FaceStep(people, None, focus_reason(self.focus), tracking.skipped, latency, detected=tracking.detected)
        face = next(tf.face for tf in faces if tf.id == chosen.id)
        return FaceStep(people, chosen, None, tracking.skipped, latency, float(face.score), self._encoded[chosen.id][2],
                        tracking.detected)
