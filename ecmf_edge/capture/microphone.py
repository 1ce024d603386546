"""A live microphone through ``sounddevice.InputStream``: callback -> ring buffer -> 16 kHz chunks.

PortAudio calls :meth:`MicrophoneSource._callback` on its own thread with each block;
the block goes into an :class:`~ecmf_edge.capture.ring.AudioRing` at the device rate.
:meth:`MicrophoneSource.read` takes what has arrived, resamples it to 16 kHz when the
device runs at another rate, and stamps it with stream time. Overflows (PortAudio's
own, and samples the ring dropped because the reader was slow) are counted and
reported once.

``sounddevice`` is imported only when a microphone is opened; a missing package, a
missing PortAudio library, no input device or an unsupported rate are one-line errors.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE
from ecmf_edge.capture.base import AudioChunk, AudioSource
from ecmf_edge.capture.clock import Clock
from ecmf_edge.capture.resampler import StreamingResampler
from ecmf_edge.capture.ring import AudioRing
from ecmf_edge.errors import DeviceError, missing_dependency

__all__ = ["MicrophoneOptions", "MicrophoneSource", "load_sounddevice", "NO_MIC_HINT"]

logger = logging.getLogger("ecmf_edge")

NO_MIC_HINT = "plug one in or pick one with --mic DEVICE (list them with `ecmf-edge doctor`), or use --audio FILE"


@dataclass(frozen=True)
class MicrophoneOptions:
    """How a microphone is opened and read."""

    # Preferred capture rate in Hz; when the device refuses it, its default rate is used and resampled.
    sample_rate: int = SAMPLE_RATE
    # Length of one PortAudio block in milliseconds.
    block_ms: float = 32.0
    # Seconds of audio the ring buffer holds; a slower reader loses the oldest samples.
    buffer_s: float = 10.0
    # Most audio returned by one read, in seconds.
    read_s: float = 0.128
    # No audio at all for this long after start means the device stopped.
    stall_timeout_s: float = 3.0
    # Times a stopped device is reopened before it is given up (0: give up at once); `ecmf-edge run` uses 3.
    max_reconnects: int = 0
    # Wait before the first reopen; doubles per failed attempt up to max_backoff_s.
    backoff_s: float = 0.5
    max_backoff_s: float = 4.0


def load_sounddevice():
    """Import ``sounddevice``.

    Raises:
        DependencyError: the package is not installed.
        DeviceError: the PortAudio library is missing.
    """
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise DeviceError(f"PortAudio is not available ({str(exc).splitlines()[0][:120]}): install it with "
                          "`apt-get install libportaudio2` (or `brew install portaudio`), or use --audio FILE") from None
    except ImportError:
        raise missing_dependency("sounddevice", "live") from None
    return sounddevice


def _device_arg(device: Any):
    if device is None or device == "default":
        return None
    if isinstance(device, str) and device.strip().isdigit():
        return int(device)
    return device


class MicrophoneSource(AudioSource):
    """16 kHz mono chunks from an input device.

    ``backend`` is the ``sounddevice`` module or an object with the same ``query_devices``,
    ``check_input_settings``, ``InputStream`` and ``PortAudioError`` (tests pass a
    :class:`~ecmf_edge.capture.fake.FakeMicrophone`).
    """

    # close() may be called while another thread is in read().
    close_is_thread_safe = True

    def __init__(self, device: Any = "default", options: MicrophoneOptions | None = None, clock: Clock | None = None,
                 backend: Any = None) -> None:
        super().__init__(clock)
        self.device = device
        self.options = options or MicrophoneOptions()
        self.name = "microphone" if _device_arg(device) is None else f"microphone {device!r}"
        self._backend = backend
        # The backend's InputStream (sounddevice's, or a test fake's: duck-typed like the backend), None while closed.
        self._stream: Any = None
        self._ring: AudioRing | None = None
        self._resampler: StreamingResampler | None = None
        self._expected_pos = 0
        self._started_at = 0.0
        self._reported_overflows = 0
        self._attempts = 0
        self._closing = threading.Event()  # set by the final close(); cuts a reconnect's backoff short
        self._past = [0, 0]  # overflows and dropped samples of the rings before a reconnect
        # Why no audio arrives right now ("microphone stopped delivering audio: reconnecting"), None while fine.
        self.problem: str | None = None
        # Times the device was reopened after it stopped.
        self.reconnects = 0
        # Capture rate the device runs at (set by open()).
        self.rate = 0
        # Overflows PortAudio itself reported in the callback status.
        self.portaudio_overflows = 0

    def open(self) -> None:
        """Find the device, pick a rate it supports and create the input stream.

        Raises:
            DeviceError: no such input device, PortAudio missing, no supported rate, or the stream cannot be opened.
            DependencyError: sounddevice is not installed.
        """
        sd = self._backend or load_sounddevice()
        self._backend = sd
        dev = _device_arg(self.device)
        wanted = "no microphone found" if dev is None else f"no microphone {self.device!r}"
        try:
            info = sd.query_devices(dev, kind="input")
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"{wanted} ({str(exc).splitlines()[0][:100]}): {NO_MIC_HINT}") from None
        if int(info.get("max_input_channels", 0)) < 1:
            raise DeviceError(f"{self.name} ({info.get('name', '?')}) has no input channels: {NO_MIC_HINT}")
        rates = list(dict.fromkeys([int(self.options.sample_rate), int(round(float(info.get("default_samplerate", 0))))]))
        rates = [r for r in rates if r > 0]
        last = None
        for rate in rates:
            try:
                sd.check_input_settings(device=dev, channels=1, dtype="float32", samplerate=rate)
            except (sd.PortAudioError, ValueError) as exc:
                last = exc
                continue
            self.rate = rate
            break
        else:
            raise DeviceError(f"{self.name} ({info.get('name', '?')}) supports none of {', '.join(map(str, rates))} Hz "
                              f"({str(last).splitlines()[0][:80] if last else 'no rate'}): pick another device with --mic "
                              "DEVICE, or use --audio FILE")
        if self.rate != SAMPLE_RATE:
            logger.info("%s runs at %d Hz: resampling to %d Hz", self.name, self.rate, SAMPLE_RATE)
            self._resampler = StreamingResampler(self.rate, SAMPLE_RATE)
        self._ring = AudioRing(max(int(self.options.buffer_s * self.rate), 1024))
        try:
            self._stream = sd.InputStream(device=dev, channels=1, samplerate=self.rate, dtype="float32",
                                          blocksize=max(1, int(self.rate * self.options.block_ms / 1000.0)),
                                          callback=self._callback)
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"{self.name} could not be opened at {self.rate} Hz ({str(exc).splitlines()[0][:100]}): "
                              f"{NO_MIC_HINT}") from None

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread: no logging, no raising
        if status and getattr(status, "input_overflow", False):
            self.portaudio_overflows += 1
        block = np.asarray(indata, dtype=np.float32)
        mono = block[:, 0] if block.ndim == 2 and block.shape[1] == 1 else (block.mean(axis=1) if block.ndim == 2 else block)
        ring = self._ring
        if ring is not None:  # None only while a reconnect swaps devices
            ring.write(mono, self.clock.now())

    def start(self, t0: float) -> None:
        """Start capturing.

        Raises:
            DeviceError: PortAudio refuses to start the stream.
        """
        super().start(t0)
        if self._stream is None:
            self.open()
        self._started_at = self.clock.now()
        try:
            self._stream.start()
        except (self._backend.PortAudioError, ValueError) as exc:
            raise DeviceError(f"{self.name} could not be started ({str(exc).splitlines()[0][:100]}): {NO_MIC_HINT}") from None

    def read(self, timeout: float) -> AudioChunk | None:
        """The audio that arrived since the last read, as 16 kHz (None if nothing within ``timeout``).

        Raises:
            DeviceError: no audio at all for ``stall_timeout_s`` seconds.
        """
        ring = self._ring
        if ring is None:
            return None
        min_samples = max(1, int(self.rate * self.options.block_ms / 1000.0))
        got = ring.read(max(min_samples, int(self.options.read_s * self.rate)), timeout, min_samples)
        self._report_overflows()
        if got is None:
            last = ring.last_write or self._started_at
            if not ring.closed and self.clock.now() - last > self.options.stall_timeout_s:
                if self._reconnect() or self._closing.is_set():  # running again, or shutting down anyway
                    return None
                failed = f" and {self._attempts} reconnect(s) failed" if self._attempts else ""
                self.problem = (f"{self.name} stopped delivering audio for {self.options.stall_timeout_s:g} s{failed}: "
                                "check the device, or use --audio FILE")
                raise DeviceError(self.problem)
            return None
        if self.problem is not None and self._attempts:
            logger.warning("%s is back after %d reconnect(s)", self.name, self._attempts)
        self.problem, self._attempts = None, 0
        position, raw = got
        if position != self._expected_pos and self._resampler is not None:
            self._resampler.reset()  # samples were dropped: do not smear across the gap
        self._expected_pos = position + raw.size
        pcm = self._resampler.process(raw) if self._resampler is not None else raw
        if pcm.size == 0:
            return None
        t = self._started_at - (self.t0 or 0.0) + position / self.rate
        return AudioChunk(t, ring.last_write, pcm)

    def _reconnect(self) -> bool:
        """Reopen a stopped device with backoff (up to ``max_reconnects`` tries in a row); True once it runs again."""
        opts = self.options
        while self._attempts < opts.max_reconnects and not self._closing.is_set():
            self._attempts += 1
            if self._attempts == 1:
                logger.warning("%s stopped delivering audio for %g s: reconnecting (up to %d attempts)", self.name,
                               opts.stall_timeout_s, opts.max_reconnects)
            self.problem = f"{self.name} stopped delivering audio: reconnecting"
            delay = min(opts.backoff_s * 2 ** (self._attempts - 1), opts.max_backoff_s)
            if self.clock.sleep(delay, self._closing):
                return False
            self.close(final=False)  # stops the callbacks, closes the ring
            ring, self._ring = self._ring, None
            if ring is not None:  # keep its counters; open() makes a fresh ring
                self._past[0] += ring.overflows
                self._past[1] += ring.dropped_samples
            try:
                self.open()
                self._started_at = self.clock.now()
                self._expected_pos = 0
                self._stream.start()
            except (DeviceError, self._backend.PortAudioError, ValueError) as exc:
                logger.info("reopening %s failed (attempt %d of %d): %s", self.name, self._attempts, opts.max_reconnects,
                            str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
                continue
            if self._closing.is_set():  # close() ran meanwhile: do not leave the new stream running
                self.close()
                return False
            self.reconnects += 1
            logger.info("%s reopened (attempt %d)", self.name, self._attempts)
            return True
        return False

    def _report_overflows(self) -> None:
        total = self.overflows
        if total > self._reported_overflows:
            if self._reported_overflows == 0:
                ring = self._ring
                logger.warning("%s overflowed: audio was lost (%d device overflow(s), %d samples dropped because the "
                               "audio stage fell behind); later overflows are counted in stream stats", self.name,
                               self.portaudio_overflows, ring.dropped_samples if ring is not None else 0)
            self._reported_overflows = total

    @property
    def overflows(self) -> int:
        """Overflow events: PortAudio's plus the ring buffer's."""
        return self.portaudio_overflows + self._past[0] + (self._ring.overflows if self._ring is not None else 0)

    def close(self, final: bool = True) -> None:
        """Stop and release the device (``final=False``: only the current stream, for a reconnect)."""
        if final:
            self._closing.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            for step in ("stop", "close"):
                try:
                    getattr(stream, step)()
                except (self._backend.PortAudioError, RuntimeError, ValueError) as exc:
                    logger.debug("closing %s: %s", self.name, exc)
        if self._ring is not None:
            self._ring.close()

    def stats(self) -> dict:
        ring = self._ring
        # (an empty ring is falsy: test for None, or the count reads 0 whenever the reader has caught up)
        return {"rate": self.rate, "overflows": self.overflows,
                "dropped_samples": self._past[1] + (ring.dropped_samples if ring is not None else 0),
                "reconnects": self.reconnects}
