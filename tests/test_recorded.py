"""Recorded sessions: media of any container with its own sound, the language gate, and
``ecmf-edge label`` (timelines, summaries, pictures; resumable; the same with any number of workers).

Clips are built with ffmpeg from a real photograph and espeak-ng speech, with the sound inside the
container at 44.1/48 kHz, as a recorded session would have it.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import espeak, write_wav

from ecmf_edge.audio.io import load_audio
from ecmf_edge.errors import InputError
from ecmf_edge.timeline import SUMMARY_COLUMNS, timeline_columns

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recorded")


@pytest.fixture(scope="module")
def session_wav(clip_dir, speech_wav) -> Path:
    """0.8 s of silence, the espeak sentence, then silence up to 4.5 s (16 kHz mono WAV)."""
    x = load_audio(speech_wav)
    pcm = np.zeros(int(4.5 * 16000), np.float32)
    pcm[12800:12800 + x.size] = x[: pcm.size - 12800]
    return write_wav(clip_dir / "session.wav", pcm, 16000)


@pytest.fixture(scope="module")
def talking_mp4(clip_dir, face_video, session_wav) -> Path:
    """4.5 s: the astronaut photograph (looped) with the sentence as 44.1 kHz stereo AAC, H.264 in MP4."""
    out = clip_dir / "talking.mp4"
    ffmpeg("-stream_loop", "-1", "-i", str(face_video), "-i", str(session_wav), "-t", "4.5", "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "10", "-c:a", "aac", "-ar", "44100", "-ac", "2", str(out))
    return out


@pytest.fixture(scope="module")
def talking_flv(clip_dir, talking_mp4) -> Path:
    """The same clip as FLV (Sorenson video, MP3 sound at 44.1 kHz)."""
    out = clip_dir / "talking.flv"
    ffmpeg("-i", str(talking_mp4), "-c:v", "flv", "-c:a", "libmp3lame", "-ar", "44100", str(out))
    return out


def _envelope(x: np.ndarray, hop: int = 800) -> np.ndarray:
    n = x.size // hop
    return np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))


# -- media ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, codec", [(".mp3", ["-c:a", "libmp3lame"]), (".m4a", ["-c:a", "aac"]),
                                           (".flac", ["-c:a", "flac"]), (".ogg", ["-c:a", "libopus"]),
                                           (".webm", ["-c:a", "libopus"]), (".mkv", ["-c:a", "libvorbis"]),
                                           (".wav", ["-c:a", "pcm_f32le", "-ar", "48000", "-ac", "2"])])
def test_audio_of_any_common_container_decodes_to_the_same_speech(clip_dir, session_wav, suffix, codec):
    out = clip_dir / f"session-{codec[1]}{suffix}"
    ffmpeg("-i", str(session_wav), *codec, str(out))
    reference, decoded = load_audio(session_wav), load_audio(out)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(decoded.size - reference.size) < 0.03 * reference.size, (decoded.size, reference.size)
    a, b = _envelope(reference), _envelope(decoded)
    n = min(a.size, b.size)
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9


def test_probe_sees_video_and_sound(talking_mp4, talking_flv, session_wav):
    from ecmf_edge.audio.media import probe_media

    for clip in (talking_mp4, talking_flv):
        info = probe_media(clip)
        assert info.has_video and info.has_audio and 4.0 < info.duration < 5.0
    info = probe_media(session_wav)
    assert info.has_audio and not info.has_video


def test_a_videos_sound_is_aligned_to_its_frames(clip_dir, talking_mp4):
    """Sound that starts 1 s after the first frame decodes with 1 s of silence in front."""
    from ecmf_edge.audio.media import decode_audio

    late = clip_dir / "late.mp4"
    ffmpeg("-i", str(talking_mp4), "-itsoffset", "1.0", "-i", str(talking_mp4), "-map", "0:v", "-map", "1:a",
           "-c", "copy", str(late))
    on_time, shifted = decode_audio(talking_mp4, align_to_video=True), decode_audio(late, align_to_video=True)
    first = lambda x: np.flatnonzero(np.abs(x) > 0.02)[0] / 16000  # noqa: E731
    assert first(shifted) - first(on_time) == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("content, why", [(b"", "empty"), (b"\x00\x01garbage" * 300, "random"), ("truncated", "truncated")])
def test_a_broken_media_file_is_one_line_error(tmp_path, talking_mp4, content, why):
    from ecmf_edge.audio.media import probe_media

    path = tmp_path / f"{why}.mp4"
    path.write_bytes(talking_mp4.read_bytes()[:2000] if content == "truncated" else content)
    with pytest.raises(InputError) as err:
        probe_media(path)
        load_audio(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


# -- streams and predict ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recognizer(bundle_root):
    from ecmf_edge import Recognizer

    with Recognizer(bundle=bundle_root, use_llm=False) as rec:
        yield rec


def _share(events, modality) -> float:
    return sum(modality in e.present for e in events) / max(1, len(events))


@pytest.mark.parametrize("which", ["mp4", "flv"])
def test_a_video_file_brings_its_own_sound_and_speech(recognizer, talking_mp4, talking_flv, which):
    clip = talking_mp4 if which == "mp4" else talking_flv
    with recognizer.stream(video=clip, realtime=False) as stream:
        events = list(stream)
    assert _share(events, "face") > 0.8
    assert _share(events, "audio") > 0.6
    heard = [e for e in events if e.transcript]
    assert heard and "happy" in heard[-1].transcript.lower()
    assert any("text" in e.present for e in events)
    assert heard[-1].language == "en"


def test_no_audio_leaves_the_sound_out(recognizer, talking_mp4):
    with recognizer.stream(video=talking_mp4, realtime=False, video_audio=False) as stream:
        events = list(stream)
    assert events and _share(events, "audio") == 0 and not any(e.transcript for e in events)


def test_real_time_playback_of_a_video_with_sound(recognizer, talking_mp4):
    with recognizer.stream(video=talking_mp4, realtime=True) as stream:
        events = list(stream)
    assert _share(events, "audio") > 0.5 and _share(events, "face") > 0.5


def test_predict_transcribes_one_shot_audio(recognizer, speech):
    event = recognizer.predict(audio=speech, sample_rate=16000, transcribe=True)
    assert "text" in event.present and "audio" in event.present
    assert "happy" in event.transcript.lower() and event.language == "en"
    assert "text" not in recognizer.predict(audio=speech, sample_rate=16000).present  # without transcribe, as before


@pytest.fixture(scope="module")
def german_wav(clip_dir) -> Path:
    return espeak("Ich bin heute wirklich sehr glücklich, dass du mich besuchen kommst, mein Freund.",
                  clip_dir / "german.wav", voice="de")


def test_the_language_gate_keeps_other_languages_from_the_english_text_branch(recognizer, german_wav):
    event = recognizer.predict(audio=load_audio(german_wav), sample_rate=16000, transcribe=True)
    assert event.language == "de"
    assert "text" not in event.present and "audio" in event.present
    assert event.absent["text"] == "speech is de; the text branch reads English"
    with recognizer.stream(audio=german_wav, realtime=False) as stream:
        events = list(stream)
    assert not any("text" in e.present for e in events)
    assert any(e.absent.get("text", "").startswith("speech is de") for e in events)
    assert events[-1].language == "de"


# -- labelling ----------------------------------------------------------------------------------------
def test_label_file_gives_a_typed_deterministic_timeline(recognizer, talking_mp4):
    from ecmf_edge.timeline import ClipResult

    first = recognizer.label_file(talking_mp4, step=1.0)
    again = recognizer.label_file(talking_mp4, step=1.0)
    assert isinstance(first, ClipResult)
    assert [r.to_dict() for r in first.rows] == [r.to_dict() for r in again.rows]
    assert len(first.rows) == 5 and first.rows[0].start == 0.0 and first.rows[-1].end == pytest.approx(4.5, abs=0.05)
    for row in first.rows:
        assert set(row.probabilities) == set(recognizer.labels)
        assert row.label == max(row.probabilities, key=row.probabilities.get)
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert "happy" in " ".join(r.transcript for r in first.rows).lower()
    s = first.summary
    assert s.status == "ok" and s.label in recognizer.labels and s.language == "en"
    assert s.presence["face"] > 0.8 and s.presence["audio"] > 0.6 and s.real_time_factor > 0
    assert ClipResult.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    with pytest.raises(InputError, match="step"):
        recognizer.label_file(talking_mp4, step=0)


def test_a_busy_machine_gives_the_same_timeline(recognizer, talking_mp4, monkeypatch):
    """File playback waits for every utterance that ended by a tick, however slowly the audio is read and
    recognised (a loaded machine, a Ray actor): the ticks never race the speech path."""
    import time

    from ecmf_edge.audio.vad import VoiceActivityDetector

    quick = recognizer.label_file(talking_mp4, step=0.5)
    original = VoiceActivityDetector.chunk_probability

    def slow(self, step):
        time.sleep(0.004)  # audio read at about 8x real time instead of far faster: the ticks catch up with it
        return original(self, step)

    monkeypatch.setattr(VoiceActivityDetector, "chunk_probability", slow)
    late = recognizer.label_file(talking_mp4, step=0.5)
    assert [r.to_dict() for r in late.rows] == [r.to_dict() for r in quick.rows]


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecmf_edge.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def session_folder(clip_dir, talking_mp4, talking_flv, session_wav) -> Path:
    """A folder as a researcher has it: clips in sub-folders, a sound-only recording, a broken file, notes."""
    root = clip_dir / "sessions"
    (root / "day1").mkdir(parents=True)
    (root / "day2").mkdir()
    shutil.copy(talking_mp4, root / "day1" / "tutor.mp4")
    shutil.copy(talking_flv, root / "day2" / "tutor.flv")
    ffmpeg("-i", str(session_wav), "-c:a", "aac", str(root / "day2" / "voice.m4a"))
    (root / "day2" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    (root / "notes.txt").write_text("not media")
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, session_folder, bundle_root) -> Path:
    out = tmp_path_factory.mktemp("labels")
    done = _cli("label", str(session_folder), "--out", str(out), "--bundle", str(bundle_root), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "3 labelled, 0 skipped (done before), 1 failed" in done.stdout
    return out


def test_label_writes_timelines_pictures_and_a_summary(labelled, recognizer):
    with open(labelled / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {"tutor.mp4", "tutor.flv", "voice.m4a", "broken.mp4"}
    assert by_name["broken.mp4"]["status"] != "ok" and "broken.mp4" in by_name["broken.mp4"]["status"]
    for name in ("tutor.mp4", "tutor.flv", "voice.m4a"):
        assert by_name[name]["status"] == "ok" and by_name[name]["label"] in recognizer.labels
        assert by_name[name]["language"] == "en"
    assert float(by_name["voice.m4a"]["present_face"]) == 0 and float(by_name["voice.m4a"]["present_audio"]) > 0.6
    with open(labelled / "day1__tutor.mp4.timeline.csv", newline="") as fh:
        timeline = list(csv.DictReader(fh))
    assert len(timeline) == 5
    assert list(timeline[0]) == list(timeline_columns(recognizer.labels))
    assert "happy" in " ".join(r["transcript"] for r in timeline).lower()
    assert {r["language"] for r in timeline if r["transcript"]} == {"en"}
    assert all(r["text_absent_reason"] == "" for r in timeline if "text" in r["present"])
    assert timeline[0]["text_absent_reason"], "before the first utterance, the timeline says why text is absent"
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    one = json.loads((labelled / "day1__tutor.mp4.summary.json").read_text())
    assert list(one) == list(SUMMARY_COLUMNS), "summary.json has summary.csv's names"
    png = (labelled / "day1__tutor.mp4.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (labelled / "day2__broken.mp4.error.json").is_file()


def test_a_rerun_skips_finished_files_and_retries_failed_ones(labelled, session_folder, bundle_root):
    timeline = labelled / "day1__tutor.mp4.timeline.csv"
    before = timeline.stat().st_mtime_ns
    done = _cli("-v", "label", str(session_folder), "--out", str(labelled), "--bundle", str(bundle_root), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "3 of 4 files already labelled" in done.stderr
    assert timeline.stat().st_mtime_ns == before
    assert "0 labelled, 3 skipped (done before), 1 failed" in done.stdout


def test_two_workers_give_the_same_timelines(labelled, session_folder, bundle_root, tmp_path):
    done = _cli("label", str(session_folder), "--out", str(tmp_path), "--bundle", str(bundle_root), "--quiet",
                "--workers", "2", "--no-plot", "--format", "csv")
    assert done.returncode == 0, done.stderr
    for name in ("day1__tutor.mp4", "day2__tutor.flv", "day2__voice.m4a"):
        assert (tmp_path / f"{name}.timeline.csv").read_text() == (labelled / f"{name}.timeline.csv").read_text()


def test_jsonl_timelines(session_wav, bundle_root, tmp_path):
    done = _cli("label", str(session_wav), "--out", str(tmp_path), "--bundle", str(bundle_root), "--quiet",
                "--format", "jsonl", "--step", "0.5", "--no-plot")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "session.wav.timeline.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and rows[1]["start"] == 0.5 and isinstance(rows[0]["probabilities"], dict)
    summary = [json.loads(line) for line in (tmp_path / "summary.jsonl").read_text().splitlines()]
    assert len(summary) == 1 and summary[0]["status"] == "ok" and list(summary[0]) == list(SUMMARY_COLUMNS)
    assert {"language", "text_absent_reason", "transcript"} <= set(rows[0])


@pytest.mark.parametrize("case", ["no media", "missing path", "out is a file", "bad step", "bad workers"])
def test_label_bad_input_is_one_line(tmp_path, session_wav, case):
    args = {"no media": [str(tmp_path)], "missing path": [str(tmp_path / "nope")],
            "out is a file": [str(session_wav), "--out", str(session_wav)],
            "bad step": [str(session_wav), "--step", "0"], "bad workers": [str(session_wav), "--workers", "0"]}[case]
    (tmp_path / "readme.txt").write_text("no media here")
    done = _cli("label", *args, "--out", str(tmp_path / "out"), timeout=120) if "--out" not in args else _cli("label", *args, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecmf-edge: error:"), done.stderr


def _have_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@pytest.mark.skipif(not _have_ray(), reason="Ray is not installed (pip install 'ecmf-edge[cluster]')")
def test_label_on_a_local_ray_gives_the_same_timelines(labelled, session_folder, bundle_root, tmp_path):
    done = _cli("label", str(session_folder), "--out", str(tmp_path), "--bundle", str(bundle_root), "--quiet",
                "--ray", "--workers", "2", "--no-plot")
    assert done.returncode == 0, done.stderr
    assert "3 labelled, 0 skipped (done before), 1 failed" in done.stdout
    for name in ("day1__tutor.mp4", "day2__tutor.flv", "day2__voice.m4a"):
        assert (tmp_path / f"{name}.timeline.csv").read_text() == (labelled / f"{name}.timeline.csv").read_text()


@pytest.mark.skipif(not _have_ray(), reason="Ray is not installed (pip install 'ecmf-edge[cluster]')")
def test_a_ray_address_that_does_not_answer_is_one_line(session_wav, tmp_path):
    import time

    started = time.monotonic()
    done = _cli("label", str(session_wav), "--out", str(tmp_path), "--ray", "127.0.0.1:9", "--no-plot", timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Ray cluster answers at 127.0.0.1:9" in lines[0]
    assert time.monotonic() - started < 60, "hang: waited for an unreachable Ray cluster"


def test_feature_extractor_travels_to_another_process(bundle):
    import pickle

    from ecmf_edge.features import FeatureExtractor

    extractor = FeatureExtractor(bundle)
    extractor.from_text("I am glad you came.")  # opens models, which do not travel
    copy = pickle.loads(pickle.dumps(extractor))
    assert copy.bundle.root == bundle.root and copy._models == {} and copy.cluster is None


@pytest.mark.skipif(not _have_ray(), reason="Ray is not installed (pip install 'ecmf-edge[cluster]')")
def test_corpus_features_on_ray_equal_the_local_ones(bundle, tmp_path, astronaut_bgr, speech_wav):
    """`ecmf-edge train --ray`: corpus feature extraction spread over Ray actors gives the same rows."""
    import cv2

    from ecmf_edge.batch.ray_executor import RayOptions
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.train.corpus_features import cache_dims, extract_table
    from ecmf_edge.train.datasets.base import Sample

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), cv2.resize(astronaut_bgr[30:230, 150:350], (48, 48)))
    samples = [Sample("t:face", "t", "a", "happy", "happy", image=face),
               Sample("t:speech", "t", "b", "happy", "happy", audio=speech_wav),
               Sample("t:text", "t", "c", "happy", "happy", text="I am so glad you are here."),
               Sample("t:missing", "t", "d", "sad", "sad", image=tmp_path / "gone.png")]
    dims = cache_dims(bundle)  # as training caches them
    local = extract_table(samples, FeatureExtractor(bundle), tmp_path / "local", dims, progress=False)
    spread = extract_table(samples, FeatureExtractor(bundle, cluster=RayOptions(actors=2)), tmp_path / "ray", dims,
                           progress=False)
    assert list(local.ids) == list(spread.ids) == ["t:face", "t:speech", "t:text"]  # the unreadable one is skipped
    np.testing.assert_array_equal(local.mask, spread.mask)
    for m in local.features:
        np.testing.assert_allclose(local.features[m], spread.features[m], atol=1e-5)


def test_a_sound_file_given_as_video_says_to_pass_it_as_audio(clip_dir, session_wav):
    from ecmf_edge.capture.files import VideoFileSource

    voice = clip_dir / "voice-only.m4a"
    ffmpeg("-i", str(session_wav), "-c:a", "aac", str(voice))
    with pytest.raises(InputError, match="has sound but no video stream: pass it with --audio"):
        VideoFileSource(voice, realtime=False).open()
