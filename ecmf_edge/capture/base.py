"""What every capture source yields and the interface a stream reads it through.

Times come in two kinds: ``t`` is *stream time* (seconds since the stream started for
live devices, the position in the file for file sources) and ``captured`` is the
:class:`~ecmf_edge.capture.clock.Clock` time the data became available, used to measure
capture-to-event latency.

A source is opened (errors surface here), started with the stream's start time, read
with a timeout (``None`` = nothing new yet; :class:`SourceEnded` at the end of a file;
:class:`~ecmf_edge.errors.DeviceError` when a device died) and closed.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ecmf_edge.capture.clock import DEFAULT_CLOCK, Clock

__all__ = ["Frame", "AudioChunk", "SourceEnded", "VideoSource", "AudioSource", "LatestSlot"]


class SourceEnded(Exception):
    """A file source has no more data (not an error: the stream drains and ends)."""

    def __init__(self, end_t: float) -> None:
        super().__init__(f"source ended at {end_t:.3f} s")
        # Stream time just after the last item (last frame time + one frame, or the audio length).
        self.end_t = float(end_t)


@dataclass(frozen=True, eq=False)
class Frame:
    """One BGR video frame."""

    # Stream time of the frame, seconds.
    t: float
    # Clock time the frame was grabbed (latency is measured from here).
    captured: float
    # uint8 (H, W, 3) BGR image; treat as read-only.
    image: np.ndarray
    # Running number of the frame from its source (gaps mean frames were dropped).
    index: int


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A run of 16 kHz mono float32 samples."""

    # Stream time of the first sample, seconds.
    t: float
    # Clock time the last sample became available.
    captured: float
    # float32 (N,) samples in [-1, 1] at 16 kHz.
    pcm: np.ndarray

    @property
    def end_t(self) -> float:
        """Stream time just after the last sample."""
        return self.t + self.pcm.size / 16000.0


class _Source:
    """Common lifecycle of sources: ``open`` -> ``start(t0)`` -> ``read`` ... -> ``close``."""

    # Human-readable name used in messages ("camera 0", "clip.avi").
    name: str = "source"
    # True for devices and real-time playback (frames are dropped under load); False for fast file playback.
    live: bool = True

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or DEFAULT_CLOCK
        self.t0: float | None = None

    def open(self) -> None:
        """Acquire the device or file.

        Raises:
            DeviceError: the device is absent or refuses the settings.
            InputError: the file is missing or unreadable.
        """

    def start(self, t0: float) -> None:
        """Begin delivering data; ``t0`` is the stream's start on :attr:`clock`."""
        self.t0 = t0

    def close(self) -> None:
        """Release the device or file; safe to call more than once, returns promptly."""

    def stats(self) -> dict:
        """Counters for diagnostics (dropped frames, overflows, reconnects ...)."""
        return {}


class VideoSource(_Source):
    """A source of :class:`Frame` objects."""

    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None when none arrived within ``timeout`` seconds.

        Raises:
            SourceEnded: a file has no more frames.
            DeviceError: the camera stopped and could not be reconnected.
        """
        raise NotImplementedError


class AudioSource(_Source):
    """A source of :class:`AudioChunk` objects (16 kHz mono)."""

    def read(self, timeout: float) -> AudioChunk | None:
        """The next chunk, or None when no audio arrived within ``timeout`` seconds.

        Raises:
            SourceEnded: a file has no more audio.
            DeviceError: the microphone stopped.
        """
        raise NotImplementedError


class LatestSlot:
    """Holds only the newest item: writers overwrite, a reader waits for something newer.

    This is the camera's one-frame buffer: a slow reader never sees old frames, and
    how many were overwritten unread is counted in :attr:`dropped`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._seq = 0
        self._taken = 0
        self._error: Exception | None = None
        self._ended: SourceEnded | None = None
        # Items overwritten before anyone read them.
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._seq > self._taken:
                self.dropped += 1
            self._item = item
            self._seq += 1
            self._cond.notify_all()

    def fail(self, error: Exception) -> None:
        """Make the next :meth:`get` raise ``error`` (once no unread item is left)."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def end(self, end_t: float) -> None:
        """Make :meth:`get` raise :class:`SourceEnded` once no unread item is left."""
        with self._cond:
            self._ended = SourceEnded(end_t)
            self._cond.notify_all()

    def get(self, timeout: float):
        """The newest unread item, or None after ``timeout`` seconds.

        Raises:
            SourceEnded: the producer ended and everything was read.
            Exception: whatever :meth:`fail` was given, once everything was read.
        """
        with self._cond:
            if self._seq <= self._taken and self._error is None and self._ended is None:
                self._cond.wait(max(0.0, timeout))
            if self._seq > self._taken:
                self._taken = self._seq
                return self._item
            if self._error is not None:
                raise self._error
            if self._ended is not None:
                raise self._ended
            return None

    @property
    def newest(self):
        """The newest item whether read or not (None before the first)."""
        with self._cond:
            return self._item
