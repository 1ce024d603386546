"""`ecmf-edge features` and `ecmf-edge doctor` end to end on real media, and their errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_video, write_wav

from ecmf_edge.cli import main
from ecmf_edge.features import FeatureExtractor
from ecmf_edge.modalities import MODALITIES


@pytest.fixture(scope="module")
def extractor(bundle):
    return FeatureExtractor(bundle)


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_features_command_writes_every_modality(capsys, bundle_root, face_video, speech_wav, tmp_path):
    out = tmp_path / "feats.npz"
    code, stdout, stderr = _run(capsys, "features", "--bundle", str(bundle_root), "--video", str(face_video),
                                "--audio", str(speech_wav), "--text", "I am so happy you came", "--out", str(out))
    assert code == 0, stderr
    data = np.load(out)
    assert list(data["modalities"]) == list(MODALITIES)
    assert data["present"].tolist() == [True, True, True, True]
    assert data["frame"].shape == (1280,) and data["text"].shape == (384,) and data["audio"].shape == (3072,)
    assert data["prosody"].shape == (16,)
    assert data["face_probs"].shape == (7,) and abs(float(data["face_probs"].sum()) - 1) < 1e-3
    info = json.loads(str(data["info"]))
    assert info["frames_with_face"] == info["frames"] > 0
    assert info["speech_segments"], "VAD found no speech in the espeak clip"
    labels = info["face_labels"]
    assert labels[int(data["face_probs"].argmax())] == "happy", "the smiling astronaut should read as happy"
    assert "face expression (FER2013 classes): happy" in stdout
    assert "transcript: I am so happy you came" in stdout


def test_features_transcribe_fills_text_from_speech(capsys, bundle_root, speech_wav, tmp_path):
    out = tmp_path / "t.npz"
    code, stdout, stderr = _run(capsys, "features", "--bundle", str(bundle_root), "--audio", str(speech_wav),
                                "--transcribe", "--out", str(out))
    assert code == 0, stderr
    data = np.load(out)
    assert data["present"].tolist() == [False, False, True, True]
    info = json.loads(str(data["info"]))
    assert "happy" in info["transcript"].lower() and info["llm_fallback"] == "no LLM loaded"
    assert data["text"].shape == (384,) and np.all(np.isfinite(data["text"]))  # the text branch's embedding


def test_transcribe_command_json(capsys, bundle_root, speech_wav):
    code, stdout, stderr = _run(capsys, "transcribe", "--bundle", str(bundle_root), "--audio", str(speech_wav), "--json")
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert "happy" in payload["text"].lower() and payload["language"] == "en"
    assert payload["segments"][0]["words"][0]["start"] >= 0 and payload["context"] is None


def test_explicit_bad_llm_is_an_error(capsys, bundle_root, speech_wav, tmp_path):
    junk = tmp_path / "bad.gguf"
    junk.write_bytes(b"nope" * 100)
    code, _, stderr = _run(capsys, "transcribe", "--bundle", str(bundle_root), "--audio", str(speech_wav), "--llm", str(junk))
    assert code == 2 and "bad.gguf is not a GGUF model file" in stderr and stderr.count("\n") == 1


def test_scene_without_face_and_silent_audio_are_absent(extractor, scene_video, tmp_path):
    silent = write_wav(tmp_path / "silent.wav", np.zeros(32000), 16000)
    features = extractor.extract(video=scene_video, audio=silent)
    assert features.present == {"frame": True, "face": False, "audio": False, "text": False}
    assert features.info["face_absent"].startswith("no face found in")
    assert "silent" in features.info["audio_absent"]
    assert features.face is None and features.audio is None


def test_black_video_has_no_face(extractor, tmp_path):
    video = make_video(tmp_path / "black.avi", [np.zeros((240, 320, 3), np.uint8)] * 5)
    features = extractor.extract(video=video)
    assert features.present["frame"] and not features.present["face"]


def test_noise_has_no_speech(extractor):
    noise = (0.05 * np.random.default_rng(1).standard_normal(32000)).astype(np.float32)
    features = extractor.from_audio(noise, 16000)
    assert features.audio is None and features.info["audio_absent"] == "no speech found by the VAD"


def test_non_16k_wav_works(extractor, speech_wav, tmp_path):
    from ecmf_edge.audio.io import load_audio, resample

    x = resample(load_audio(speech_wav), 16000, 44100)
    path = write_wav(tmp_path / "cd.wav", x, 44100)
    features = extractor.from_audio_file(path)
    assert features.audio is not None and features.audio.shape == (3072,)


@pytest.mark.parametrize("argv, message", [
    (["--video", "/nonexistent/clip.mp4"], "video file /nonexistent/clip.mp4 does not exist"),
    (["--audio", "/nonexistent/a.wav"], "audio file /nonexistent/a.wav does not exist"),
    ([], "nothing to extract"),
])
def test_features_bad_paths_are_one_line_errors(capsys, bundle_root, tmp_path, argv, message):
    code, _, stderr = _run(capsys, "features", "--bundle", str(bundle_root), *argv, "--out", str(tmp_path / "x.npz"))
    assert code == 2
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr


def test_unreadable_video_is_one_line_error(capsys, bundle_root, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 this is not a video " * 50)
    code, _, stderr = _run(capsys, "features", "--bundle", str(bundle_root), "--video", str(junk), "--out", str(tmp_path / "x.npz"))
    assert code == 2 and stderr.startswith("ecmf-edge: error: ") and stderr.count("\n") == 1
    assert "junk.mp4" in stderr


def test_doctor_reports_and_checks(capsys, bundle_root, tmp_path):
    code, stdout, _ = _run(capsys, "doctor", "--bundle", str(bundle_root), "--check")
    assert code == 0, stdout
    for key in ("face_detector", "face_encoder", "frame_encoder", "vad", "audio_encoder", "text_encoder"):
        assert key in stdout
    assert "sha256 ok" in stdout and "onnxruntime" in stdout
    code, stdout, _ = _run(capsys, "doctor", "--bundle", str(tmp_path / "missing"), "--check")
    assert code == 1 and "required check(s) failed" in stdout


def test_retired_no_llm_flag_is_a_one_line_note(capsys):
    import argparse

    from ecmf_edge.cli.common import add_llm_switch

    parser = argparse.ArgumentParser()
    add_llm_switch(parser)
    args = parser.parse_args(["--no-llm"])
    assert args.llm is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-llm is no longer needed" in err
