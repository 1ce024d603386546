"""Fault injection over the real loop: devices lost and back, bad frames, overflows, failing and hanging stages,
a slow or dead LLM, a full disk. For each fault the stream keeps emitting events from what still works, each
event says which modalities are absent and why, and the fault is logged once (not once per frame).

Everything runs the bundle's real models; devices are the fakes of ``ecmf_edge.capture.fake`` under the real
camera and microphone sources, so their watchdogs and buffers are what is tested.
"""
from __future__ import annotations

import errno
import json
import logging
import threading
import time

import cv2
import numpy as np
import pytest

from ecmf_edge.capture import CameraOptions, CameraSource, FakeCamera, FakeMicrophone, MicrophoneOptions, MicrophoneSource
from ecmf_edge.capture.files import AudioFileSource, VideoFileSource
from ecmf_edge.cli import main
from ecmf_edge.errors import DeviceError
from ecmf_edge.runtime.fusion_head import FusionHead
from ecmf_edge.stream.options import StreamOptions
from ecmf_edge.stream.pipeline import EmotionStream, StreamModels
from ecmf_edge.stream.recorder import VideoRecorder
from ecmf_edge.stream.sinks import JsonLinesSink

# A camera watchdog quick enough for tests; the backoff keeps the outage visible for a few events.
WATCH = CameraOptions(stall_timeout_s=0.3, backoff_s=0.4, max_backoff_s=0.4, max_reconnects=3)


# ---------------------------------------------------------------- fixtures and helpers


def models(bundle, parts, *, text=None, **overrides) -> StreamModels:
    from ecmf_edge.audio.vad import VoiceActivityDetector

    m = StreamModels(labels=tuple(bundle.labels), vad=VoiceActivityDetector.from_bundle(bundle), text_path=text,
                     **{**parts, **overrides})
    if text is None:
        m.unavailable["text"] = "text off in this test"
    return m


def camera(fake: FakeCamera, options: CameraOptions = WATCH) -> CameraSource:
    source = CameraSource(0, options, opener=fake)
    source.open()
    return source


def microphone(fake: FakeMicrophone, options: MicrophoneOptions | None = None) -> MicrophoneSource:
    source = MicrophoneSource("default", options, backend=fake)
    source.open()
    return source


class Events(list):
    """Events of a run, with the longest time this process went unscheduled while they were collected."""

    stall_s = 0.0


class _Heartbeat(threading.Thread):
    """Wakes every few milliseconds and records the longest it overslept: how long the machine (not the stream)
    left every thread of this process waiting. A busy 2-core machine can pause a process for a few hundred ms."""

    def __init__(self, every_s: float = 0.01) -> None:
        super().__init__(name="test-heartbeat", daemon=True)
        self.every_s, self.stall_s, self.done = every_s, 0.0, threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self.done.wait(self.every_s):
            now = time.monotonic()
            self.stall_s = max(self.stall_s, now - last - self.every_s)
            last = now


def collect(stream: EmotionStream, seconds: float) -> Events:
    """Events of a real-time stream for ``seconds``, then close it."""
    events, deadline, beat = Events(), time.monotonic() + seconds, _Heartbeat()
    beat.start()
    try:
        for event in stream:
            events.append(event)
            if time.monotonic() >= deadline:
                break
    finally:
        stream.close()
        beat.done.set()
        beat.join()
    events.stall_s = beat.stall_s
    return events


def warnings_with(caplog, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def assert_steady(events, hz: float = 10.0) -> None:
    """Events keep coming at the fusion rate: no gap longer than a few periods, beyond the time the machine itself
    paused this whole process (which a stream cannot help; a stream that waits on a stage or a device can)."""
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)
    paused = getattr(events, "stall_s", 0.0)
    assert max(np.diff(stamps)) <= 3.5 / hz + paused, (f"events stalled: gaps {np.round(np.diff(stamps), 2)} "
                                                       f"(the process itself paused at most {paused:.2f} s)")


def noisy_black(shape=(480, 640, 3), seed=0) -> np.ndarray:
    """A covered lens: nearly black, with sensor noise (so frames are never bit-identical)."""
    return np.random.default_rng(seed).integers(0, 3, size=shape, dtype=np.uint8)


