"""The public API: Recognizer construction, predict() on real inputs, stream() misuse, EmotionEvent."""
from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest

import ecmf_edge
from ecmf_edge import LABELS, EmotionEvent, Recognizer, StreamOptions, load_bundle
from ecmf_edge.audio.io import load_audio, resample
from ecmf_edge.capture import CameraOptions, CameraSource, FakeCamera
from ecmf_edge.capture.video import iter_video_frames
from ecmf_edge.errors import DependencyError, DeviceError, InputError, ModelError


@pytest.fixture(scope="module")
def rec(bundle):
    with Recognizer(bundle=bundle, use_llm=False, text=False) as recognizer:
        yield recognizer


@pytest.fixture(scope="module")
def face_crop(astronaut_bgr):
    return astronaut_bgr[50:190, 165:285].copy()  # the astronaut's face, cut by hand: no detector involved


def test_public_api_is_exported():
    for name in ("Recognizer", "EmotionEvent", "load_bundle", "LABELS"):
        assert name in ecmf_edge.__all__ and hasattr(ecmf_edge, name)
    assert LABELS == ("neutral", "angry", "happy", "sad", "worried", "surprise")
    assert load_bundle is ecmf_edge.runtime.bundle.load_bundle


def test_backend_and_precision_misuse(bundle, monkeypatch, tmp_path):
    with pytest.raises(InputError, match=r"unknown backend 'cuda': use one of auto, onnxruntime, tensorrt"):
        Recognizer(backend="cuda", bundle=bundle)
    with pytest.raises(InputError, match=r"unknown precision 'int4': use one of fp32, fp16, int8"):
        Recognizer(precision="int4", bundle=bundle)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(DependencyError, match=r"backend 'tensorrt' needs TensorRT 10 .*ecmf-edge\[trt\].*--backend onnxruntime"):
            Recognizer(backend="tensorrt", bundle=bundle)
    monkeypatch.setenv("ECMF_EDGE_ENGINES", str(tmp_path))
    with pytest.raises(ModelError, match=r"no onnxruntime int8 bundle 'default' .*`ecmf-edge quantize --precision int8`"):
        Recognizer(precision="int8")
    with pytest.raises(InputError, match=r"is fp32 but precision='fp16' was asked"):
        Recognizer(precision="fp16", bundle=bundle)
    with pytest.raises(InputError, match="is not callable"):
        Recognizer(bundle=bundle, fusion="head")


def test_recognizer_options_are_the_configuration(bundle):
    """RecognizerOptions is the one set of settings: keyword arguments build it, override its fields, and bad
    values are one-line errors naming the fix."""
    from ecmf_edge import RecognizerOptions

    with pytest.raises(InputError, match=r"unknown backend 'cuda': use one of auto, onnxruntime, tensorrt"):
        RecognizerOptions(backend="cuda")
    with pytest.raises(InputError, match=r"model_threads=-1 is invalid: use 1 \(default\)"):
        RecognizerOptions(model_threads=-1)
    with pytest.raises(InputError, match="is not a StreamOptions: pass StreamOptions"):
        RecognizerOptions(stream={"fusion_hz": 5})
    with pytest.raises(InputError, match=r"options='fast' is invalid: pass RecognizerOptions\(...\) or StreamOptions"):
        Recognizer(bundle=bundle, options="fast")
    with Recognizer(options=RecognizerOptions(bundle=bundle, text=False, stream=StreamOptions(fusion_hz=5.0))) as rec:
        assert rec.recognizer_options == RecognizerOptions(bundle=bundle, text=False, stream=StreamOptions(fusion_hz=5.0))
        assert rec.text_enabled is False and rec.options.fusion_hz == 5.0 and rec.backend == "auto"
    with Recognizer(bundle=bundle, options=StreamOptions(fusion_hz=4.0), use_llm=False) as rec:  # the keyword form
        assert rec.recognizer_options == RecognizerOptions(bundle=bundle, stream=StreamOptions(fusion_hz=4.0))
    base = RecognizerOptions(bundle=bundle, text=False)
    with Recognizer(options=base, text=True, model_threads=2) as rec:  # given keywords override the fields
        assert rec.recognizer_options == RecognizerOptions(bundle=bundle, text=True, model_threads=2)


def test_the_fusion_head_is_the_bundles_and_can_be_replaced(bundle, rec, astronaut_bgr):
    assert bundle.has("fusion_head")
    calls = []
    head = rec._fusion

    def spy(features):
        calls.append({m for m, v in features.items() if v is not None})
        return head(features)

    with Recognizer(bundle=bundle, fusion=spy, use_llm=False, text=False) as custom:
        event = custom.predict(frame=astronaut_bgr)
    # The fused prediction, then the face alone for the person's own label.
    assert calls == [{"frame", "face"}, {"face"}] and event.label == rec.predict(frame=astronaut_bgr).label


