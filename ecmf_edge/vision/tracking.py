"""Faces tracked across frames: a track id per person, and face detection amortised by tracking.

The full detector (MTCNN's three stages over an image pyramid) runs every ``detect_every``
frames, or sooner: when there is no track yet, when a tracked face is lost, and when the
picture changes outside the tracked faces (someone may have come in). On the frames between,
the tracker (norfair's Kalman filter; detections matched to tracks by how far the face's centre
moved, in face sizes) predicts where each face
went and O-Net alone re-places it and its landmarks (:meth:`FaceDetector.refine`), which costs
one 48x48 crop per face. Tracks survive ``buffer_frames`` frames without a match (a short
occlusion, people crossing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ecmf_edge.errors import DependencyError, InputError
from ecmf_edge.vision.face_detector import Face, as_bgr

__all__ = ["TrackedFace", "TrackingResult", "FaceTracker", "require_norfair", "grey_thumbnail"]

# Side of the grey thumbnail compared between frames to notice a change outside the tracked faces.
_THUMB = (64, 48)
# A thumbnail pixel changed when its grey level moved by more than this.
_CHANGED_LEVEL = 24
# Around each tracked face the change check ignores the person: this many face heights above and below
# (the body moves with the face) and face widths to each side.
_ABOVE, _BELOW, _BESIDE = 0.75, 3.0, 2.0
# Changed thumbnail pixels that mean something new: about a 70x70 px face in a 640x480 frame.
_CHANGED_PIXELS = 48


def grey_thumbnail(image: np.ndarray, size: tuple[int, int] = _THUMB) -> np.ndarray:
    """A small grey copy (int16 grey levels, ``size`` = (width, height)) of a BGR, grey or BGRA uint8 image,
    for telling whether the picture changed.

    Raises:
        InputError: the image is not an accepted uint8 array.
    """
    small = cv2.resize(as_bgr(image), size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)


def require_norfair() -> Any:
    """The norfair module (``norfair-enough``, a core dependency).

    Raises:
        DependencyError: it is not installed.
    """
    try:
        import norfair
    except ImportError:
        raise DependencyError("face tracking needs norfair: run `pip install norfair-enough` "
                              "(it comes with `pip install ecmf-edge`)") from None
    return norfair


@dataclass(frozen=True, eq=False)
class TrackedFace:
    """One person's face in the current frame."""

    # Track id, stable while the person stays in view (and through gaps of up to buffer_frames frames).
    id: int
    # The face as placed in this frame (box, score, landmarks).
    face: Face
    # Stream time the track was first seen, seconds.
    since_t: float


@dataclass(frozen=True, eq=False)
class TrackingResult:
    """What :meth:`FaceTracker.update` found in one frame."""

    # Faces of this frame, largest first, at most max_people.
    faces: tuple[TrackedFace, ...]
    # Faces seen but left out because of max_people.
    skipped: int
    # Whether the full detector ran on this frame (False: tracked boxes re-placed by O-Net).
    detected: bool


def face_distance(candidates: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """(n, m) distances between detected boxes and tracks' predicted boxes, rows of (x1, y1, x2, y2): how far
    the centres are apart, in sizes of the detected face. Unlike IoU it still matches a face that comes back
    from behind someone a little away from where its track was predicted (a predicted box can shrink while
    unseen, and then no longer overlaps)."""
    cand = candidates.reshape(-1, 4)
    objs = objects.reshape(-1, 4)
    cc = (cand[:, :2] + cand[:, 2:]) / 2.0
    oc = (objs[:, :2] + objs[:, 2:]) / 2.0
    size = np.maximum(np.maximum(cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]), 1.0)
    return np.linalg.norm(cc[:, None, :] - oc[None, :, :], axis=2) / size[:, None]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _overlapping(faces: list[Face], limit: float = 0.5) -> bool:
    """Whether two of the faces are mostly the same box."""
    return any(_iou(a.box, b.box) > limit for i, a in enumerate(faces) for b in faces[i + 1:])


