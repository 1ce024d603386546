"""A live camera through ``cv2.VideoCapture``: a grabber thread keeps only the newest frame.

A supervisor thread watches the grabber. When frames stop, or the camera keeps
returning the very same image (a frozen driver), it reconnects with exponential
backoff; when every reconnect fails it gives up with a one-line
:class:`~ecmf_edge.errors.DeviceError` that :meth:`CameraSource.read` raises, so the
stream can mark video absent and go on with the other modalities.

OpenCV captures are not thread-safe, so each capture is owned by exactly one grabber
thread, which also releases it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecmf_edge.capture.base import Frame, LatestSlot, VideoSource
from ecmf_edge.capture.clock import Clock
from ecmf_edge.errors import DeviceError, InputError

__all__ = ["CameraOptions", "CameraSource", "NO_CAMERA_HINT"]

logger = logging.getLogger("ecmf_edge")

NO_CAMERA_HINT = "connect one or pick another index with --camera N (list them with `ecmf-edge doctor`), or use --video FILE"


@dataclass(frozen=True)
class CameraOptions:
    """How a camera is opened and watched."""

    # Requested frame size in pixels (0 keeps the driver's default).
    width: int = 640
    height: int = 480
    # Requested frame rate (0 keeps the driver's default).
    fps: float = 30.0
    # No new frame (or only identical frames) for this long counts as a stall.
    stall_timeout_s: float = 2.0
    # Wait before the first reconnect; doubles per failed attempt up to max_backoff_s.
    backoff_s: float = 0.5
    # Longest wait between reconnect attempts.
    max_backoff_s: float = 4.0
    # Consecutive failed reconnects before the camera is given up.
    max_reconnects: int = 4
    # Treat a run of bit-identical frames as a frozen driver (real sensors never repeat exactly);
    # turn off for virtual cameras that show a still picture.
    detect_repeats: bool = True
    # OpenCV capture API (cv2.CAP_ANY = 0, cv2.CAP_V4L2 = 200, ...).
    api_preference: int = 0


def _signature(image: np.ndarray) -> bytes:
    """A cheap fingerprint: identical frames give identical bytes; sensor noise changes them."""
    return np.ascontiguousarray(image[::16, ::16]).tobytes()


def _default_opener(api_preference: int) -> Callable[[int], Any]:
    def open_capture(index: int):
        import cv2

        return cv2.VideoCapture(index, api_preference)

    return open_capture


class CameraSource(VideoSource):
    """Frames from a camera index, newest only, with stall detection and reconnects.

    ``opener(index)`` returns a ``cv2.VideoCapture``-like object (``isOpened``, ``read``,
    ``set``, ``release``); tests pass :class:`~ecmf_edge.capture.fake.FakeCamera`'s.
    """

    # close() may be called while another thread is in read().
    close_is_thread_safe = True

    def __init__(self, index: int = 0, options: CameraOptions | None = None, clock: Clock | None = None,
                 opener: Callable[[int], Any] | None = None) -> None:
        """Raises:
            InputError: the index is not a non-negative integer.
        """
        super().__init__(clock)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"camera index {index!r} is invalid: use 0, 1, ... (or --video FILE for a file)")
        self.index = int(index)
        self.name = f"camera {self.index}"
        self.options = options or CameraOptions()
        self._opener = opener or _default_opener(self.options.api_preference)
        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._cap = None
        self._supervisor: threading.Thread | None = None
        self._grabber: threading.Thread | None = None
        self._last_new = 0.0
        self._gen_frames = 0
        self._repeats = 0
        self._count = 0
        # Times the camera was reconnected after a stall.
        self.reconnects = 0
        # Frames that repeated the previous image exactly (not delivered).
        self.repeated = 0
        # Why no new frames arrive right now ("camera 0 delivers no new frames: reconnecting ..."), None while fine.
        self.problem: str | None = None
        self._outage_started: float | None = None

    # -- connection -------------------------------------------------------------------------
    def _open_capture(self):
        try:
            cap = self._opener(self.index)
        except Exception as exc:  # cv2.error and driver errors: treated as "not there"
            logger.debug("opening %s failed: %s", self.name, exc)
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        import cv2

        opts = self.options
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, opts.width), (cv2.CAP_PROP_FRAME_HEIGHT, opts.height),
                            (cv2.CAP_PROP_FPS, opts.fps)):
            if value:
                cap.set(prop, float(value))
        return cap

    def open(self) -> None:
        """Open the camera.

        Raises:
            DeviceError: no camera at this index (one line naming --video FILE and `ecmf-edge doctor`).
        """
        self._cap = self._open_capture()
        if self._cap is None:
            raise DeviceError(f"no camera at index {self.index}: {NO_CAMERA_HINT}")

    def start(self, t0: float) -> None:
        super().start(t0)
        if self._cap is None:
            self.open()
        self._supervisor = threading.Thread(target=self._supervise, name="ecmf-camera", daemon=True)
        self._supervisor.start()

    # -- threads ----------------------------------------------------------------------------
    def _grab(self, cap, generation: int) -> None:
        previous = None
        try:
            while not self._stop.is_set() and generation == self._generation:
                ok, image = cap.read()
                now = self.clock.now()
                if not ok or image is None:
                    self.clock.sleep(0.005, self._stop)
                    continue
                signature = _signature(image) if self.options.detect_repeats else None
                if signature is not None and signature == previous:
                    self.repeated += 1
                    self._repeats += 1
                    continue
                previous = signature
                with self._lock:
                    if generation != self._generation:
                        break
                    self._last_new = now
                    self._gen_frames += 1
                    self._repeats = 0
                    self._count += 1
                    index = self._count
                    back, self._outage_started = self._outage_started, None
                    self.problem = None
                if back is not None:
                    logger.warning("%s is back after %.1f s without frames", self.name, now - back)
                self._slot.put(Frame(now - (self.t0 or 0.0), now, image, index))
        finally:
            cap.release()

    def _start_grabber(self, cap) -> None:
        with self._lock:
            self._generation += 1
            self._gen_frames = 0
            self._repeats = 0
            self._last_new = self.clock.now()
            generation = self._generation
        self._grabber = threading.Thread(target=self._grab, args=(cap, generation), name="ecmf-camera-grab", daemon=True)
        self._grabber.start()

    def _retire_grabber(self) -> None:
        with self._lock:
            self._generation += 1
        if self._grabber is not None:
            self._grabber.join(1.0)

    def _supervise(self) -> None:
        opts = self.options
        attempts = 0
        cap, self._cap = self._cap, None
        while not self._stop.is_set():
            self._start_grabber(cap)
            while not self._stop.wait(0.02):
                with self._lock:
                    delivered, since = self._gen_frames, self.clock.now() - self._last_new
                    repeating = self._repeats > 0
                if delivered:
                    attempts = 0
                if since > opts.stall_timeout_s:
                    break
            if self._stop.is_set():
                return
            what = "repeats the same frame" if repeating else "delivers no new frames"
            with self._lock:
                first = self._outage_started is None
                if first:
                    self._outage_started = self.clock.now() - opts.stall_timeout_s
                self.problem = f"{self.name} {what}: reconnecting"
            if first:  # one warning per outage; the attempts themselves are logged at INFO
                logger.warning("%s %s for %.1f s: reconnecting (up to %d attempts)", self.name, what,
                               opts.stall_timeout_s, opts.max_reconnects)
            self._retire_grabber()
            cap = None
            while cap is None:
                attempts += 1
                if attempts > opts.max_reconnects:
                    error = DeviceError(
                        f"{self.name} {what} and {opts.max_reconnects} reconnect(s) failed: check its cable and that no "
                        "other program uses it, or use --video FILE")
                    self.problem = str(error)
                    self._slot.fail(error)  # read() raises it; the reader reports it
                    return
                delay = min(opts.backoff_s * 2 ** (attempts - 1), opts.max_backoff_s)
                logger.info("%s %s for %.1f s: reconnecting in %.1f s (attempt %d of %d)", self.name, what,
                            opts.stall_timeout_s, delay, attempts, opts.max_reconnects)
                if self.clock.sleep(delay, self._stop):
                    return
                cap = self._open_capture()
            self.reconnects += 1
            logger.info("%s reopened (reconnect %d)", self.name, self.reconnects)

    # -- reading ----------------------------------------------------------------------------
    def read(self, timeout: float) -> Frame | None:
        """Newest frame not read yet, or None after ``timeout`` seconds.

        Raises:
            DeviceError: the camera stalled and every reconnect failed.
        """
        return self._slot.get(timeout)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._generation += 1
        for thread in (self._supervisor, self._grabber):
            if thread is not None and thread is not threading.current_thread():
                thread.join(0.5)
        if self._cap is not None:  # opened but never started
            self._cap.release()
            self._cap = None

    def stats(self) -> dict:
        return {"frames": self._count, "dropped": self._slot.dropped, "repeated": self.repeated, "reconnects": self.reconnects}
