"""The sound of any common media file, through PyAV (FFmpeg): wav, mp3, m4a/aac, flac, ogg/opus,
webm, mp4, mkv, flv ... decoded and resampled to 16 kHz mono float32.

For a video with its own sound, :func:`decode_audio` can align the samples to the video's
frames by their presentation timestamps: sample 0 is then the time of the first video frame
(audio that starts later is preceded by silence, audio that starts earlier is trimmed), so
the audio and frame clocks of a stream agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecmf_edge.errors import DependencyError, InputError
from ecmf_edge.modalities import SAMPLE_RATE

__all__ = ["MediaInfo", "probe_media", "decode_audio", "MEDIA_SUFFIXES"]

# File name endings `ecmf-edge label` takes as media when it searches folders.
MEDIA_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".oga", ".webm", ".mp4", ".m4v", ".mkv",
                  ".mov", ".avi", ".flv", ".wma", ".wmv", ".mpg", ".mpeg", ".3gp", ".ts")


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds."""

    path: Path
    # Seconds (the container's duration, or the longest stream's).
    duration: float
    has_video: bool
    has_audio: bool
    # Frames per second of the video stream (0 without video or when undeclared).
    fps: float = 0.0
    # Sample rate and channels of the first audio stream (0 without audio).
    audio_rate: int = 0
    audio_channels: int = 0
    # Codec names, e.g. "h264" / "aac".
    video_codec: str = ""
    audio_codec: str = ""


def _av():
    try:
        import av
    except ImportError:
        raise DependencyError("PyAV is not installed: run `pip install av` (it comes with `pip install 'ecmf-edge[asr]'`)") from None
    return av


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise InputError(f"media file {path} does not exist: check the path")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not a readable media file ({type(exc).__name__}): check the file or convert it with "
                         f"`ffmpeg -i {path.name} out.mp4`") from None


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def probe_media(path: str | Path) -> MediaInfo:
    """Streams, duration and rates of a media file.

    Raises:
        InputError: missing or unreadable file.
        DependencyError: PyAV is not installed.
    """
    path = Path(path)
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = container.duration / 1e6 if container.duration else 0.0
        if not duration:
            duration = max([_seconds(s.duration, s.time_base) or 0.0 for s in (video, audio) if s is not None] or [0.0])
        fps = float(video.average_rate) if video is not None and video.average_rate else 0.0
        return MediaInfo(path, float(duration), video is not None, audio is not None, fps,
                         int(audio.rate or 0) if audio is not None else 0,
                         int(audio.channels or 0) if audio is not None else 0,
                         video.codec_context.name if video is not None else "", audio.codec_context.name if audio is not None else "")


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, *, align_to_video: bool = False) -> np.ndarray:
    """The first audio stream of a media file as float32 mono at ``sample_rate``.

    ``align_to_video``: sample 0 is the presentation time of the first video frame (see module doc).

    Raises:
        InputError: missing or unreadable file, no audio stream, or no decodable samples.
        DependencyError: PyAV is not installed.
    """
    av = _av()
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            kinds = "a video without sound" if container.streams.video else "no audio stream"
            raise InputError(f"{path} has {kinds}: give the sound as a separate file (--audio) or leave it out (--no-audio)")
        stream = container.streams.audio[0]
        video_start = None
        if align_to_video and container.streams.video:
            v = container.streams.video[0]
            video_start = _seconds(v.start_time, v.time_base)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=int(sample_rate))
        chunks: list[np.ndarray] = []
        first_time = None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise InputError(f"the sound of {path} cannot be decoded ({type(exc).__name__}): convert it with "
                                 f"`ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`") from None
            # a damaged tail: keep what was decoded
    pcm = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if pcm.size == 0:
        raise InputError(f"{path} contains no audio samples: record or choose a non-empty file")
    if not np.all(np.isfinite(pcm)):
        raise InputError(f"the sound of {path} decodes to NaN/Inf samples: re-encode it with `ffmpeg -i {path.name} out.wav`")
    if video_start is not None and first_time is not None:
        offset = int(round((first_time - video_start) * sample_rate))
        if offset > 0:
            pcm = np.concatenate([np.zeros(offset, np.float32), pcm])
        elif offset < 0:
            pcm = pcm[-offset:]
    return pcm