class FaceTracker:
    """Per-stream face tracker (not thread-safe: one per stream, fed frames in order)."""

    def __init__(self, detector: Any, *, detect_every: int = 10, buffer_frames: int = 30, max_people: int = 8,
                 detect_on_change: bool = True, max_shift: float = 1.0) -> None:
        """``detector``: a :class:`~ecmf_edge.vision.face_detector.FaceDetector`.

        Raises:
            InputError: an option is out of range.
            DependencyError: norfair is not installed.
        """
        for name, value, meaning in (("detect_every", detect_every, ""), ("max_people", max_people, ""),
                                     ("buffer_frames", buffer_frames, " (frames a track survives unseen)")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}={value!r} is invalid: use a positive integer{meaning}")
        if not 0.0 < max_shift <= 5.0:
            raise InputError(f"max_shift={max_shift!r} is invalid: use a value in (0, 5] (face sizes a face may move "
                             "from its track's prediction and still match)")
        norfair = require_norfair()
        self.detector = detector
        self.detect_every, self.max_people = int(detect_every), int(max_people)
        self.detect_on_change = bool(detect_on_change)
        self._Detection = norfair.Detection
        from norfair.distances import VectorizedDistance

        # norfair's constructor takes a distance by name or a per-pair function; the vectorised centre distance is
        # set on the tracker afterwards (the attribute its matching reads).
        self._tracker = norfair.Tracker(distance_function="iou", distance_threshold=float(max_shift),
                                        hit_counter_max=int(buffer_frames), initialization_delay=0)
        self._tracker.distance_function = VectorizedDistance(face_distance)
        self._frame = 0
        self._since_detect = 0
        self._lost = False
        self._thumb: np.ndarray | None = None
        self._thumb_boxes: list[tuple[float, float, float, float]] = []
        self._since: dict[int, float] = {}
        # Full detections run so far (for benchmarks and tests).
        self.detections = 0

    def _changed(self, bgr: np.ndarray, boxes: list[tuple[float, ...]]) -> bool:
        """Whether the picture changed outside the tracked faces since the last full detection."""
        if self._thumb is None:
            return True
        moved = np.abs(grey_thumbnail(bgr) - self._thumb) > _CHANGED_LEVEL
        sx, sy = _THUMB[0] / bgr.shape[1], _THUMB[1] / bgr.shape[0]
        # Each person where they are and where they were at the last detection (what they uncovered since):
        # the face, the hair around it and the body below it.
        for x1, y1, x2, y2 in [*boxes, *self._thumb_boxes]:
            w, h = x2 - x1, y2 - y1
            moved[max(0, int((y1 - _ABOVE * h) * sy)):max(0, int(np.ceil((y2 + _BELOW * h) * sy))),
                  max(0, int((x1 - _BESIDE * w) * sx)):max(0, int(np.ceil((x2 + _BESIDE * w) * sx)))] = False
        return int(moved.sum()) >= _CHANGED_PIXELS

    def _remember(self, bgr: np.ndarray, faces: list[Face]) -> None:
        self._thumb = grey_thumbnail(bgr)
        self._thumb_boxes = [face.box for face in faces]

    def update(self, image: np.ndarray, t: float) -> TrackingResult:
        """Track the faces of the next frame (BGR, grey or BGRA uint8) at stream time ``t``.

        Raises:
            InputError: the image is not an accepted uint8 array.
        """
        bgr = as_bgr(image)
        self._frame += 1
        tracked = [obj for obj in self._tracker.tracked_objects if obj.hit_counter_is_positive]
        predicted = [tuple(float(v) for v in obj.estimate.reshape(-1)) for obj in tracked]
        # With no track, an unchanged picture still holds no face: the change check stands in for the detector.
        detect = (self._lost or self._since_detect + 1 >= self.detect_every
                  or (self.detect_on_change and self._changed(bgr, predicted)))
        faces: list[Face] = []
        if not detect and predicted:
            refined = self.detector.refine(bgr, predicted)
            faces = [face for face in refined if face is not None]
            # A face lost, or two tracks drawn onto one face (people crossing): look at the whole frame now.
            detect = len(faces) < len(refined) or _overlapping(faces)
        if detect:
            faces = self.detector.detect(bgr)
            self.detections += 1
            self._since_detect = 0
            self._remember(bgr, faces)
        else:
            self._since_detect += 1
        faces.sort(key=lambda f: f.area, reverse=True)
        kept, skipped = faces[: self.max_people], max(0, len(faces) - self.max_people)
        tag = self._frame
        detections = [self._Detection(points=np.array([[f.box[0], f.box[1]], [f.box[2], f.box[3]]], dtype=np.float64),
                                      data=(tag, f)) for f in kept]
        active = self._tracker.update(detections=detections)
        # A tracked face whose own box left the frame is lost only when it is not re-placed, so the next
        # frame runs the detector.
        self._lost = len(active) > len(kept)
        result = []
        for obj in active:
            data = obj.last_detection.data if obj.last_detection is not None else None
            if data is None or data[0] != tag:
                continue  # kept alive by the buffer but not seen in this frame
            self._since.setdefault(int(obj.id), float(t))
            result.append(TrackedFace(id=int(obj.id), face=data[1], since_t=self._since[int(obj.id)]))
        live = {int(obj.id) for obj in self._tracker.tracked_objects}
        for gone in set(self._since) - live:
            del self._since[gone]
        result.sort(key=lambda tf: tf.face.area, reverse=True)
        return TrackingResult(faces=tuple(result), skipped=skipped, detected=detect)
