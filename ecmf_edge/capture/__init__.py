"""Capture sources: camera, microphone, video/WAV files, scripted fakes, and the clock they share."""
from __future__ import annotations

from .base import AudioChunk, AudioSource, Frame, SourceEnded, VideoSource
from .camera import CameraOptions, CameraSource
from .clock import Clock, ManualClock, MonotonicClock
from .fake import FakeCamera, FakeMicrophone
from .files import AudioFileSource, VideoFileSource
from .microphone import MicrophoneOptions, MicrophoneSource

__all__ = [
    "AudioChunk", "AudioSource", "Frame", "SourceEnded", "VideoSource", "CameraOptions", "CameraSource",
    "Clock", "ManualClock", "MonotonicClock", "FakeCamera", "FakeMicrophone", "AudioFileSource", "VideoFileSource",
    "MicrophoneOptions", "MicrophoneSource",
]