# ---------------------------------------------------------------- camera
@pytest.mark.parametrize("freeze, what", [(False, "delivers no new frames"), (True, "repeats the same frame")])
def test_camera_lost_and_back(bundle, parts, face_frames, speech, caplog, freeze, what):
    fake = FakeCamera(face_frames, fps=30, stall_after=20, freeze=freeze)  # the first capture stalls for good
    mic = microphone(FakeMicrophone(speech, 16000, loop=True))
    with caplog.at_level(logging.INFO, logger="ecmf_edge"):
        events = collect(EmotionStream(models(bundle, parts), video=camera(fake), audio=mic, realtime=True), 3.0)
    assert fake.opens == 2, "one reconnect brought the camera back"
    assert_steady(events)
    reason = f"camera 0 {what}: reconnecting"
    lost = [i for i, e in enumerate(events) if e.absent.get("face") == reason]
    assert lost, [e.absent.get("face") for e in events]
    # During the outage both visual tokens carry the reason. When the camera is back, the scene (frame encoder)
    # result for its first frame may land a tick before the face detector's: only the last ticks of the outage
    # may show the frame token back while the face token still has the reason.
    same = [events[i].absent.get("frame") == reason for i in lost]
    assert same[0] and same == sorted(same, reverse=True), [events[i].absent.get("frame") for i in lost]
    assert all("frame" in events[i].present for i, s in zip(lost, same) if not s)
    before, after = events[:lost[0]], events[lost[-1] + 1:]
    assert any("face" in e.present for e in before) and sum("face" in e.present for e in after) >= 3, "video comes back"
    assert warnings_with(caplog, what) == 1, "the outage is logged once"
    assert warnings_with(caplog, "camera 0 is back after") == 1


def test_black_frames_give_no_visual_label(bundle, parts, face_frames, caplog):
    # Half a second of face, half a second of covered lens, in a loop.
    frames = face_frames[:15] + [noisy_black(seed=i) for i in range(15)]
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events = collect(EmotionStream(models(bundle, parts), video=camera(FakeCamera(frames, fps=30)), realtime=True), 2.6)
    assert_steady(events)
    blank_at = [i for i, e in enumerate(events) if "blank frames" in e.absent.get("face", "")]
    # Both visual tokens carry the reason, except on the tick where the video is back and the scene result for the
    # first face frame landed before the face detector's (the next tick then has the face token back too).
    for i in blank_at:
        if "blank frames" not in events[i].absent.get("frame", ""):
            assert "frame" in events[i].present and i + 1 < len(events), [e.absent for e in events[i - 1:i + 2]]
            assert "blank frames" not in events[i + 1].absent.get("face", ""), [e.absent for e in events[i - 1:i + 2]]
    blank = [events[i] for i in blank_at if "blank frames" in events[i].absent.get("frame", "")]
    assert len(blank) >= 3
    assert all(e.label is None and e.present == () for e in blank), "a black frame never yields a label"
    assert "uncover the lens" in blank[0].absent["face"]
    assert sum("face" in e.present for e in events) >= 3, "faces are read between the black stretches"
    assert warnings_with(caplog, "blank frames") == 1, "logged once over several black stretches"


# ---------------------------------------------------------------- microphone
def test_microphone_lost_leaves_video_running(bundle, parts, face_frames, speech, caplog):
    mic = microphone(FakeMicrophone(speech, 16000, loop=True, stop_after_s=0.6), MicrophoneOptions(stall_timeout_s=0.4))
    cam = camera(FakeCamera(face_frames, fps=30))
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events = collect(EmotionStream(models(bundle, parts), video=cam, audio=mic, realtime=True), 2.5)
    assert_steady(events)
    gone = [e for e in events if "stopped delivering audio" in e.absent.get("audio", "")]
    assert len(gone) >= 5, [e.absent.get("audio") for e in events]
    assert "--audio FILE" in gone[0].absent["audio"]
    assert all(e.label is not None and "face" in e.present for e in gone[1:]), "labels go on from the face"
    assert warnings_with(caplog, "stopped delivering audio") == 1


