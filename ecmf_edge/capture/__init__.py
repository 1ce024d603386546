"""Capture sources: camera, microphone, video/WAV files, scripted fakes, and the clock they share."""
from __future__ import annotations

from ecmf_edge.capture.base import AudioChunk, AudioSource, Frame, SourceEnded, VideoSource
from ecmf_edge.capture.camera import CameraOptions, CameraSource
from ecmf_edge.capture.clock import Clock, ManualClock, MonotonicClock
from ecmf_edge.capture.fake import FakeCamera, FakeMicrophone
from ecmf_edge.capture.files import AudioFileSource, VideoFileSource
from ecmf_edge.capture.microphone import MicrophoneOptions, MicrophoneSource

__all__ = [
    "AudioChunk", "AudioSource", "Frame", "SourceEnded", "VideoSource", "CameraOptions", "CameraSource",
    "Clock", "ManualClock", "MonotonicClock", "FakeCamera", "FakeMicrophone", "AudioFileSource", "VideoFileSource",
    "MicrophoneOptions", "MicrophoneSource",
]
