"""Reading frames from video files and images (OpenCV), with clear errors.

OpenCV signals an unreadable file by returning nothing; these helpers turn that into
an :class:`InputError` that names the file and the fix.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecmf_edge.errors import InputError

__all__ = ["VideoInfo", "probe_video", "iter_video_frames", "read_image"]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares about itself."""

    path: Path
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _open(path: Path):
    import cv2

    if not path.is_file():
        raise InputError(f"video file {path} does not exist: check the path")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        _no_video_stream(path)
        raise InputError(f"{path} could not be opened as a video: check the file or convert it with `ffmpeg -i {path.name} out.mp4`")
    return cap


def _no_video_stream(path: Path) -> None:
    """Raise the clearer error when the file is readable media with sound but no picture."""
    from ecmf_edge.audio.media import probe_media
    from ecmf_edge.errors import DependencyError

    try:
        info = probe_media(path)
    except (InputError, DependencyError):
        return
    if not info.has_video and info.has_audio:
        raise InputError(f"{path} has sound but no video stream: pass it with --audio (Python: audio=...)")


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size of a video file.

    Raises:
        InputError: missing or unreadable file.
    """
    import cv2

    path = Path(path)
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        info = VideoInfo(path, fps if np.isfinite(fps) and fps > 0 else 0.0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                         int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
    finally:
        cap.release()
    return info


def iter_video_frames(path: str | Path, sample_fps: float | None = None, max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(timestamp_seconds, bgr_frame)`` from a video file.

    Args:
        sample_fps: keep about this many frames per second (None: every frame).
        max_frames: stop after this many yielded frames.

    Raises:
        InputError: missing or unreadable file, or a file that yields no frame at all.
    """
    import cv2

    path = Path(path)
    cap = _open(path)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if np.isfinite(fps) and fps > 0 else 30.0
    step = max(1, int(round(fps / sample_fps))) if sample_fps else 1
    index = yielded = 0
    try:
        while max_frames is None or yielded < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if index % step == 0:
                yielded += 1
                yield index / fps, frame
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise InputError(f"{path} contains no decodable video frames: check the file or re-encode it with `ffmpeg -i {path.name} out.mp4`")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a BGR uint8 array.

    Raises:
        InputError: missing or undecodable file.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist: check the path")
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path} is not a readable image: use a JPEG or PNG file")
    return image