def test_microphone_lost_and_back(bundle, parts, face_frames, speech, caplog):
    # Every opened stream stops after 1.2 s: lost at ~1.2 s, noticed at ~1.5 s, reopened at ~1.8 s; the second
    # stream then runs past the end of the 3 s collection.
    fake = FakeMicrophone(speech, 16000, loop=True, stop_after_s=1.2)
    options = MicrophoneOptions(stall_timeout_s=0.3, max_reconnects=2, backoff_s=0.3)
    mic = microphone(fake, options)
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events = collect(EmotionStream(models(bundle, parts), video=camera(FakeCamera(face_frames)), audio=mic,
                                       realtime=True), 3.0)
    assert_steady(events)
    reason = "microphone stopped delivering audio: reconnecting"
    lost = [i for i, e in enumerate(events) if e.absent.get("audio") == reason]
    assert lost and mic.reconnects == 1 and len(fake.streams) == 2
    assert all(e.label is not None and "face" in e.present for e in events[lost[0]:]), "labels go on from the face"
    after = events[lost[-1] + 1:]
    assert len(after) >= 3 and all(e.absent.get("audio") != reason for e in after), "audio comes back"
    assert warnings_with(caplog, "stopped delivering audio") == 1 and warnings_with(caplog, "microphone is back") == 1


def test_microphone_that_cannot_be_reopened_is_given_up(speech):
    fake = FakeMicrophone(speech, 16000, stop_after_s=0.1)
    mic = microphone(fake, MicrophoneOptions(stall_timeout_s=0.2, max_reconnects=2, backoff_s=0.05))
    mic.start(time.monotonic())
    fake.absent = True  # unplugged: reopening fails
    started = time.monotonic()
    try:
        with pytest.raises(DeviceError, match=r"stopped delivering audio for 0.2 s and 2 reconnect\(s\) failed: .*--audio FILE"):
            while time.monotonic() - started < 5:
                mic.read(0.05)
    finally:
        mic.close()
    assert mic.reconnects == 0


class _StallingEncoder:
    """The real speech encoder, stuck once for ``stall_s`` (the reader falls behind the microphone)."""

    def __init__(self, encoder, stall_s: float) -> None:
        self.encoder, self.stall_s, self.calls = encoder, stall_s, 0
        self.block = encoder.block

    def encode(self, pcm, rate):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.stall_s)
        return self.encoder.encode(pcm, rate)


def test_audio_overflow_bursts_are_counted_and_logged_once(bundle, parts, face_frames, speech, caplog):
    fake = FakeMicrophone(speech, 16000, loop=True, overflow_every=8)  # PortAudio flags an overflow now and then
    mic = microphone(fake, MicrophoneOptions(buffer_s=0.3))  # a small ring: the stall below overflows it
    stalling = _StallingEncoder(parts["speech_encoder"], 0.8)
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events = collect(EmotionStream(models(bundle, parts, speech_encoder=stalling), video=camera(FakeCamera(face_frames)),
                                       audio=mic, realtime=True), 4.0)
    assert_steady(events)
    stats = mic.stats()
    assert stats["overflows"] >= 3 and stats["dropped_samples"] > 0
    assert stalling.calls >= 2 and any("audio" in e.present for e in events[-15:]), "speech windows resume"
    assert warnings_with(caplog, "overflowed") == 1


# ---------------------------------------------------------------- stages
class _Flaky:
    """The real speech encoder, raising on every other call."""

    def __init__(self, encoder) -> None:
        self.encoder, self.calls, self.block = encoder, 0, encoder.block

    def encode(self, pcm, rate):
        self.calls += 1
        if self.calls % 2 == 0:
            raise RuntimeError("transient encoder fault")
        return self.encoder.encode(pcm, rate)


def test_an_intermittently_failing_stage_recovers_between_failures(bundle, parts, face_video, tmp_path, padded_speech, caplog):
    from conftest import write_wav

    wav = write_wav(tmp_path / "padded.wav", padded_speech[0], 16000)
    flaky = _Flaky(parts["speech_encoder"])
    stream = EmotionStream(models(bundle, parts, speech_encoder=flaky), video=VideoFileSource(face_video, realtime=False),
                           audio=AudioFileSource(wav, realtime=False), realtime=False)
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"), stream:
        events = list(stream)
    failed = [e for e in events if e.absent.get("audio") == "audio stage failed: RuntimeError: transient encoder fault"]
    assert flaky.calls >= 3 and failed and any("audio" in e.present for e in events)
    assert all(e.label is not None for e in failed if e.present)
    assert warnings_with(caplog, "transient encoder fault") == 1
    assert stream.stats()["stages"]["audio"]["errors"] == flaky.calls // 2


class _HangingEncoder:
    def __init__(self) -> None:
        self.release = threading.Event()

    def encode(self, pcm, rate):
        self.release.wait(30)
        raise RuntimeError("released")


