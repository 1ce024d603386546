"""Scripted stand-ins for a camera and a microphone, for tests and demos without devices.

:class:`FakeCamera` is an *opener* for :class:`~ecmf_edge.capture.camera.CameraSource`:
its captures behave like ``cv2.VideoCapture`` (paced at ``fps``) and can stall, freeze
on one image, or die. :class:`FakeMicrophone` has the parts of the ``sounddevice``
module that :class:`~ecmf_edge.capture.microphone.MicrophoneSource` uses, and calls the
callback from its own thread in real time (or ``speed`` times faster). The real source
classes run unchanged on top of them, so their watchdogs and buffers are what is tested.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FakeCamera", "FakeCapture", "FakeMicrophone", "FakePortAudioError"]


class FakeCamera:
    """Opens :class:`FakeCapture` objects that play ``frames`` (BGR uint8) in a loop."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float = 30.0, *, loop: bool = True,
                 stall_after: int | None = None, stall_s: float | None = None, freeze: bool = False,
                 die_after: int | None = None, absent: bool = False) -> None:
        """Args:
            frames: the images to deliver, in order.
            fps: delivery rate of each capture.
            loop: start again at the first frame after the last (else reads fail at the end).
            stall_after: after this many delivered frames the *first* capture stops delivering,
                for ``stall_s`` seconds (None: until it is reopened).
            freeze: while stalled, keep returning the last image instead of failing reads.
            die_after: after this many delivered frames every read fails and reopening fails.
            absent: there is no camera: every open fails.
        """
        if not len(frames):
            raise ValueError("FakeCamera needs at least one frame")
        self.frames = [np.ascontiguousarray(f) for f in frames]
        self.fps = float(fps)
        self.loop = loop
        self.stall_after, self.stall_s, self.freeze = stall_after, stall_s, freeze
        self.die_after = die_after
        self.absent = absent
        self._lock = threading.Lock()
        # Frames delivered over all captures, and how often the camera was opened.
        self.delivered = 0
        self.opens = 0
        self._stalled_once = False

    @property
    def dead(self) -> bool:
        return self.die_after is not None and self.delivered >= self.die_after

    def open(self, index: int = 0) -> FakeCapture:
        """What ``cv2.VideoCapture(index)`` would return."""
        with self._lock:
            self.opens += 1
            ok = not self.absent and not self.dead
        return FakeCapture(self, ok)

    __call__ = open


class FakeCapture:
    """One open fake capture (see :class:`FakeCamera`)."""

    def __init__(self, camera: FakeCamera, opened: bool) -> None:
        self._camera = camera
        self._opened = opened
        self._next_due = time.monotonic()
        self._position = 0
        self._last: np.ndarray | None = None
        self._stalls = camera.stall_after is not None and not camera._stalled_once
        self._stall_started: float | None = None

    def isOpened(self) -> bool:
        return self._opened

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return self._camera.fps if prop == 5 else 0.0  # 5 = cv2.CAP_PROP_FPS

    def release(self) -> None:
        self._opened = False

    def _pace(self) -> None:
        delay = self._next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_due = max(self._next_due + 1.0 / self._camera.fps, time.monotonic() - 1.0 / self._camera.fps)

    def read(self) -> tuple[bool, np.ndarray | None]:
        cam = self._camera
        self._pace()
        if not self._opened or cam.dead:
            return False, None
        if self._stalls and cam.stall_after is not None and self._position >= cam.stall_after:
            cam._stalled_once = True
            if self._stall_started is None:
                self._stall_started = time.monotonic()
            if cam.stall_s is None or time.monotonic() - self._stall_started < cam.stall_s:
                return (True, self._last.copy()) if cam.freeze and self._last is not None else (False, None)
            self._stalls = False
        if not cam.loop and self._position >= len(cam.frames):
            return False, None
        image = cam.frames[self._position % len(cam.frames)]
        self._position += 1
        with cam._lock:
            cam.delivered += 1
        self._last = image
        return True, image.copy()


class FakePortAudioError(Exception):
    """What the fake raises where sounddevice raises ``PortAudioError``."""


@dataclass
class _Status:
    input_overflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow


