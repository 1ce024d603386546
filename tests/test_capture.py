"""Capture sources: camera watchdog and reconnects, microphone ring/resampling/errors, file playback, clock."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
import time

import numpy as np
import pytest

from ecmf_edge.audio.io import resample
from ecmf_edge.capture import (
    AudioFileSource,
    CameraOptions,
    CameraSource,
    FakeCamera,
    FakeMicrophone,
    ManualClock,
    MicrophoneOptions,
    MicrophoneSource,
    MonotonicClock,
    SourceEnded,
    VideoFileSource,
)
from ecmf_edge.capture.microphone import load_sounddevice
from ecmf_edge.capture.resampler import StreamingResampler
from ecmf_edge.capture.ring import AudioRing
from ecmf_edge.errors import DependencyError, DeviceError, InputError

FAST_WATCH = CameraOptions(stall_timeout_s=0.3, backoff_s=0.05, max_backoff_s=0.1, max_reconnects=2)


def _read_for(source, seconds, timeout=0.05):
    frames, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = source.read(timeout)
        if frame is not None:
            frames.append(frame)
    return frames


# ---------------------------------------------------------------- clock, ring, resampler
def test_clock_sleep_is_cut_short_by_stop_and_manual_clock_moves_only_when_told():
    clock, stop = MonotonicClock(), threading.Event()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert clock.sleep(5.0, stop) is True
    assert time.monotonic() - started < 4.0, "hang: the sleep waited out its 5 s instead of returning on stop"
    manual = ManualClock(10.0)
    woke = []
    sleeper = threading.Thread(target=lambda: woke.append(manual.sleep(1.0)))
    sleeper.start()
    time.sleep(0.05)
    assert not woke and manual.now() == 10.0
    manual.advance(1.5)
    sleeper.join(1.0)
    assert woke == [False] and manual.now() == 11.5


def test_ring_drops_the_oldest_samples_and_counts_them(speech):
    ring = AudioRing(1000)
    ring.write(speech[:600], when=1.0)
    assert ring.write(speech[600:1500], when=2.0) == 500  # 1500 written into 1000: the first 500 are gone
    position, got = ring.read(2000, timeout=0.0)
    assert position == 500 and np.array_equal(got, speech[500:1500])
    assert ring.overflows == 1 and ring.dropped_samples == 500 and ring.last_write == 2.0
    assert ring.read(10, timeout=0.01) is None


@pytest.mark.parametrize("rate", [48000, 44100, 8000])
def test_streaming_resampler_matches_whole_signal_resampling(speech, rate):
    device = resample(speech, 16000, rate)  # the speech as a device at `rate` would deliver it
    whole = resample(device, rate, 16000)
    r = StreamingResampler(rate)
    sizes = np.random.default_rng(1).integers(100, 2000, size=400)
    pieces, start = [], 0
    for n in sizes:
        pieces.append(r.process(device[start:start + n]))
        start += n
        if start >= device.size:
            break
    streamed = np.concatenate(pieces)
    assert whole.size - streamed.size < 40
    assert np.max(np.abs(streamed - whole[:streamed.size])) < 1e-5


# ---------------------------------------------------------------- camera
def test_camera_delivers_the_newest_frames_and_counts_the_dropped(face_frames):
    fake = FakeCamera(face_frames, fps=30)
    cam = CameraSource(0, FAST_WATCH, opener=fake)
    cam.open()
    cam.start(time.monotonic())
    try:
        first = _read_for(cam, 0.3)
        time.sleep(0.3)  # a slow reader: frames pile up and only the newest is kept
        after = _read_for(cam, 0.2)
    finally:
        cam.close()
    assert len(first) >= 5 and after
    assert all(a.t < b.t and a.index < b.index for a, b in zip(first + after, (first + after)[1:]))
    assert cam.stats()["dropped"] >= 5
    assert after[0].index - first[-1].index >= 5  # the frames in between were skipped, not queued
    assert first[0].image.shape == (480, 640, 3)


def test_no_camera_at_that_index_is_a_one_line_device_error():
    with pytest.raises(DeviceError, match=r"no camera at index 3: .*ecmf-edge doctor.*--video FILE"):
        CameraSource(3, opener=FakeCamera([np.zeros((8, 8, 3), np.uint8)], absent=True)).open()
    import glob

    if glob.glob("/dev/video9"):
        pytest.skip("this machine has /dev/video9")
    with pytest.raises(DeviceError, match=r"no camera at index 9") as info:
        CameraSource(9).open()  # the real cv2.VideoCapture
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="camera index -1 is invalid"):
        CameraSource(-1)


def test_camera_that_stalls_is_reconnected_and_recovers(face_frames, caplog):
    fake = FakeCamera(face_frames, fps=30, stall_after=6)
    cam = CameraSource(0, FAST_WATCH, opener=fake)
    cam.open()
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        cam.start(time.monotonic())
        try:
            frames = _read_for(cam, 1.2)
        finally:
            cam.close()
    assert cam.reconnects == 1 and fake.opens == 2
    assert len(frames) > 10, "frames resume after the reconnect"
    gaps = np.diff([f.t for f in frames])
    assert gaps.max() > 0.3, "the stall shows as a gap in frame times"
    assert any("delivers no new frames" in r.message and "reconnecting" in r.message for r in caplog.records)


def test_camera_that_freezes_on_one_image_is_detected(face_frames, caplog):
    fake = FakeCamera(face_frames, fps=30, stall_after=4, freeze=True)
    cam = CameraSource(0, FAST_WATCH, opener=fake)
    cam.open()
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        cam.start(time.monotonic())
        try:
            frames = _read_for(cam, 1.0)
        finally:
            cam.close()
    assert cam.repeated > 3 and cam.reconnects == 1
    assert len({f.index for f in frames}) == len(frames)  # a repeated image is never delivered twice
    assert any("repeats the same frame" in r.message for r in caplog.records)


def test_camera_that_dies_gives_up_with_a_one_line_error(face_frames):
    fake = FakeCamera(face_frames, fps=30, die_after=5)
    cam = CameraSource(0, FAST_WATCH, opener=fake)
    cam.open()
    cam.start(time.monotonic())
    started = time.monotonic()
    try:
        with pytest.raises(DeviceError, match=r"camera 0 delivers no new frames and 2 reconnect\(s\) failed.*--video FILE"):
            while time.monotonic() - started < 5:
                cam.read(0.05)
    finally:
        cam.close()
    assert fake.opens == 3  # the first open and two failed reconnects


# ---------------------------------------------------------------- microphone
def _mic_read_all(mic, seconds):
    chunks, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunk = mic.read(0.05)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def test_microphone_chunks_are_16k_and_stamped_with_stream_time(speech):
    fake = FakeMicrophone(speech, 16000, speed=4.0)
    mic = MicrophoneSource("default", backend=fake)
    mic.open()
    mic.start(time.monotonic())
    try:
        chunks = _mic_read_all(mic, 0.5)
    finally:
        mic.close()
    pcm = np.concatenate([c.pcm for c in chunks])
    assert mic.rate == 16000 and pcm.size > 16000
    assert np.array_equal(pcm, speech[:pcm.size])
    starts = [c.t for c in chunks]
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert abs((chunks[1].t - chunks[0].t) - chunks[0].pcm.size / 16000) < 1e-6
    assert fake.streams[0].active is False  # closed


def test_microphone_at_another_rate_is_resampled(speech):
    device_pcm = resample(speech, 16000, 48000)
    fake = FakeMicrophone(device_pcm, 48000, supported_rates=(48000,), default_rate=48000, speed=4.0)
    mic = MicrophoneSource("default", backend=fake)
    mic.open()
    mic.start(time.monotonic())
    try:
        pcm = np.concatenate([c.pcm for c in _mic_read_all(mic, 0.5)])
    finally:
        mic.close()
    expected = resample(device_pcm, 48000, 16000)
    assert mic.rate == 48000 and pcm.size > 8000
    assert np.max(np.abs(pcm - expected[:pcm.size])) < 1e-4


def test_microphone_errors_are_one_line_and_name_the_fix(monkeypatch):
    with pytest.raises(DeviceError, match=r"no microphone found \(Error querying device -1\): .*--mic DEVICE.*--audio FILE"):
        MicrophoneSource("default", backend=FakeMicrophone(absent=True)).open()
    with pytest.raises(DeviceError, match=r"no microphone 'USB headset'"):
        MicrophoneSource("USB headset", backend=FakeMicrophone(absent=True)).open()
    odd = FakeMicrophone(rate=44100, default_rate=44100, supported_rates=())
    with pytest.raises(DeviceError, match=r"supports none of 16000, 44100 Hz \(Invalid sample rate.*--mic DEVICE"):
        MicrophoneSource("default", backend=odd).open()
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(DependencyError, match=r"sounddevice is not installed.*ecmf-edge\[live\]"):
        load_sounddevice()


class _NoPortAudio(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import sounddevice` fail the way it does when libportaudio is missing."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "sounddevice" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("PortAudio library not found")


def test_missing_portaudio_is_a_device_error(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    finder = _NoPortAudio()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    with pytest.raises(DeviceError, match=r"PortAudio is not available \(PortAudio library not found\).*libportaudio2"):
        MicrophoneSource("default").open()


def test_real_sounddevice_without_an_input_device():
    sd = pytest.importorskip("sounddevice")
    try:
        sd.query_devices(None, kind="input")
        pytest.skip("this machine has a microphone")
    except (sd.PortAudioError, ValueError):
        pass
    with pytest.raises(DeviceError, match=r"no microphone found .*--audio FILE") as info:
        MicrophoneSource("default").open()
    assert "\n" not in str(info.value)


def test_microphone_overflow_is_counted_and_reported(speech, caplog):
    fake = FakeMicrophone(speech, 16000, speed=40.0, loop=True, overflow_every=3)
    mic = MicrophoneSource("default", MicrophoneOptions(buffer_s=0.2), backend=fake)
    mic.open()
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        mic.start(time.monotonic())
        try:
            time.sleep(0.4)  # nobody reads: about 16 s of audio arrive into a 0.2 s ring
            chunk = mic.read(0.1)
        finally:
            mic.close()
    stats = mic.stats()
    assert chunk is not None and stats["overflows"] > 3 and stats["dropped_samples"] > 16000
    assert mic.portaudio_overflows >= 1
    assert chunk.t > 1.0, "after an overflow the chunk time skips the lost audio"
    assert sum("overflowed" in r.message for r in caplog.records) == 1


def test_microphone_that_stops_delivering_raises():
    mic = MicrophoneSource("default", MicrophoneOptions(stall_timeout_s=0.3),
                           backend=FakeMicrophone(np.zeros(16000, np.float32), stop_after_s=0.05))
    mic.open()
    mic.start(time.monotonic())
    try:
        with pytest.raises(DeviceError, match="stopped delivering audio for 0.3 s"):
            for _ in range(40):
                mic.read(0.05)
    finally:
        mic.close()


# ---------------------------------------------------------------- files
def test_video_file_fast_playback_gives_every_frame_then_ends(face_video):
    src = VideoFileSource(face_video, realtime=False)
    src.open()
    src.start(time.monotonic())
    frames = []
    with pytest.raises(SourceEnded) as end:
        while True:
            frames.append(src.read(0.1))
    src.close()
    assert [f.index for f in frames] == list(range(20))
    assert np.allclose([f.t for f in frames], np.arange(20) / 10.0)
    assert end.value.end_t == pytest.approx(2.0)
    assert src.live is False


def test_video_file_real_time_playback_keeps_pace_and_skips_when_behind(face_video):
    src = VideoFileSource(face_video, realtime=True)
    src.open()
    t0 = time.monotonic()
    src.start(t0)
    got = []
    try:
        while True:
            frame = src.read(0.05)
            if frame is not None:
                got.append((time.monotonic() - t0, frame))
                time.sleep(0.35 if len(got) == 5 else 0.0)  # one slow step: frames 5 and 6 are skipped
    except SourceEnded:
        pass
    finally:
        src.close()
    for wall, frame in got:
        assert wall >= frame.t - 0.01, "no frame is handed out before its time"
    assert 1.85 < got[-1][0] < 2.4
    assert src.dropped >= 2 and len(got) == 20 - src.dropped


def test_audio_file_fast_and_real_time(speech_wav, speech):
    fast = AudioFileSource(speech_wav, realtime=False)
    fast.open()
    fast.start(time.monotonic())
    chunks = []
    with pytest.raises(SourceEnded) as end:
        while True:
            chunks.append(fast.read(0.1))
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), speech)
    assert end.value.end_t == pytest.approx(speech.size / 16000)
    live = AudioFileSource(speech_wav, realtime=True)
    live.open()
    t0 = time.monotonic()
    live.start(t0)
    got = 0
    while got < 8000:
        chunk = live.read(0.05)
        if chunk is not None:
            assert time.monotonic() - t0 >= chunk.end_t - 0.01
            got += chunk.pcm.size
    assert time.monotonic() - t0 >= 0.5


def test_missing_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        VideoFileSource(tmp_path / "nope.mp4").open()
    with pytest.raises(InputError, match="does not exist"):
        AudioFileSource(tmp_path / "nope.wav").open()
    (tmp_path / "bad.avi").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="could not be opened as a video"):
        VideoFileSource(tmp_path / "bad.avi").open()