def test_a_hanging_audio_stage_hits_its_time_limit_and_video_goes_on(bundle, parts, face_frames, speech, caplog):
    hanging = _HangingEncoder()
    mic = microphone(FakeMicrophone(speech, 16000, loop=True))
    options = StreamOptions(time_limit_s={"audio": 0.5})
    try:
        with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
            events = collect(EmotionStream(models(bundle, parts, speech_encoder=hanging), video=camera(FakeCamera(face_frames)),
                                           audio=mic, options=options, realtime=True), 3.0)
    finally:
        hanging.release.set()
    assert_steady(events)
    hung = [e for e in events if e.absent.get("audio") == "audio stage hung: no result within 0.5 s"]
    assert len(hung) >= 5 and all("face" in e.present and e.label is not None for e in hung[1:])
    assert warnings_with(caplog, "audio stage hung") == 1


class _StuckOnce:
    """The real face encoder, stuck for ``stuck_s`` on its ``at``-th call."""

    def __init__(self, encoder, at: int, stuck_s: float) -> None:
        self.encoder, self.at, self.stuck_s, self.calls = encoder, at, stuck_s, 0
        self.input_size = encoder.input_size

    def encode(self, faces):
        self.calls += 1
        if self.calls == self.at:
            time.sleep(self.stuck_s)
        return self.encoder.encode(faces)


def test_a_stage_stuck_for_a_while_comes_back(bundle, parts, face_frames, caplog):
    stuck = _StuckOnce(parts["face_encoder"], at=10, stuck_s=1.2)
    options = StreamOptions(time_limit_s={"face": 0.4})
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events = collect(EmotionStream(models(bundle, parts, face_encoder=stuck), video=camera(FakeCamera(face_frames)),
                                       options=options, realtime=True), 3.0)
    assert_steady(events)
    reason = "face stage hung: no result within 0.4 s"
    hung = [i for i, e in enumerate(events) if e.absent.get("face") == reason]
    assert len(hung) >= 4, [e.absent.get("face") for e in events]
    # The frame path goes on (its features stay fresh), but the scene alone gives no label.
    assert all(events[i].label is None and events[i].ages_s.get("frame", 9) < 1.0 for i in hung), "the frame path goes on"
    after = events[hung[-1] + 1:]
    assert sum("face" in e.present for e in after) >= 5, "the face modality comes back once the call returns"
    assert warnings_with(caplog, "face stage hung") == 1 and warnings_with(caplog, "face stage recovered") == 1


# ---------------------------------------------------------------- the LLM
@pytest.fixture(scope="module")
def llm_parts(bundle):
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (pip install 'ecmf-edge[asr]')")
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'ecmf-edge[llm]')")
    from ecmf_edge.text.asr import SpeechRecognizer
    from ecmf_edge.text.text_branch import TextBranch

    return SpeechRecognizer.from_bundle(bundle), TextBranch.from_bundle(bundle)


class _DeadLlm:
    """A llama.cpp model whose backend has gone away: every call fails."""

    def __init__(self) -> None:
        self.calls = 0

    def create_chat_completion(self, **kwargs):
        self.calls += 1
        raise OSError(errno.EPIPE, "llama backend is gone")


class _SlowLlm:
    """The real model, answering one token every ``delay`` seconds."""

    def __init__(self, llm, delay: float) -> None:
        self.llm, self.delay = llm, delay

    def create_chat_completion(self, **kwargs):
        for chunk in self.llm.create_chat_completion(**kwargs):
            time.sleep(self.delay)
            yield chunk


class _HungLlm:
    def __init__(self) -> None:
        self.release = threading.Event()

    def create_chat_completion(self, **kwargs):
        self.release.wait(30)
        yield from ()


def _enricher(**options):
    from ecmf_edge.text.llm_context import ContextEnricher, LlmOptions

    return ContextEnricher(LlmOptions(**options))


def _speech_stream(bundle, parts, llm_parts, enricher, face_video, speech_wav, options=None, reads_llm=True):
    """A stream with speech; ``reads_llm``: its text branch reads the LLM's sentence (as one trained with
    LLM context does; the shipped branch does not, and then the LLM is never run)."""
    import copy

    from ecmf_edge.text.text_path import TextFeaturizer, TextPath

    branch = copy.copy(llm_parts[1])
    branch.uses_llm_context = reads_llm
    path = TextPath(llm_parts[0], TextFeaturizer(None, enricher, branch=branch))
    return EmotionStream(models(bundle, parts, text=path), video=VideoFileSource(face_video, realtime=False),
                         audio=AudioFileSource(speech_wav, realtime=False), options=options, realtime=False)