def test_real_head_reads_clear_cases(rec):
    assert rec.predict(text="My dog died yesterday and I cannot stop crying.").label == "sad"
    assert rec.predict(text="I am so happy that you came to visit me today.").label == "happy"


def test_predict_on_a_face_crop_skips_detection(rec, face_crop):
    import cv2

    for crop in (face_crop, cv2.cvtColor(face_crop, cv2.COLOR_BGR2GRAY), cv2.resize(face_crop, (37, 41))):
        event = rec.predict(face=crop)
        assert event.present == ("face",) and event.label == "happy", "the astronaut smiles"
        assert set(event.probabilities) == set(LABELS) and abs(sum(event.probabilities.values()) - 1) < 1e-3
        assert event.modality_weights == pytest.approx({"face": 1.0})
        assert "face_detect" not in event.latency_ms and event.latency_ms["face_encode"] > 0
        assert event.absent == {"frame": "no frame given", "audio": "no audio given", "text": "no text given"}


def test_predict_on_frames_detects_the_face(rec, astronaut_bgr, coffee_bgr):
    event = rec.predict(frame=astronaut_bgr)
    assert event.present == ("frame", "face") and event.face_box is not None and event.label == "happy"
    x1, y1, x2, y2 = event.face_box
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200
    assert {"frame_encoder", "face_detect", "face_encode", "fusion"} <= set(event.latency_ms)
    scene = rec.predict(frame=coffee_bgr)  # a scene alone is no evidence of anyone's emotion
    assert scene.present == () and scene.label is None and scene.absent["face"] == "no face in the frame"


def test_predict_on_audio_at_any_rate_and_on_text(bundle, rec, speech_wav):
    speech = load_audio(speech_wav)
    at16 = rec.predict(audio=speech, sample_rate=16000)
    at48 = rec.predict(audio=resample(speech, 16000, 48000), sample_rate=48000)
    assert at16.present == at48.present == ("audio",)
    silent = rec.predict(audio=np.zeros(16000, np.float32), sample_rate=16000)
    assert silent.label is None and silent.present == () and "silent" in silent.absent["audio"]
    both = rec.predict(audio=(speech * 32767).astype(np.int16), sample_rate=16000, text="I am so happy that you came to visit me today.")
    assert both.present == ("audio", "text") and both.transcript.startswith("I am so happy")
    assert set(both.modality_weights) == {"audio", "text"}


def test_hard_audio_gives_no_speech_or_a_label_and_keeps_the_speaker_state_bounded(bundle, speech_wav):
    """Silence, noise, music, clipping, very quiet speech (peaks below -38 dBFS) and a 10-minute monologue:
    "no speech" or a label, never an error; the speaker state stays within its bound."""
    speech = load_audio(speech_wav)
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    music = 0.3 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
    quiet = speech / np.abs(speech).max() * 10 ** (-40 / 20)
    gap = np.zeros(8000, np.float32)
    monologue = np.tile(np.concatenate([speech, gap]), int(np.ceil(600 * 16000 / (speech.size + gap.size))))[: 600 * 16000]
    cases = {"silence": np.zeros(32000), "noise": rng.normal(0, 0.1, 32000), "music": music,
             "clipping": np.clip(speech * 30, -1, 1), "quiet": quiet, "monologue": monologue}
    with Recognizer(bundle=bundle, text=False) as rec:
        for name, pcm in cases.items():
            event = rec.predict(audio=np.asarray(pcm, np.float32), sample_rate=16000)
            assert (event.label is None and "audio" in event.absent) or (event.label in LABELS and "audio" in event.present), name
        branch = rec.models.speech_branch
        if branch is not None:
            assert branch.normalizer.windows <= branch.normalizer.max_windows
            rec.reset_speaker()
            assert branch.normalizer.windows == 0


def test_predict_misuse(rec, face_crop):
    with pytest.raises(InputError, match="nothing to predict: pass frame=, face=, audio= and/or text="):
        rec.predict()
    with pytest.raises(InputError, match="dtype float64 is not supported"):
        rec.predict(frame=np.zeros((10, 10, 3)))
    with pytest.raises(InputError, match="face= takes one crop, got 2"):
        rec.predict(face=[face_crop, face_crop])
    with pytest.raises(InputError, match="text must be str"):
        rec.predict(text=b"bytes")
    with pytest.raises(InputError, match="sample_rate=0 is invalid"):
        rec.predict(audio=np.zeros(1600, np.float32), sample_rate=0)


