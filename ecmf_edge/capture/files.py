"""Video and audio files as stream sources, played in real time or as fast as they are consumed.

Real time (``realtime=True``) behaves like a device: a frame or a piece of audio
becomes available at its position in the file measured from the stream start, and a
reader that falls behind skips to the newest frame (video) or loses the oldest audio
beyond ``buffer_s`` (audio), exactly as with a camera and a microphone. Fast playback
(``realtime=False``) hands out every frame and every sample in order as soon as it is
asked for: results are then reproducible and the run takes as long as the processing.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, load_audio
from ecmf_edge.capture.base import AudioChunk, AudioSource, Frame, SourceEnded, VideoSource
from ecmf_edge.capture.clock import Clock
from ecmf_edge.errors import InputError

if TYPE_CHECKING:  # imported when a file is opened
    import cv2

__all__ = ["VideoFileSource", "AudioFileSource"]

logger = logging.getLogger("ecmf_edge")


class VideoFileSource(VideoSource):
    """Frames of a video file with their file timestamps as stream time."""

    def __init__(self, path: str | Path, realtime: bool = True, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self.name = self.path.name
        self.live = bool(realtime)
        self.fps = 0.0
        self._cap: cv2.VideoCapture | None = None
        self._next = 0  # index of the next frame to decode
        self.dropped = 0

    def open(self) -> None:
        """Open the file.

        Raises:
            InputError: missing or unreadable file (naming the fix).
        """
        import cv2

        from ecmf_edge.capture.video import probe_video

        info = probe_video(self.path)  # raises InputError with the fix
        self.fps = info.fps if info.fps > 0 else 30.0
        if info.fps <= 0:
            logger.warning("%s declares no frame rate: assuming 30 fps", self.name)
        self._cap = cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():  # pragma: no cover - probe_video opened it a moment ago
            raise InputError(f"{self.path} could not be opened as a video: check the file")

    def _decode(self, cap: cv2.VideoCapture) -> np.ndarray:
        ok, image = cap.read()
        if not ok or image is None:
            if self._next == 0:
                raise InputError(f"{self.path} contains no decodable video frames: re-encode it with "
                                 f"`ffmpeg -i {self.path.name} out.mp4`")
            raise SourceEnded(self._next / self.fps)
        self._next += 1
        return image

    def read(self, timeout: float) -> Frame | None:
        """The next frame (fast) or the newest frame that is due (real time).

        Raises:
            SourceEnded: the file has no more frames.
            InputError: the file has no decodable frame at all.
        """
        if self._cap is None:
            self.open()
        cap = self._cap
        assert cap is not None  # open() sets it or raises
        now = self.clock.now()
        t0 = self.t0 if self.t0 is not None else now
        if self.live:
            due = int(np.floor((now - t0) * self.fps))  # newest frame whose time has come
            if due < self._next:
                wait = (t0 + self._next / self.fps) - now
                if wait > timeout:
                    self.clock.sleep(timeout)
                    return None
                self.clock.sleep(wait)
            while self._next < due:  # behind: skip frames without decoding them
                if not cap.grab():
                    raise SourceEnded(self._next / self.fps)
                self._next += 1
                self.dropped += 1
        index = self._next
        image = self._decode(cap)
        t = index / self.fps
        captured = t0 + t if self.live else self.clock.now()
        return Frame(t, captured, image, index)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def stats(self) -> dict:
        return {"frames": self._next, "dropped": self.dropped, "fps": self.fps}


class AudioFileSource(AudioSource):
    """16 kHz chunks of an audio file, or of a video file's sound (any container, codec, rate and channel
    count; decoded and resampled on load)."""

    def __init__(self, path: str | Path, realtime: bool = True, clock: Clock | None = None, chunk_s: float = 0.128,
                 buffer_s: float = 10.0, align_to_video: bool = False) -> None:
        """``align_to_video``: the file is a video and its sound starts at its first frame's time (see
        :func:`ecmf_edge.audio.media.decode_audio`)."""
        super().__init__(clock)
        self.align_to_video = bool(align_to_video)
        self.path = Path(path)
        self.name = self.path.name
        self.live = bool(realtime)
        self.chunk = max(1, int(chunk_s * SAMPLE_RATE))
        self.buffer = max(self.chunk, int(buffer_s * SAMPLE_RATE))
        self._pcm: np.ndarray | None = None
        self._pos = 0
        # Samples skipped because the reader fell more than buffer_s behind real time.
        self.dropped_samples = 0

    def open(self) -> None:
        """Read and resample the whole file.

        Raises:
            InputError: missing, unreadable or empty file, or one without sound.
            DependencyError: PyAV is needed for this file and not installed.
        """
        if self.align_to_video:
            from ecmf_edge.audio.media import decode_audio

            self._pcm = decode_audio(self.path, SAMPLE_RATE, align_to_video=True)
        else:
            self._pcm = load_audio(self.path)

    @property
    def duration(self) -> float:
        return 0.0 if self._pcm is None else self._pcm.size / SAMPLE_RATE

    def read(self, timeout: float) -> AudioChunk | None:
        """The next chunk (fast) or the audio that is due (real time).

        Raises:
            SourceEnded: the whole file was read.
        """
        if self._pcm is None:
            self.open()
        pcm = self._pcm
        assert pcm is not None  # open() sets it or raises
        total = pcm.size
        if self._pos >= total:
            raise SourceEnded(total / SAMPLE_RATE)
        now = self.clock.now()
        t0 = self.t0 if self.t0 is not None else now
        end = min(total, self._pos + self.chunk)
        if self.live:
            available = min(total, int((now - t0) * SAMPLE_RATE))
            if available - self._pos > self.buffer:  # fell behind: lose the oldest audio, like a microphone ring
                skip = available - self.buffer - self._pos
                self._pos += skip
                self.dropped_samples += skip
                end = min(total, self._pos + self.chunk)
                logger.warning("%s: reader fell behind real time, %d samples skipped", self.name, skip)
            if available < end:  # not due yet: wait for it, at most `timeout`
                wait = t0 + end / SAMPLE_RATE - now
                if wait > timeout:
                    self.clock.sleep(timeout)
                    return None
                self.clock.sleep(wait)
        start = self._pos
        self._pos = end
        captured = t0 + end / SAMPLE_RATE if self.live else self.clock.now()
        return AudioChunk(start / SAMPLE_RATE, captured, pcm[start:end].copy())

    def stats(self) -> dict:
        return {"samples": self._pos, "dropped_samples": self.dropped_samples}
