"""Vision stages: the video reader, the per-frame face path, and the lower-rate scene (frame) path.

The reader takes frames from the camera or file and hands each one to the face stage
(detect -> align -> face encoder) and, at ``frame_encoder_hz``, to the scene stage (the
frame encoder over the whole frame). Each runs on its own thread behind a bounded queue,
so a slow frame encoder never delays the face path.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ecmf_edge.capture.base import Frame
from ecmf_edge.stream.aligner import Observation
from ecmf_edge.stream.stage import QueueStage, SourceStage
from ecmf_edge.vision.tracking import grey_thumbnail

__all__ = ["VideoReader", "FaceStage", "SceneStage", "is_blank"]

# A frame whose sampled grey levels span less than this is blank (lens covered, camera off, black video).
_BLANK_RANGE = 6


def is_blank(image: np.ndarray) -> bool:
    """Whether a frame is one flat colour (black, white ...): nothing a model can read, checked on a sparse grid."""
    sample = image[::8, ::8]
    return sample.size == 0 or int(sample.max()) - int(sample.min()) < _BLANK_RANGE


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


class FaceStage(QueueStage):
    """Tracked faces per frame -> aligned crops -> face-encoder features (the ``face`` modality).

    The work is :class:`~ecmf_edge.vision.face_path.FacePath`'s; the observation's vector is the focus
    person's features, and ``extra["people"]`` carries every tracked face for the fusion tick.
    """

    def __init__(self, *args: Any, detector: Any, encoder: Any, options: Any = None, **kwargs: Any) -> None:
        from ecmf_edge.stream.options import StreamOptions
        from ecmf_edge.vision.face_path import FacePath

        super().__init__("face", ("face",), *args, **kwargs)
        self.path = FacePath.from_options(detector, encoder, options or StreamOptions())
        # Called (on this stage's thread) when another tracked person becomes the focus: a new speaker.
        self.on_focus_change: Callable[[], None] | None = None
        self._focus_id: int | None = None

    def handle(self, frame: Frame) -> None:
        found = self.path.step(frame.image, frame.t)
        if found.focus is not None:
            if self._focus_id is not None and found.focus.id != self._focus_id and self.on_focus_change is not None:
                self.on_focus_change()
            self._focus_id = found.focus.id
        extra: dict[str, Any] = {"people": found.people, "focus_id": found.focus.id if found.focus else None}
        if found.skipped:
            extra["skipped"] = found.skipped
        if found.focus is None:
            self.post(Observation("face", frame.t, frame.captured, None, found.reason, found.latency_ms, extra))
            return
        extra.update(box=found.focus.box, score=found.score, expression=found.expression)
        self.post(Observation("face", frame.t, frame.captured, found.focus.features, None, found.latency_ms, extra))


# Thumbnail (width, height) whose mean grey-level change tells a still scene from a changed one.
_SCENE_THUMB = (32, 24)


class SceneStage(QueueStage):
    """Frame-encoder embedding of the whole frame (the ``frame`` modality).

    With ``change`` > 0 a frame whose thumbnail differs from the last encoded one by at most
    ``change`` grey levels (mean absolute difference) reuses that embedding, for at most
    ``refresh_s`` seconds: a still scene costs a resize instead of an encoder run.
    """

    def __init__(self, *args: Any, encoder: Any, change: float = 0.0, refresh_s: float = 2.0, **kwargs: Any) -> None:
        super().__init__("frame", ("frame",), *args, **kwargs)
        self.encoder = encoder
        self.change, self.refresh_s = float(change), float(refresh_s)
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None  # (t, thumbnail, embedding) of the last encoding
        # Scene updates (of ``processed``) that reused the last embedding.
        self.reused = 0

    def handle(self, frame: Frame) -> None:
        started = time.perf_counter()
        thumb = grey_thumbnail(frame.image, _SCENE_THUMB) if self.change > 0 else None
        last = self._last
        if (thumb is not None and last is not None and 0.0 <= frame.t - last[0] < self.refresh_s
                and float(np.abs(thumb - last[1]).mean()) <= self.change):
            self.reused += 1
            self.post(Observation("frame", frame.t, frame.captured, last[2], None, {"frame_encoder": 0.0,
                                                                                    "scene_check": _ms(started)}))
            return
        vector = self.encoder.encode(frame.image)[0].copy()
        if thumb is not None:
            self._last = (frame.t, thumb, vector)
        self.post(Observation("frame", frame.t, frame.captured, vector, None, {"frame_encoder": _ms(started)}))


class VideoReader(SourceStage):
    """Reads frames and distributes them; keeps the newest frame for displays."""

    def __init__(self, *args: Any, face: FaceStage | None, scene: SceneStage | None, scene_hz: float,
                 block: bool, face_hz: float | None = None, **kwargs: Any) -> None:
        super().__init__("video", ("face", "frame"), *args, **kwargs)
        self.face, self.scene = face, scene
        self.scene_period = 1.0 / scene_hz
        self.face_period = 1.0 / face_hz if face_hz else 0.0
        self.block = block
        self._next_scene_t = float("-inf")
        self._next_face_t = float("-inf")
        self._latest: Frame | None = None
        # Recent frames, so file playback (which runs ahead of the ticks) can show the frame of an event.
        self._recent: deque[Frame] = deque(maxlen=48 if block else 1)
        self._lock = threading.Lock()

    @property
    def latest(self) -> Frame | None:
        """The newest frame read (for overlays); None before the first."""
        with self._lock:
            return self._latest

    def frame_at(self, t: float) -> Frame | None:
        """The newest recent frame at or before stream time ``t`` (the oldest kept one if all are later)."""
        with self._lock:
            frames = list(self._recent)
        for frame in reversed(frames):
            if frame.t <= t + 1e-9:
                return frame
        return frames[0] if frames else None

    def handle(self, frame: Frame) -> None:
        with self._lock:
            self._latest = frame
            self._recent.append(frame)
        if is_blank(frame.image):  # no label from a black frame: both visual tokens are absent, with the reason
            reason = (f"{getattr(self.source, 'name', 'the video')} delivers blank frames (all one colour): uncover the "
                      "lens, switch on the light or check the camera")
            self.log_once(reason)
            self.post(*(Observation(modality, frame.t, frame.captured, None, reason) for modality in self.modalities))
            return
        if self.face is not None and frame.t >= self._next_face_t - 1e-6:
            self.face.submit(frame, block=self.block)
            self._next_face_t = self._next_time(self._next_face_t, frame.t, self.face_period)
        if self.scene is not None and frame.t >= self._next_scene_t - 1e-6:
            self.scene.submit(frame, block=self.block)
            self._next_scene_t = self._next_time(self._next_scene_t, frame.t, self.scene_period)

    @staticmethod
    def _next_time(scheduled: float, t: float, period: float) -> float:
        """When the next frame is due for a path read every ``period`` s: on the grid, never more than half a period late."""
        base = scheduled if scheduled > float("-inf") else t
        return max(base + period, t + 0.5 * period)

    def check_hang(self, now: float) -> str | None:
        return None  # reading is trivial; the camera has its own watchdog, and waits on full queues are not hangs

    def _ended(self, end_t: float) -> None:
        now = self.clock.now()
        # Just after the last frame's span, so a closing tick at end_t still sees the last frame.
        self.post(*(Observation(modality, end_t + 1e-3, now, None, "the video ended") for modality in self.modalities))
