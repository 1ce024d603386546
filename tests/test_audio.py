"""Audio reading, resampling, VAD and prosody on real (espeak-ng) speech."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import espeak, write_wav

from ecmf_edge.audio.io import check_pcm, load_audio, resample
from ecmf_edge.audio.prosody import PROSODY_NAMES, prosody_features
from ecmf_edge.audio.vad import VoiceActivityDetector
from ecmf_edge.errors import InputError


@pytest.fixture(scope="module")
def vad(bundle):
    return VoiceActivityDetector.from_bundle(bundle)


def _dominant_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / rate)[spectrum.argmax()]


@pytest.mark.parametrize("rate_in", [8000, 22050, 44100, 48000])
def test_resample_keeps_pitch_and_length(rate_in):
    t = np.arange(rate_in) / rate_in
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(tone, rate_in, 16000)
    assert abs(out.size - 16000) <= 1
    assert abs(_dominant_hz(out, 16000) - 440) < 2


def test_downsampling_removes_content_above_new_nyquist():
    rate = 48000
    t = np.arange(rate) / rate
    high = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # above 8 kHz: must not alias into the band
    out = resample(high, rate, 16000)
    assert np.sqrt(np.mean(out[200:-200] ** 2)) < 0.02


def test_non_16k_wav_is_resampled(tmp_path):
    path = espeak("Testing a forty-four kilohertz recording.", tmp_path / "a.wav", rate=44100)
    x = load_audio(path)
    ref = load_audio(espeak("Testing a forty-four kilohertz recording.", tmp_path / "b.wav", rate=16000))
    assert abs(x.size - ref.size) < 16000 * 0.01
    assert np.corrcoef(x[: ref.size], ref[: x.size])[0, 1] > 0.9


def test_vad_finds_the_speech_span(vad, padded_speech):
    pcm, start, end = padded_speech
    segments = vad.segments(pcm)
    assert segments, "no speech found"
    assert abs(segments[0].start - start) < 0.25
    assert abs(segments[-1].end - end) < 0.35
    assert all(start - 0.25 <= s.start and s.end <= end + 0.35 for s in segments)


def test_vad_on_silence_and_noise_finds_nothing(vad):
    rng = np.random.default_rng(0)
    assert vad.segments(np.zeros(32000, np.float32)) == []
    assert vad.segments((0.01 * rng.standard_normal(32000)).astype(np.float32)) == []


def test_vad_state_is_explicit(vad, padded_speech):
    pcm = padded_speech[0]
    first = vad.probabilities(pcm)
    assert np.array_equal(first, vad.probabilities(pcm)), "state leaked between clips"
    with pytest.raises(InputError, match="VAD chunks must be 512 samples"):
        vad.chunk_probability(np.zeros(480, np.float32))


def test_prosody_of_speech_vs_silence(speech_wav):
    speech = prosody_features(load_audio(speech_wav))
    silence = prosody_features(np.zeros(16000, np.float32))
    assert speech.shape == silence.shape == (len(PROSODY_NAMES),)
    named = dict(zip(PROSODY_NAMES, speech))
    assert named["voiced_fraction"] > 0.3 and silence[PROSODY_NAMES.index("voiced_fraction")] == 0
    assert 70 < 100 * 2 ** (named["f0_semitone_mean"] / 12) < 250  # espeak's male voice
    assert np.all(np.isfinite(silence))


def test_prosody_tracks_pitch():
    rate = 16000
    t = np.arange(rate) / rate
    low = prosody_features((0.3 * np.sin(2 * np.pi * 120 * t)).astype(np.float32))
    high = prosody_features((0.3 * np.sin(2 * np.pi * 240 * t)).astype(np.float32))
    i = PROSODY_NAMES.index("f0_semitone_mean")
    assert abs((high[i] - low[i]) - 12.0) < 0.5


@pytest.mark.parametrize("pcm, rate, message", [
    (np.zeros(0, np.float32), 16000, "audio is empty"),
    (np.array([0.0, np.nan] * 800, np.float32), 16000, "NaN or Inf"),
    (np.zeros(8000, np.float32), 8000, "8000 Hz but the models need 16000 Hz"),
    (np.zeros((2, 3, 4), np.float32), 16000, "must be 1-D"),
    (np.zeros(100, np.complex64), 16000, "not supported"),
])
def test_bad_pcm(pcm, rate, message):
    with pytest.raises(InputError, match=message):
        check_pcm(pcm, rate)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "none.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(InputError, match="not a readable PCM WAV file"):
        load_audio(tmp_path / "junk.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(InputError, match="contains no audio samples"):
        load_audio(tmp_path / "empty.wav")