class FakeMicrophone:
    """The ``sounddevice`` calls a microphone source makes, backed by given samples.

    After the samples run out the device delivers silence (or loops), like a real microphone.
    """

    PortAudioError = FakePortAudioError

    def __init__(self, pcm: np.ndarray | None = None, rate: int = 16000, *, supported_rates: Sequence[int] | None = None,
                 default_rate: int | None = None, absent: bool = False, loop: bool = False, speed: float = 1.0,
                 stop_after_s: float | None = None, overflow_every: int | None = None,
                 name: str = "fake microphone") -> None:
        """Args:
            pcm: mono float samples at ``rate`` Hz (None: silence).
            supported_rates: rates the device accepts (default: ``rate`` and ``default_rate``).
            default_rate: the device's default rate (default: ``rate``).
            absent: there is no input device.
            loop: repeat ``pcm`` instead of continuing with silence.
            speed: deliver this many times faster than real time.
            stop_after_s: stop calling back after this much (real) time.
            overflow_every: flag ``input_overflow`` on every n-th callback.
        """
        self.pcm = np.zeros(0, np.float32) if pcm is None else np.asarray(pcm, dtype=np.float32).reshape(-1)
        self.rate = int(rate)
        self.default_rate = int(default_rate or rate)
        self.supported_rates = tuple(supported_rates) if supported_rates is not None else (self.rate, self.default_rate)
        self.absent, self.loop, self.speed = absent, loop, float(speed)
        self.stop_after_s, self.overflow_every, self.name = stop_after_s, overflow_every, name
        # Streams created (for tests that check what was opened).
        self.streams: list[_FakeInputStream] = []

    def query_devices(self, device=None, kind: str | None = None) -> dict:
        if self.absent:
            raise FakePortAudioError("Error querying device -1")
        return {"name": self.name, "max_input_channels": 1, "default_samplerate": float(self.default_rate)}

    def check_input_settings(self, device=None, channels=None, dtype=None, extra_settings=None, samplerate=None) -> None:
        if self.absent:
            raise FakePortAudioError("Error querying device -1")
        if samplerate is not None and int(samplerate) not in self.supported_rates:
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, device=None, channels: int = 1, samplerate: float | None = None, dtype: str = "float32",
                    blocksize: int = 0, callback: Callable | None = None, **_: object) -> _FakeInputStream:
        self.check_input_settings(device, channels, dtype, samplerate=samplerate)
        rate = int(samplerate or self.default_rate)
        pcm = self.pcm
        if pcm.size and rate != self.rate:
            from ecmf_edge.audio.io import resample

            pcm = resample(pcm, self.rate, rate)
        stream = _FakeInputStream(self, pcm, rate, blocksize or rate // 50, callback)
        self.streams.append(stream)
        return stream


class _FakeInputStream:
    def __init__(self, mic: FakeMicrophone, pcm: np.ndarray, rate: int, blocksize: int, callback: Callable | None) -> None:
        self._mic, self._pcm, self.samplerate, self.blocksize = mic, pcm, rate, int(blocksize)
        self._callback = callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.callbacks = 0
        self.active = False

    def start(self) -> None:
        self.active = True
        self._thread = threading.Thread(target=self._run, name="fake-mic", daemon=True)
        self._thread.start()

    def _block(self, position: int) -> np.ndarray:
        n, pcm = self.blocksize, self._pcm
        if pcm.size == 0 or (position >= pcm.size and not self._mic.loop):
            return np.zeros(n, np.float32)
        if self._mic.loop:
            return pcm[(position + np.arange(n)) % pcm.size]
        return np.pad(pcm[position:position + n], (0, max(0, position + n - pcm.size)))

    def _run(self) -> None:
        period = self.blocksize / self.samplerate / self._mic.speed
        started = time.monotonic()
        position = 0
        while not self._stop.is_set():
            if self._mic.stop_after_s is not None and time.monotonic() - started >= self._mic.stop_after_s:
                break
            due = started + (self.callbacks + 1) * period
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            self.callbacks += 1
            every = self._mic.overflow_every
            status = _Status(bool(every and self.callbacks % every == 0))
            block = self._block(position)[:, None]
            position += self.blocksize
            if self._callback is not None:
                self._callback(block, self.blocksize, None, status)
        self.active = False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self.active = False

    def close(self) -> None:
        self.stop()
