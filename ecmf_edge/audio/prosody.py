"""Cheap prosody statistics: loudness, pitch, voicing, brightness and tempo of a window.

Emotion is carried by how something is said as much as by what: arousal shows in
loudness and pitch range, sadness in low, flat pitch, anger in bright, loud speech.
These 16 numbers cost well under a millisecond per second of audio and complement
the speech encoder's pooled states.
"""
from __future__ import annotations

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, check_pcm

__all__ = ["prosody_features", "PROSODY_NAMES"]

PROSODY_NAMES: tuple[str, ...] = (
    "rms_db_mean", "rms_db_std", "rms_db_p90", "rms_db_range",
    "f0_semitone_mean", "f0_semitone_std", "f0_semitone_range", "f0_slope",
    "voiced_fraction", "zcr_mean", "centroid_khz_mean", "centroid_khz_std",
    "energy_peaks_per_s", "jitter", "pause_fraction", "duration_s",
)

_FRAME = 640  # 40 ms (two periods of a 60 Hz voice)
_HOP = 160  # 10 ms
_F0_MIN, _F0_MAX = 65.0, 500.0


def _frames(x: np.ndarray) -> np.ndarray:
    if x.size < _FRAME:
        x = np.pad(x, (0, _FRAME - x.size))
    n = 1 + (x.size - _FRAME) // _HOP
    idx = np.arange(_FRAME)[None, :] + _HOP * np.arange(n)[:, None]
    return x[idx]


def _pitch(frames: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """F0 in Hz per frame with YIN's cumulative mean normalised difference (0 where unvoiced)."""
    f0 = np.zeros(len(frames), dtype=np.float64)
    lag_min, lag_max = int(SAMPLE_RATE / _F0_MAX), int(SAMPLE_RATE / _F0_MIN)
    idx = np.flatnonzero(voiced)
    if idx.size == 0:
        return f0
    sel = frames[idx] - frames[idx].mean(axis=1, keepdims=True)
    width = _FRAME - lag_max  # compare equal-length stretches for every lag
    head = sel[:, :width]
    energy = np.cumsum(sel ** 2, axis=1)
    spec_a = np.fft.rfft(sel, n=2 * _FRAME, axis=1)
    spec_b = np.fft.rfft(head, n=2 * _FRAME, axis=1)
    cross = np.fft.irfft(spec_a * np.conj(spec_b), axis=1)[:, : lag_max + 1]
    e0 = energy[:, width - 1][:, None]
    lags = np.arange(lag_max + 1)
    shifted = energy[:, lags + width - 1] - np.concatenate([np.zeros((len(sel), 1)), energy[:, lags[1:] - 1]], axis=1)
    diff = np.maximum(e0 + shifted - 2.0 * cross, 0.0)
    diff[:, 0] = 0.0
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cum, 1e-12)
    region = cmnd[:, lag_min:]
    below = region < 0.2
    first = np.where(below.any(axis=1), below.argmax(axis=1), region.argmin(axis=1))
    # walk to the local minimum after the first dip
    for k in range(len(first)):
        j = first[k]
        while j + 1 < region.shape[1] and region[k, j + 1] < region[k, j]:
            j += 1
        first[k] = j
    best = region[np.arange(len(first)), first]
    ok = best < 0.35
    f0[idx[ok]] = SAMPLE_RATE / (first[ok] + lag_min)
    return f0


def prosody_features(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """16 prosody statistics of a 16 kHz window, in :data:`PROSODY_NAMES` order.

    Silence gives defined values (loudness at the -100 dB floor, no voicing), never NaN.

    Raises:
        InputError: wrong rate, empty audio or NaN/Inf samples.
    """
    x = check_pcm(pcm, sample_rate, name="prosody input").astype(np.float64)
    frames = _frames(x)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    db = 20.0 * np.log10(np.maximum(rms, 1e-5))
    loud = db > max(db.max() - 35.0, -60.0)
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)
    voiced = loud & (zcr < 0.25)
    f0 = _pitch(frames, voiced)
    has_f0 = f0 > 0
    semis = 12.0 * np.log2(f0[has_f0] / 100.0) if has_f0.any() else np.zeros(0)
    mag = np.abs(np.fft.rfft(frames * np.hanning(_FRAME), axis=1))
    freqs = np.fft.rfftfreq(_FRAME, 1.0 / SAMPLE_RATE)
    centroid = np.einsum("tb,b->t", mag, freqs, optimize=False) / np.maximum(mag.sum(axis=1), 1e-12) / 1000.0  # no BLAS threads (see speech_encoder)
    duration = x.size / SAMPLE_RATE

    def stat(values: np.ndarray, fn, empty: float = 0.0) -> float:
        return float(fn(values)) if values.size else empty

    slope = 0.0
    if semis.size >= 3:
        t = np.flatnonzero(has_f0) * _HOP / SAMPLE_RATE
        slope = float(np.polyfit(t, semis, 1)[0])
    jitter = stat(np.abs(np.diff(semis)), np.mean) if semis.size >= 2 else 0.0
    # (mode="same" returns the longer of the two inputs: windows under 5 frames are used as they are)
    smooth = np.convolve(db, np.ones(5) / 5, mode="same") if db.size >= 5 else db
    peaks = np.sum((smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:]) & loud[1:-1] & (smooth[1:-1] > np.median(smooth) + 3.0))
    values = [
        stat(db[loud], np.mean, -100.0), stat(db[loud], np.std), float(np.percentile(db, 90)), float(db.max() - db.min()),
        stat(semis, np.mean), stat(semis, np.std), stat(semis, np.ptp), slope,
        float(has_f0.mean()), float(zcr.mean()), stat(centroid[loud], np.mean), stat(centroid[loud], np.std),
        float(peaks / max(duration, 1e-3)), jitter, float(1.0 - loud.mean()), duration,
    ]
    return np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