def test_stream_misuse(rec, face_video, tmp_path):
    with pytest.raises(InputError, match="nothing to stream: pass camera=0 or video=FILE"):
        rec.stream()
    with pytest.raises(InputError, match="either camera= or video=, not both"):
        rec.stream(camera=0, video=face_video)
    with pytest.raises(InputError, match="either microphone= or audio=, not both"):
        rec.stream(microphone="default", audio=face_video)
    with pytest.raises(InputError, match="realtime=False is for files"):
        rec.stream(camera=0, realtime=False)
    with pytest.raises(InputError, match="does not exist"):
        rec.stream(video=tmp_path / "missing.mp4")
    with pytest.raises(DeviceError, match=r"no camera at index 0: .*--video FILE") as info:
        rec.stream(camera=CameraSource(0, opener=FakeCamera([np.zeros((4, 4, 3), np.uint8)], absent=True)))
    assert "\n" not in str(info.value)


def test_stream_from_files_through_the_public_api(rec, face_video):
    changes = []
    with rec.stream(video=face_video, realtime=False, on_label_change=changes.append) as stream:
        events = list(stream)
    assert len(events) == 20 and all(isinstance(e, EmotionEvent) for e in events)
    assert all(e.label in LABELS and {"frame", "face"} == set(e.present) for e in events)
    assert changes and all(e.label_changed for e in changes) and changes[0].index == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].label = "sad"
    payload = json.loads(json.dumps(events[0].to_dict()))
    assert payload["label"] == events[0].label and payload["present"] == ["frame", "face"]
    assert payload["absent"]["audio"] == "no microphone or audio file given"


def test_leaving_the_recognizer_closes_its_streams(bundle, face_video):
    frames = [f for _, f in iter_video_frames(face_video)]
    rec = Recognizer(bundle=bundle, use_llm=False, text=False)
    camera = CameraSource(0, CameraOptions(stall_timeout_s=0.5), opener=FakeCamera(frames, fps=30))
    seen = []
    with rec:
        stream = rec.stream(camera=camera, on_event=seen.append)
        stream.start()
        time.sleep(0.6)
    assert stream.finished and seen
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name.startswith("ecmf-") and t.is_alive()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("ecmf-") and t.is_alive()], \
        "hang: stream threads still alive 10 s after the recognizer was left"
    with pytest.raises(InputError, match="Recognizer is closed"):
        rec.stream(video=face_video)


def test_tutor_example_runs_on_files(capsys, monkeypatch, bundle_root, face_video, speech_wav):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "tutor.py"
    spec = importlib.util.spec_from_file_location("tutor_example", path)
    tutor = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tutor_example", tutor)
    spec.loader.exec_module(tutor)
    code = tutor.main(["--video", str(face_video), "--audio", str(speech_wav), "--no-realtime",
                       "--bundle", str(bundle_root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tutor: Step 1" in out and "learner looks" in out and "session over" in out
    lines = path.read_text().splitlines()
    imported = {line.split()[1] for line in lines if line.startswith(("from ecmf_edge", "import ecmf_edge"))}
    assert imported == {"ecmf_edge"}, "the example uses only the public API"


def test_real_time_file_playback_takes_the_clips_duration(rec, face_video):
    started = time.monotonic()
    with rec.stream(video=face_video, realtime=True) as stream:
        events = list(stream)
    elapsed = time.monotonic() - started
    # paced by the clock: never faster than the clip (an ordering fact: the clip's timestamps span 1.9 s)
    assert elapsed > 1.9 and 17 <= len(events) <= 21
    assert all(b.timestamp > a.timestamp for a, b in zip(events, events[1:]))
    with_face = [e for e in events if "face" in e.present]
    assert len(with_face) >= len(events) - 2 and all(e.label == "happy" for e in with_face[2:])
    # Only the edges may lack the face: the first tick(s) when the scheduler ran before the first face result
    # (slow start under load), and the ticks after the end of the video.
    first, last = events.index(with_face[0]), events.index(with_face[-1])
    reasons = [e.absent.get("face") for e in events]
    assert all(r == "no face result yet" for r in reasons[:first]), reasons
    assert all("face" in e.present for e in events[first:last + 1]), reasons
    assert all(r == "the video ended" for r in reasons[last + 1:]), reasons
    assert stream.stats()["events_dropped"] == 0
    assert max(e.latency_ms["capture_to_event"] for e in with_face) < 500
