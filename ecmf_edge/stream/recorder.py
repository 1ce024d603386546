"""Writing annotated frames to a video file, stopping cleanly (not the stream) on a full disk.

OpenCV's ``VideoWriter.write`` reports nothing when the disk fills up, so the recorder
checks the free space of the target's file system about once a second and stops
with a one-line error when it runs low. Problems never raise into the stream: they end
the recording, are logged once, and are kept in :attr:`VideoRecorder.error`.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported on the first frame
    import cv2

__all__ = ["VideoRecorder", "FOURCC"]

logger = logging.getLogger("ecmf_edge")

# Container suffix -> codec.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoRecorder:
    """Lazily opened video writer (the first frame fixes the size)."""

    def __init__(self, path: str | Path, fps: float = 10.0, *, min_free_bytes: int = 64 << 20,
                 disk_usage: Callable[[str], tuple] | None = None) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.min_free_bytes = int(min_free_bytes)
        self._disk_usage = disk_usage  # None: shutil.disk_usage
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._next_check = 0.0
        # Frames written; the one-line reason recording stopped (None while fine).
        self.frames = 0
        self.error: str | None = self.check()

    def check(self) -> str | None:
        """Why recording to this path cannot work (unknown suffix, missing or unwritable folder), or None."""
        if self.path.suffix.lower() not in FOURCC:
            return f"cannot record to {self.path}: use a .mp4 or .avi file name"
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            return f"cannot record to {self.path}: folder {folder} does not exist (create it or choose another path)"
        if not os.access(folder, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            return f"cannot record to {self.path}: it is not writable (choose another path)"
        return None

    def _stop(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
            logger.warning("%s", reason)
        self.close()

    def _space_ok(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + 1.0
        try:
            free = (self._disk_usage or shutil.disk_usage)(str(self.path.parent if str(self.path.parent) else "."))[2]
        except OSError:
            return True
        if free < self.min_free_bytes:
            self._stop(f"recording to {self.path} stopped: the disk is full ({free >> 20} MiB free); the stream goes on")
            return False
        return True

    def write(self, frame: np.ndarray) -> bool:
        """Append one BGR frame; False once recording has stopped (see :attr:`error`)."""
        import cv2

        if self.error is not None:
            return False
        if not self._space_ok():
            return False
        if self._writer is None:
            h, w = frame.shape[:2]
            self._size = (w, h)
            # VideoWriter_fourcc, not VideoWriter.fourcc: tests replace the VideoWriter class with a stand-in
            codec = FOURCC[self.path.suffix.lower()]
            fourcc = cv2.VideoWriter_fourcc(*codec)  # type: ignore[attr-defined]  # real, but missing from opencv's stubs
            writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not writer.isOpened():
                writer.release()
                self._stop(f"cannot record to {self.path}: OpenCV could not open a video writer there "
                           "(try an .avi file name or another folder)")
                return False
            self._writer = writer
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        try:
            self._writer.write(frame)
        except (OSError, cv2.error) as exc:  # ENOSPC, a vanished folder, a failing encoder
            detail = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:120]
            self._stop(f"recording to {self.path} stopped: {detail} (free some disk space or choose another path); "
                       "the stream goes on")
            return False
        self.frames += 1
        return True

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.release()
            except OSError as exc:  # flushing the last frames onto a full disk
                logger.warning("finishing the recording %s failed: %s", self.path, exc.strerror or exc)