def test_a_dead_llm_falls_back_to_the_transcript_and_is_switched_off(bundle, parts, llm_parts, face_video, speech_wav, caplog):
    enricher = _enricher(max_failures=3)
    real, dead = enricher._llm, _DeadLlm()
    enricher._llm = dead
    try:
        with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
            with _speech_stream(bundle, parts, llm_parts, enricher, face_video, speech_wav) as stream:
                events = list(stream)
            last = events[-1]
            assert "text" in last.present and "happy" in last.transcript.lower(), "the transcript alone is embedded"
            assert last.label is not None
            results = [enricher.enrich(f"sentence number {i}") for i in range(5)]
    finally:
        enricher._llm = real
        enricher.close()
    assert dead.calls == 3, "after three failures in a row the LLM is no longer called"
    assert all(not r.used_llm and r.enriched == r.transcript for r in results)
    assert results[1].fallback_reason.startswith("the LLM is switched off after 3 failures in a row")
    assert "without --llm" in results[-1].fallback_reason
    assert warnings_with(caplog, "LLM context failed") == 1 and warnings_with(caplog, "switched off") == 1


def test_the_llm_is_not_run_when_the_text_branch_does_not_read_it(bundle, parts, llm_parts, face_video, speech_wav):
    from ecmf_edge.text.text_path import SKIPPED_LLM

    enricher = _enricher(max_failures=3)
    real, dead = enricher._llm, _DeadLlm()
    enricher._llm = dead
    try:
        with _speech_stream(bundle, parts, llm_parts, enricher, face_video, speech_wav, reads_llm=False) as stream:
            events = list(stream)
    finally:
        enricher._llm = real
        enricher.close()
    assert dead.calls == 0, "no LLM call whose answer no model reads"
    assert "text" in events[-1].present and "happy" in events[-1].transcript.lower()
    assert stream.text_stage is not None
    assert SKIPPED_LLM.startswith("the bundle's text branch was trained without LLM context")


def test_a_slow_llm_is_cut_at_its_time_limit(llm_parts):
    enricher = _enricher(time_limit_s=0.5, max_tokens=40)
    enricher._llm = _SlowLlm(enricher._llm, 0.2)
    try:
        result = enricher.enrich("I finally got the job, I can't believe it!")
    finally:
        enricher._llm = enricher._llm.llm
        enricher.close()
    # Prompt evaluation cannot be interrupted (the text stage's own time limit covers it); generation stops in time.
    assert any("time limit" in n for n in result.notes) and result.tokens <= 3, result
    assert result.enriched.endswith("I finally got the job, I can't believe it!")


def test_a_hung_llm_trips_the_text_time_limit_and_the_rest_goes_on(bundle, parts, llm_parts, face_video, speech_wav, caplog):
    enricher = _enricher()
    real, hung = enricher._llm, _HungLlm()
    enricher._llm = hung
    options = StreamOptions(time_limit_s={"text": 1.5})
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
            with _speech_stream(bundle, parts, llm_parts, enricher, face_video, speech_wav, options) as stream:
                events = list(stream)
        elapsed = time.monotonic() - started
    finally:
        hung.release.set()
        enricher._llm = real
        enricher.close()
    assert elapsed < 20, "hang: the stream waited for the hung text stage"
    assert events[-1].absent["text"] == "text stage hung: no result within 1.5 s"
    assert any("audio" in e.present for e in events) and all(e.label is not None for e in events if e.timestamp < 1.9)
    assert warnings_with(caplog, "text stage hung") == 1


# ---------------------------------------------------------------- a full disk
_VideoWriter = cv2.VideoWriter  # the real one, before the tests replace it


class _FullDiskWriter:
    """cv2.VideoWriter whose writes fail with ENOSPC after ``good`` frames."""

    good = 3

    def __init__(self, *args) -> None:
        self._writer = _VideoWriter(*args)
        self.frames = 0

    def isOpened(self):
        return self._writer.isOpened()

    def write(self, frame):
        self.frames += 1
        if self.frames > self.good:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._writer.write(frame)

    def release(self):
        self._writer.release()


class _FullDiskFile:
    """A text file whose writes fail with ENOSPC after ``good`` lines."""

    def __init__(self, good: int) -> None:
        self.lines, self.good = [], good

    def write(self, text):
        if len(self.lines) >= self.good:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines.append(text)

    def flush(self):
        pass

    def close(self):
        pass


