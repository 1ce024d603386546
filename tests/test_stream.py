"""The live loop end to end: files (fast, reproducible) and fake devices (real time), faults, shutdown.

Everything runs the bundle's real models, the ECMF fusion head included.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time

import numpy as np
import pytest
from conftest import write_wav

from ecmf_edge.audio.io import load_audio
from ecmf_edge.capture import (
    CameraOptions,
    CameraSource,
    FakeCamera,
    FakeMicrophone,
    MicrophoneSource,
)
from ecmf_edge.capture.files import AudioFileSource, VideoFileSource
from ecmf_edge.errors import InputError
from ecmf_edge.people import FRAME_ALONE_REASON
from ecmf_edge.stream.aligner import Aligner, Observation
from ecmf_edge.stream.options import SmootherOptions, StreamOptions
from ecmf_edge.stream.pipeline import EmotionStream, StreamModels
from ecmf_edge.stream.queues import DropOldestQueue
from ecmf_edge.stream.sinks import JsonLinesSink
from ecmf_edge.stream.smoother import Smoother

FAST_WATCH = CameraOptions(stall_timeout_s=0.3, backoff_s=0.05, max_backoff_s=0.1, max_reconnects=2)


@pytest.fixture(scope="module")
def asr(bundle):
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (pip install 'ecmf-edge[asr]')")
    from ecmf_edge.text.asr import SpeechRecognizer
    from ecmf_edge.text.text_branch import TextBranch
    from ecmf_edge.text.text_path import TextFeaturizer

    return SpeechRecognizer.from_bundle(bundle), TextFeaturizer(None, branch=TextBranch.from_bundle(bundle))


def make_models(bundle, parts, *, text=None, **overrides):
    from ecmf_edge.audio.vad import VoiceActivityDetector

    models = StreamModels(labels=tuple(bundle.labels), vad=VoiceActivityDetector.from_bundle(bundle),
                          text_path=text, **{**parts, **overrides})
    if text is None:
        models.unavailable["text"] = "text off in this test"
    return models


def text_path(asr):
    from ecmf_edge.text.text_path import TextPath

    return TextPath(asr[0], asr[1])


def run_files(bundle, parts, video=None, audio=None, text=None, options=None, **overrides):
    stream = EmotionStream(make_models(bundle, parts, text=text, **overrides),
                           video=VideoFileSource(video, realtime=False) if video else None,
                           audio=AudioFileSource(audio, realtime=False) if audio else None,
                           options=options, realtime=False)
    with stream:
        return list(stream), stream


def collect(stream, seconds):
    """Iterate a real-time stream for ``seconds`` on this thread, then close it; returns (events, close seconds)."""
    events, deadline = [], time.monotonic() + seconds
    for event in stream:
        events.append(event)
        if time.monotonic() >= deadline:
            break
    started = time.monotonic()
    stream.close()
    return events, time.monotonic() - started


def stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ecmf-") and t.is_alive()]


# ---------------------------------------------------------------- pure parts
def test_drop_oldest_queue_drops_the_oldest_or_waits():
    dropped = []
    q = DropOldestQueue(2, on_drop=dropped.append)
    for item in ("a", "b", "c"):
        assert q.put(item)
    assert dropped == ["a"] and q.dropped == 1 and len(q) == 2
    started = time.monotonic()
    assert q.put("d", block=True, timeout=0.1) is False and time.monotonic() - started >= 0.09
    assert [q.get(0.01), q.get(0.01), q.get(0.01)] == ["b", "c", None]


def test_smoother_damps_flicker_and_holds_labels():
    labels = ("neutral", "happy", "sad")
    s = Smoother(labels, SmootherOptions(alpha=0.5, switch_margin=0.1, min_dwell_s=0.3))
    happy, sad = np.array([0.1, 0.8, 0.1]), np.array([0.1, 0.1, 0.8])
    assert s.update(happy, 0.1).label == "happy"
    blip = s.update(sad, 0.2)  # one sad tick among happy ones does not flip the label
    assert blip.label == "happy" and not blip.changed
    out = [s.update(sad, t) for t in (0.3, 0.4, 0.5)]
    assert [o.label for o in out][-1] == "sad" and sum(o.changed for o in out) == 1
    assert abs(float(out[-1].probabilities.sum()) - 1) < 1e-5
    s.idle(5.0)  # a long gap without any modality starts afresh
    assert s.update(happy, 5.1).label == "happy"
    with pytest.raises(InputError, match="2 probabilities for 3 labels"):
        s.update(np.array([0.5, 0.5]), 5.2)
    with pytest.raises(InputError, match="alpha=0 is invalid"):
        SmootherOptions(alpha=0)


def test_aligner_masks_stale_and_unavailable_modalities():
    al = Aligner({"frame": 1.0, "face": 0.5, "audio": 2.5, "text": 10.0})
    face = np.full(128, 0.5, np.float32)
    al.update(Observation("face", 1.0, 0.0, face))
    al.update(Observation("face", 1.2, 0.0, None, "no face in the frame"))
    al.update(Observation("audio", 3.0, 0.0, np.ones(3088, np.float32)))  # ahead of the tick (file playback)
    snap = al.snapshot(1.1)
    assert snap.present == ("face",) and snap.ages["face"] == pytest.approx(0.1)
    assert snap.absent["audio"] == "no audio result yet" and snap.absent["frame"] == "no frame result yet"
    assert al.snapshot(1.3).absent["face"] == "no face in the frame"
    al.update(Observation("face", 1.4, 0.0, face))
    assert "stale: the newest face feature is 0.6 s old (limit 0.5 s)" == al.snapshot(2.0).absent["face"]
    al.set_unavailable("face", "face stage hung")
    assert al.snapshot(1.4).absent["face"] == "face stage hung"
    assert al.snapshot(1.4, newest=True).present == ("audio",)


def test_aligner_records_observations_posted_together_at_once():
    """A lost camera posts both visual tokens absent in one call: no tick may see one absent and the other present."""
    al = Aligner({"frame": 10.0, "face": 10.0, "audio": 10.0, "text": 10.0})
    vector, stop, mixed = np.ones(4, np.float32), threading.Event(), []

    def poster():
        t = 0.0
        while not stop.is_set():
            t += 0.01
            al.update(*(Observation(m, t, 0.0, vector) for m in ("face", "frame")))
            t += 0.01
            al.update(*(Observation(m, t, 0.0, None, "camera lost") for m in ("face", "frame")))
            al.set_unavailable(("face", "frame"), "camera gone")
            al.clear_unavailable(("face", "frame"), "camera gone")

    thread = threading.Thread(target=poster)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so a split update would be seen
    try:
        thread.start()
        while al.version == 0:  # from the first update on ("no ... result yet" names each modality)
            time.sleep(0.001)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            snap = al.snapshot(0.0, newest=True)
            if snap.absent.get("face") != snap.absent.get("frame"):
                mixed.append(snap.absent)
    finally:
        sys.setswitchinterval(old)
        stop.set()
        thread.join()
    assert not mixed, mixed[:3]


def test_options_are_validated():
    with pytest.raises(InputError, match="fusion_hz=0 is invalid"):
        StreamOptions(fusion_hz=0)
    with pytest.raises(InputError, match="unknown modalities"):
        StreamOptions(max_age_s={"smell": 1.0})


# ---------------------------------------------------------------- files, fast and reproducible
def test_full_loop_from_video_and_speech_files(bundle, parts, asr, face_video, speech_wav):
    events, stream = run_files(bundle, parts, video=face_video, audio=speech_wav, text=text_path(asr))
    labels = set(bundle.labels)
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(set(stamps)), "timestamps strictly increase"
    assert np.allclose(np.diff(stamps[:-1]), 0.1) and stamps[0] == pytest.approx(0.1)
    assert stamps[-1] == pytest.approx(load_audio(speech_wav).size / 16000, abs=1e-3)  # closing event at the end
    assert [e.index for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert e.label in labels and set(e.probabilities) == labels
        assert abs(sum(e.probabilities.values()) - 1) < 1e-3 and e.confidence == pytest.approx(e.probabilities[e.label])
        assert set(e.modality_weights) == set(e.present) and abs(sum(e.modality_weights.values()) - 1) < 1e-3
        assert set(e.present) | set(e.absent) == {"frame", "face", "audio", "text"}
        assert e.latency_ms["fusion"] >= 0 and e.latency_ms["capture_to_event"] >= 0
        json.dumps(e.to_dict())
    video = [e for e in events if e.timestamp <= 1.95]
    assert all({"face", "frame"} <= set(e.present) for e in video)
    assert all(e.face_box is not None and {"face_detect", "face_encode", "frame_encoder"} <= set(e.latency_ms) for e in video)
    after = [e for e in events if e.timestamp > 2.05]
    assert after and all(e.absent["face"] == "the video ended" == e.absent["frame"] for e in after)
    spoken = [e for e in events if "audio" in e.present]
    assert len(spoken) >= 10 and all({"vad", "audio_encoder", "prosody"} <= set(e.latency_ms) for e in spoken)
    assert events[0].absent["audio"] == "no speech (VAD)" or "no audio result" in events[0].absent["audio"]
    last = events[-1]
    assert "text" in last.present and "happy" in last.transcript.lower(), last
    assert last.language == "en" and 0.5 <= last.language_probability <= 1.0  # sure of English: the code is reported
    assert last.to_dict()["language_probability"] == pytest.approx(last.language_probability, abs=1e-4)
    assert {"asr", "text_encoder"} <= set(last.latency_ms)
    assert stream.stats()["stages"]["text"]["processed"] == 1


class _RecordingSpeechEncoder:
    """The real speech encoder, noting how much audio each call encodes and what it returned."""

    def __init__(self, encoder) -> None:
        self.encoder, self.block, self.calls = encoder, encoder.block, []

    def encode(self, pcm, rate):
        token = self.encoder.encode(pcm, rate)
        self.calls.append((pcm.size / rate, token))
        return token


def test_each_hop_encodes_only_the_new_speech(bundle, parts, speech_wav, tmp_path):
    """The encoder sees each second of speech once (not the growing window), and the token a hop posts combines
    the chunks of the last window_max_s exactly."""
    from ecmf_edge.audio.speech_encoder import combine_pooled

    pcm = load_audio(speech_wav)
    voiced = np.flatnonzero(np.abs(pcm) > 0.01)
    pcm = pcm[voiced[0]: voiced[-1] + 1]
    long = np.concatenate([np.zeros(8000, np.float32), pcm, pcm, np.zeros(16000, np.float32)])  # ~6 s said at once
    write_wav(tmp_path / "long.wav", long, 16000)
    from ecmf_edge.audio.speech_branch import SpeechBranch

    recording, branch, tokens = _RecordingSpeechEncoder(parts["speech_encoder"]), SpeechBranch.from_bundle(bundle), []

    def recording_branch(token, *args, **kwargs):
        tokens.append(np.array(token))
        return branch(token, *args, **kwargs)

    stream = EmotionStream(make_models(bundle, parts, speech_encoder=recording, speech_branch=recording_branch),
                           audio=AudioFileSource(tmp_path / "long.wav", realtime=False),
                           options=StreamOptions(window_max_s=3.0), realtime=False)
    with stream:
        events = list(stream)
    assert any("audio" in e.present for e in events)
    seconds = [s for s, _ in recording.calls]
    assert len(seconds) >= 4 and max(seconds) <= 1.1, seconds  # one chunk per hop
    assert sum(seconds) <= long.size / 16000 + 1.0, seconds  # each second once (the tail may overlap by < 1 s)
    dim = parts["speech_encoder"].dim
    # the fifth hop's token: its own chunk and the two before it (3 s window), weighted by their new speech
    chunks = np.stack([t for _, t in recording.calls[2:5]])
    assert np.allclose(tokens[4][:dim], combine_pooled(chunks, np.array(seconds[2:5]), recording.block), atol=1e-4)


def test_fast_file_playback_is_reproducible(bundle, parts, face_video):
    first, _ = run_files(bundle, parts, video=face_video)
    second, _ = run_files(bundle, parts, video=face_video)
    assert [(e.timestamp, e.label, e.present) for e in first] == [(e.timestamp, e.label, e.present) for e in second]
    assert np.allclose([e.confidence for e in first], [e.confidence for e in second], atol=1e-4)
    assert len(first) == 20 and first[-1].timestamp == pytest.approx(2.0)


def test_a_still_scene_reuses_its_embedding_until_it_changes(bundle, parts, astronaut_bgr, tmp_path):
    from conftest import make_video

    rng = np.random.default_rng(0)
    canvas = np.full((480, 640, 3), 90, dtype=np.uint8)
    canvas[:, 40:552] = astronaut_bgr[:480]
    noisy = lambda image: np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)  # sensor noise
    moved = np.roll(canvas, 160, axis=1)
    still = make_video(tmp_path / "still.avi", [noisy(canvas) for _ in range(20)] + [noisy(moved) for _ in range(10)])
    every, stream = run_files(bundle, parts, video=still, options=StreamOptions(frame_encoder_hz=5.0))
    assert stream.scene_stage.reused == 0
    reuse, stream = run_files(bundle, parts, video=still, options=StreamOptions(frame_encoder_hz=5.0, scene_change=1.0,
                                                                                 scene_refresh_s=1.5))
    scene = stream.scene_stage
    # 15 scene updates at 5 Hz: encoded at 0 s, reused until the 1.5 s refresh, encoded again, then once the picture moved.
    assert scene.processed == 15 and 9 <= scene.reused <= 12, (scene.processed, scene.reused)
    assert [e.label for e in reuse] == [e.label for e in every]
    worst = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in zip(every, reuse) for k in a.probabilities)
    assert worst < 0.05, worst
    assert all(e.latency_ms.get("frame_encoder") is not None for e in reuse if "frame" in e.present)


def test_the_face_path_can_read_fewer_frames_than_the_camera_gives(bundle, parts, face_video):
    every, stream = run_files(bundle, parts, video=face_video, options=StreamOptions(face_path_hz=None))
    assert stream.stats()["stages"]["face"]["processed"] == 20
    half, stream = run_files(bundle, parts, video=face_video, options=StreamOptions(face_path_hz=5.0))
    assert stream.stats()["stages"]["face"]["processed"] == 10
    assert all("face" in e.present for e in half if e.timestamp <= 1.95)
    assert [e.label for e in half] == [e.label for e in every]
    with pytest.raises(InputError, match="face_path_hz=0.5 is invalid"):
        StreamOptions(face_path_hz=0.5)
    with pytest.raises(InputError, match="scene_change=-1 "):
        StreamOptions(scene_change=-1)


def test_scene_without_a_face_and_silent_audio_are_absent_with_reasons(bundle, parts, scene_video, tmp_path):
    silence = write_wav(tmp_path / "silence.wav", np.zeros(24000, np.float32), 16000)
    events, _ = run_files(bundle, parts, video=scene_video, audio=silence)
    # The scene alone is no evidence of anyone's emotion: no label, and the frame says why.
    assert events and all(e.present == () and e.label is None for e in events)
    assert all(e.absent["frame"] == FRAME_ALONE_REASON for e in events if e.timestamp < 0.95)
    assert all(e.absent["face"] == "no face in the frame" for e in events if e.timestamp < 0.95)
    assert all(e.absent["audio"] == "no speech (VAD)" for e in events if e.timestamp < 1.45)
    assert all(e.face_box is None for e in events)
    tail = [e for e in events if e.timestamp > 1.05]
    assert tail and all(e.label is None and e.present == () and set(e.probabilities.values()) == {0.0} for e in tail)


# ---------------------------------------------------------------- fake devices, real time
def test_fake_camera_and_microphone_stream_in_real_time(bundle, parts, face_frames, speech_wav):
    speech = load_audio(speech_wav)
    camera = CameraSource(0, FAST_WATCH, opener=FakeCamera(face_frames, fps=30))
    mic = MicrophoneSource("default", backend=FakeMicrophone(speech, 16000, loop=True))
    camera.open()
    mic.open()
    stream = EmotionStream(make_models(bundle, parts), video=camera, audio=mic, realtime=True)
    events, close_s = collect(stream, 2.6)
    assert close_s < 1.0
    assert 18 <= len(events) <= 30, "about 10 events per second"
    stamps = [e.timestamp for e in events]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert sum("face" in e.present for e in events) >= len(events) - 3
    assert any("audio" in e.present for e in events), "speech windows arrive after about 1 s"
    later = [e.latency_ms["capture_to_event"] for e in events[5:] if "capture_to_event" in e.latency_ms]
    assert later and float(np.median(later)) < 500
    time.sleep(0.5)
    assert not stream_threads()


def test_camera_that_dies_leaves_the_stream_running_on_audio(bundle, parts, face_frames, speech_wav, caplog):
    camera = CameraSource(0, FAST_WATCH, opener=FakeCamera(face_frames, fps=30, die_after=10))
    mic = MicrophoneSource("default", backend=FakeMicrophone(load_audio(speech_wav), 16000, loop=True))
    camera.open()
    mic.open()
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events, _ = collect(EmotionStream(make_models(bundle, parts), video=camera, audio=mic, realtime=True), 2.6)
    dead = [e for e in events if "reconnect(s) failed" in e.absent.get("face", "")]
    assert dead and dead[0].absent["frame"] == dead[0].absent["face"]
    assert "--video FILE" in dead[0].absent["face"]
    assert any("audio" in e.present and e.label is not None for e in dead), "the stream goes on with audio"
    assert sum("reconnect(s) failed" in r.message for r in caplog.records) == 1, "logged once"


# ---------------------------------------------------------------- faults in stages
class _Broken:
    input_size = 64

    def encode(self, faces):
        raise RuntimeError("boom")


class _Hanging:
    input_size = 64

    def __init__(self):
        self.release = threading.Event()

    def encode(self, faces):
        self.release.wait(30)
        raise RuntimeError("released")


def test_a_stage_that_raises_is_reported_once_and_the_rest_goes_on(bundle, parts, face_video, caplog):
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events, stream = run_files(bundle, parts, video=face_video, face_encoder=_Broken())
    assert len(events) == 20
    assert all(e.absent["face"] == "face stage failed: RuntimeError: boom" for e in events)
    # The frame path goes on, but the scene alone gives no label.
    assert all(e.present == () and e.label is None and e.absent["frame"] == FRAME_ALONE_REASON for e in events)
    assert sum("face stage failed" in r.message for r in caplog.records) == 1
    assert stream.stats()["stages"]["face"]["errors"] == 20
    assert stream.stats()["stages"]["frame"]["processed"] >= 5 and stream.stats()["stages"]["frame"]["errors"] == 0


def test_a_stage_that_hangs_hits_its_time_limit(bundle, parts, face_video, caplog):
    hanging = _Hanging()
    options = StreamOptions(time_limit_s={"face": 0.4})
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
            events, stream = run_files(bundle, parts, video=face_video, options=options, face_encoder=hanging)
        elapsed = time.monotonic() - started
    finally:
        hanging.release.set()
    assert len(events) == 20
    assert elapsed < 30, "hang: file playback waited for the hung face stage"
    assert all(e.absent["face"] == "face stage hung: no result within 0.4 s" for e in events)
    assert all(e.present == () and e.absent["frame"] == FRAME_ALONE_REASON for e in events)
    assert stream.stats()["stages"]["frame"]["processed"] >= 5
    assert sum("face stage hung" in r.message for r in caplog.records) == 1
    assert stream.stats()["stages"]["face"]["failed"].startswith("face stage hung")


def test_close_returns_even_with_a_hung_stage(bundle, parts, face_frames):
    hanging = _Hanging()
    camera = CameraSource(0, FAST_WATCH, opener=FakeCamera(face_frames, fps=30))
    camera.open()
    stream = EmotionStream(make_models(bundle, parts, face_encoder=hanging), video=camera, realtime=True)
    got = []
    consumer = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    consumer.start()
    time.sleep(0.6)
    closer = threading.Thread(target=stream.close, daemon=True)
    closer.start()
    closer.join(10.0)
    assert not closer.is_alive(), "hang: close() waited for the hung face stage"
    consumer.join(10.0)
    assert not consumer.is_alive() and got, "the iterator ends when the stream is closed"
    hanging.release.set()
    time.sleep(0.3)
    assert not stream_threads()


def test_interrupting_the_loop_ends_every_thread(bundle, parts, face_frames, speech_wav):
    camera = CameraSource(0, FAST_WATCH, opener=FakeCamera(face_frames, fps=30))
    mic = MicrophoneSource("default", backend=FakeMicrophone(load_audio(speech_wav), 16000, loop=True))
    camera.open()
    mic.open()
    stream = EmotionStream(make_models(bundle, parts), video=camera, audio=mic, realtime=True)
    with pytest.raises(KeyboardInterrupt):
        with stream:
            for event in stream:
                if event.index == 5:
                    raise KeyboardInterrupt  # what Ctrl-C does to the consuming loop
    started = time.monotonic()
    while stream_threads() and time.monotonic() - started < 10.0:
        time.sleep(0.02)
    assert not stream_threads() and stream.finished, "hang: stream threads still alive 10 s after the interrupt"
    assert camera.stats()["frames"] > 0 and mic.stats()["overflows"] == 0


# ---------------------------------------------------------------- sinks
def test_callbacks_and_json_lines_get_every_event(bundle, parts, face_video, tmp_path, caplog):
    seen, changes = [], []

    def broken(event):
        raise ValueError("callback bug")

    out = tmp_path / "events.jsonl"
    sink = JsonLinesSink(out)
    stream = EmotionStream(make_models(bundle, parts), video=VideoFileSource(face_video, realtime=False), realtime=False,
                           sinks=(seen.append, broken, sink))
    stream.add_sink(lambda e: changes.append(e) if e.label_changed else None)
    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        assert stream.run(timeout=30)
    stream.close()
    assert len(seen) == 20 and [e.index for e in seen] == list(range(1, 21))
    assert changes and changes[0] is seen[0]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(1, 21)) and lines[0]["label"] == seen[0].label
    assert sum("callback bug" in r.message for r in caplog.records) == 1
    with pytest.raises(InputError, match="cannot write events to"):
        JsonLinesSink(tmp_path / "missing" / "x.jsonl")


def test_a_failing_fusion_step_keeps_events_coming_without_a_label(bundle, parts, face_video, caplog):
    def broken_fusion(features):
        raise RuntimeError("fusion exploded")

    with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
        events, _ = run_files(bundle, parts, video=face_video, fusion=broken_fusion)
    assert len(events) == 20 and all(e.label is None and e.present == ("frame", "face") for e in events)
    assert events[0].absent["fusion"] == "fusion failed: RuntimeError: fusion exploded"
    assert sum("fusion exploded" in r.message for r in caplog.records) == 1


def test_video_only_stream_reads_the_smiling_face_as_happy(bundle, parts, face_video):
    events, _ = run_files(bundle, parts, video=face_video)
    assert sum(e.label == "happy" for e in events) >= 0.8 * len(events)


def test_a_new_focus_person_starts_a_new_speaker(bundle, parts, face_video, speech_wav):
    """Another tracked person becoming the focus resets the speech branch's speaker statistics; the focus
    coming and going (None) or staying does not; speaker_per_focus=False keeps one speaker state."""
    from types import SimpleNamespace

    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.stream.vision import FaceStage

    stage = FaceStage(post=lambda *a: None, clock=None, time_limit_s=1.0, stop=threading.Event(),
                      detector=parts["face_detector"], encoder=parts["face_encoder"])
    resets = []
    stage.on_focus_change = lambda: resets.append(len(resets))
    focus = iter([1, 1, None, 1, 2, 2, None, 3])

    def step(image, t):
        person = next(focus)
        return SimpleNamespace(people=(), skipped=0, reason="no face", latency_ms={}, score=1.0, expression=None,
                               focus=None if person is None else SimpleNamespace(id=person, box=(0, 0, 1, 1),
                                                                                 features=np.zeros(4, np.float32)))
    stage.path = SimpleNamespace(step=step)
    for t in range(8):
        stage.handle(SimpleNamespace(image=None, t=float(t), captured=float(t)))
    assert len(resets) == 2  # 1 -> 2 and 2 -> 3

    for per_focus in (True, False):
        branch = SpeechBranch.from_bundle(bundle)
        stream = EmotionStream(make_models(bundle, parts, speech_branch=branch),
                               video=VideoFileSource(face_video, realtime=False), audio=AudioFileSource(speech_wav, realtime=False),
                               options=StreamOptions(speaker_per_focus=per_focus), realtime=False)
        try:
            hook = stream.face_stage.on_focus_change
            assert (hook == branch.reset_speaker) if per_focus else hook is None
        finally:
            stream.close()
