"""Reading, checking and resampling audio.

Everything downstream works on 16 kHz mono float32 in [-1, 1]. WAV files are read
with the standard library (PCM 8/16/24/32-bit and 32-bit float); other sample rates
are resampled here with a windowed-sinc interpolator.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.modalities import SAMPLE_RATE

__all__ = ["SAMPLE_RATE", "SPEECH_TARGET_DBFS", "SILENCE_DBFS", "load_audio", "to_float_mono", "resample", "check_pcm",
           "rms_dbfs", "normalize_loudness", "samples_for_models"]

# The RMS loudness (dBFS) speech is scaled to before the speech encoder and prosody read it, so quiet and
# loud recordings look alike: the level of every audio token in training, streams, predict and benchmarks.
SPEECH_TARGET_DBFS = -23.0
# Below this RMS loudness (dBFS) audio counts as silent: no VAD, no speech recognition.
SILENCE_DBFS = -60.0


def to_float_mono(samples: np.ndarray) -> np.ndarray:
    """Convert int16/int32/float (N,) or (N, channels) audio to float32 mono in [-1, 1].

    Raises:
        InputError: unsupported dtype or shape.
    """
    x = np.asarray(samples)
    if x.ndim == 2:
        if x.shape[1] > 16 and x.shape[0] <= 16:
            x = x.T  # (channels, N) -> (N, channels)
        x = x.astype(np.float64).mean(axis=1) if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64).mean(axis=1).astype(x.dtype)
    if x.ndim != 1:
        raise InputError(f"audio must be 1-D (samples,) or 2-D (samples, channels), got shape {tuple(np.shape(samples))}: "
                         "pass mono samples or one column per channel")
    if x.dtype == np.int16:
        return (x.astype(np.float32) / 32768.0)
    if x.dtype == np.int32:
        return (x.astype(np.float32) / 2147483648.0)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise InputError(f"audio dtype {x.dtype} is not supported: pass int16, int32 or float samples")


def check_pcm(pcm: np.ndarray, sample_rate: int, *, min_seconds: float = 0.0, name: str = "audio") -> np.ndarray:
    """Validate audio for a 16 kHz model and return it as float32 mono.

    Raises:
        InputError: wrong rate, empty, too short, or NaN/Inf samples.
    """
    if int(sample_rate) != SAMPLE_RATE:
        raise InputError(
            f"{name} is {sample_rate} Hz but the models need {SAMPLE_RATE} Hz: "
            f"resample it first with ecmf_edge.audio.io.resample(pcm, {sample_rate}, {SAMPLE_RATE})"
        )
    x = to_float_mono(pcm)
    if x.size == 0:
        raise InputError(f"{name} is empty: pass at least {max(min_seconds, 0.1):g} s of 16 kHz samples")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or Inf samples: clean the signal before passing it")
    if x.size < int(min_seconds * SAMPLE_RATE):
        raise InputError(f"{name} is {x.size / SAMPLE_RATE:.3f} s long, shorter than the {min_seconds:g} s minimum: pass a longer window")
    return x


def rms_dbfs(x: np.ndarray) -> float:
    """Loudness of a float signal as RMS in dB relative to full scale (-inf for silence)."""
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def normalize_loudness(x: np.ndarray, target_dbfs: float | None) -> np.ndarray:
    """Scale speech to ``target_dbfs`` RMS, never past a 0.99 peak (None: unchanged)."""
    if target_dbfs is None or x.size == 0:
        return x
    level = rms_dbfs(x)
    if not np.isfinite(level):
        return x
    gain = 10.0 ** ((target_dbfs - level) / 20.0)
    peak = float(np.max(np.abs(x)))
    if peak > 0:
        gain = min(gain, 0.99 / peak)
    return (x * gain).astype(np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE, half_width: int = 16) -> np.ndarray:
    """Band-limited resampling of mono float audio with a Hann-windowed sinc.

    ``half_width`` input samples on each side contribute to an output sample; the
    cut-off sits just below the lower Nyquist frequency so downsampling does not alias.
    """
    x = to_float_mono(x)
    if rate_in <= 0 or rate_out <= 0:
        raise InputError(f"sample rates must be positive, got {rate_in} -> {rate_out}: pass the audio's rate in Hz (e.g. 16000)")
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    ratio = rate_out / rate_in
    cutoff = 0.95 * min(1.0, ratio)  # relative to the input Nyquist
    n_out = int(np.floor(x.size * ratio))
    out = np.empty(n_out, dtype=np.float32)
    padded = np.pad(x.astype(np.float64), (half_width, half_width + 1))
    taps = np.arange(-half_width + 1, half_width + 1)
    step = 1 << 16  # bound memory: process output in blocks
    for start in range(0, n_out, step):
        t = np.arange(start, min(start + step, n_out)) / ratio
        base = np.floor(t).astype(np.int64)
        frac = t - base
        offsets = taps[None, :] - frac[:, None]
        window = 0.5 + 0.5 * np.cos(np.pi * offsets / (half_width + 1))
        kernel = cutoff * np.sinc(cutoff * offsets) * window
        idx = base[:, None] + taps[None, :] + half_width
        out[start:start + len(t)] = np.sum(padded[idx] * kernel, axis=1)
    return out


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read the sound of a media file as float32 mono at ``sample_rate`` (resampled if needed): PCM and
    float WAV directly, every other container and codec (mp3, m4a/aac, flac, ogg/opus, webm, mp4, mkv,
    flv ...) through PyAV.

    Raises:
        InputError: missing, unreadable or empty file, or one without sound.
        DependencyError: a non-WAV file and PyAV is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} does not exist: check the path")
    if path.suffix.lower() not in (".wav", ".wave"):
        from ecmf_edge.audio.media import decode_audio

        return decode_audio(path, sample_rate)
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate, frames = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            raw = wav.readframes(frames)
    except (wave.Error, EOFError) as exc:
        if "unknown format: 3" in str(exc):
            return _load_float_wav(path, sample_rate)
        if "unknown format" in str(exc):  # a compressed WAV codec (ADPCM, mu-law ...): FFmpeg reads it
            from ecmf_edge.audio.media import decode_audio

            return decode_audio(path, sample_rate)
        raise InputError(
            f"{path} is not a readable PCM WAV file ({exc}): convert it with `ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`"
        ) from None
    if frames == 0 or not raw:
        raise InputError(f"{path} contains no audio samples: record or choose a non-empty file")
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        data = (b[:, 0].astype(np.int32) << 8 | b[:, 1].astype(np.int32) << 16 | b[:, 2].astype(np.int32) << 24)
    else:
        dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
        if dtype is None:
            raise InputError(f"{path} has {8 * width}-bit samples: convert it with `ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`")
        data = np.frombuffer(raw[: len(raw) - len(raw) % (width * channels)], dtype=dtype)
    x = to_float_mono(data.reshape(-1, channels)) if channels > 1 else to_float_mono(data)
    return resample(x, rate, sample_rate) if rate != sample_rate else x


def _load_float_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Minimal reader for IEEE-float WAV (format 3), which the ``wave`` module rejects."""
    import struct

    blob = path.read_bytes()
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise InputError(f"{path} is not a WAV file: convert it with `ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(blob):
        cid, size = blob[pos:pos + 4], struct.unpack("<I", blob[pos + 4:pos + 8])[0]
        body = blob[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None or fmt[0] != 3 or fmt[5] not in (32, 64):
        raise InputError(f"{path} is not a supported WAV file: convert it with `ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`")
    channels, rate = fmt[1], fmt[2]
    samples = np.frombuffer(data[: len(data) - len(data) % (fmt[5] // 8 * channels)], dtype=np.float32 if fmt[5] == 32 else np.float64)
    if samples.size == 0:
        raise InputError(f"{path} contains no audio samples: record or choose a non-empty file")
    x = to_float_mono(samples.reshape(-1, channels)) if channels > 1 else to_float_mono(samples)
    return resample(x, rate, sample_rate) if rate != sample_rate else x


def samples_for_models(samples: np.ndarray, sample_rate: int | None) -> np.ndarray:
    """Audio handed in as an array (``predict(audio=...)``) as float32 mono at 16 kHz.

    The models read one channel: several channels (either layout) are averaged, with a warning, since
    a caller that meant mono may have passed the wrong array. A rate that is not given cannot be known
    from samples: 16 kHz is assumed, with a warning (audio at another rate gives another label).

    Raises:
        InputError: a rate that is not a positive integer, or samples of the wrong type or shape.
    """
    import warnings

    if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer))
                                    or sample_rate <= 0):
        raise InputError(f"sample_rate={sample_rate!r} is invalid: pass the audio's rate in Hz (e.g. 16000)")
    x = np.asarray(samples)
    if x.ndim == 2 and min(x.shape) > 1:
        warnings.warn(f"audio has {min(x.shape)} channels {tuple(x.shape)}: averaged to mono (pass one channel to "
                      "choose it yourself)", UserWarning, stacklevel=3)
    if sample_rate is None:
        warnings.warn(f"audio given without sample_rate: assuming {SAMPLE_RATE} Hz (pass sample_rate=, e.g. 44100; "
                      "audio at another rate gives another label)", UserWarning, stacklevel=3)
        sample_rate = SAMPLE_RATE
    pcm = to_float_mono(x)
    return pcm if int(sample_rate) == SAMPLE_RATE else resample(pcm, int(sample_rate), SAMPLE_RATE)