def test_a_full_disk_stops_recording_and_logging_but_not_the_stream(capsys, bundle_root, face_video, tmp_path,
                                                                   monkeypatch, caplog):
    monkeypatch.setattr(cv2, "VideoWriter", _FullDiskWriter)
    log = _FullDiskFile(good=5)
    monkeypatch.setattr("ecmf_edge.stream.sinks.open", lambda *a, **k: log, raising=False)
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        code = main(["run", "--video", str(face_video), "--no-realtime", "--json", "--no-text", "--bundle", str(bundle_root),
                     "--record", str(tmp_path / "out.avi"), "--log-events", str(tmp_path / "events.jsonl")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(out.splitlines()) == 20, "every event is still printed"
    assert err.count("No space left on device") == 1 and "the stream goes on" in err
    assert len(log.lines) == 5 and json.loads(log.lines[0])["index"] == 1
    assert warnings_with(caplog, "JSON lines output stopped") == 1
    assert warnings_with(caplog, "recording to") == 1


def test_recorder_survives_enospc_on_close(tmp_path, astronaut_bgr, monkeypatch, caplog):
    class FailingRelease(_FullDiskWriter):
        good = 100

        def release(self):
            super().release()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cv2, "VideoWriter", FailingRelease)
    recorder = VideoRecorder(tmp_path / "x.avi")
    assert recorder.write(astronaut_bgr) and recorder.frames == 1
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        recorder.close()
    assert warnings_with(caplog, "No space left on device") == 1


def test_log_events_is_opt_in_and_appends(capsys, bundle_root, face_video, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--video", str(face_video), "--no-realtime", "--json", "--no-text", "--bundle", str(bundle_root)])
    capsys.readouterr()
    assert code == 0 and list(tmp_path.iterdir()) == [], "nothing is written unless asked"
    target = tmp_path / "events.jsonl"
    for _ in range(2):
        code = main(["run", "--video", str(face_video), "--no-realtime", "--headless", "--no-text", "--bundle",
                     str(bundle_root), "--max-seconds", "0.5", "--log-events", str(target)])
        assert code == 0
    capsys.readouterr()
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["index"] for line in lines] == [1, 2, 3, 4, 5] * 2 and all(line["label"] for line in lines)
    code = main(["run", "--video", str(face_video), "--no-realtime", "--headless", "--no-text", "--bundle", str(bundle_root),
                 "--log-events", str(tmp_path / "no" / "dir" / "e.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ecmf-edge: error: cannot write events to") and err.count("\n") == 1


def test_json_lines_sink_on_a_full_disk_is_logged_once(caplog, bundle, parts, face_video):
    target = _FullDiskFile(good=2)
    sink = JsonLinesSink(target)
    stream = EmotionStream(models(bundle, parts), video=VideoFileSource(face_video, realtime=False), realtime=False,
                           sinks=(sink,))
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        assert stream.run(timeout=30)
    stream.close()
    assert stream.events == 20 and sink.written == 2
    assert warnings_with(caplog, "No space left on device") == 1


# ---------------------------------------------------------------- doctor
def test_doctor_check_fails_readably_on_a_corrupt_bundle(capsys, bundle_root, tmp_path):
    copy = tmp_path / "bundle"
    copy.mkdir()
    for item in bundle_root.iterdir():
        if item.name != "vad.onnx":
            (copy / item.name).symlink_to(item)
    data = bytearray((bundle_root / "vad.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "vad.onnx").write_bytes(bytes(data))
    code = main(["doctor", "--bundle", str(copy), "--check"])
    out = capsys.readouterr().out
    assert code == 1
    summary = out.strip().splitlines()[-1]
    assert "required check(s) failed" in summary and "vad.onnx" in summary and "ecmf-edge export --force" in summary


def test_doctor_check_runs_the_bundle_and_reports_a_broken_runtime(capsys, bundle_root, monkeypatch):
    code = main(["doctor", "--bundle", str(bundle_root), "--check"])
    out = capsys.readouterr().out
    assert code == 0 and any(line.split()[:3] == ["inference", "fusion_head", "ok"] for line in out.splitlines()), out

    def broken(self, features):
        raise RuntimeError("onnxruntime::InferenceSession: illegal instruction in MatMul kernel")

    monkeypatch.setattr(FusionHead, "predict", broken)
    code = main(["doctor", "--bundle", str(bundle_root), "--check"])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 1 and "1 required check(s) failed: fusion_head: ONNX Runtime cannot run the bundle" in summary
    assert summary.endswith("reinstall onnxruntime")
