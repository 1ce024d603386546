"""Speech encoder of the audio branch: Whisper-base encoder states and a pooled vector.

``SpeechEncoder.encode`` turns 16 kHz mono PCM into the audio token (concat of mean and
std over time of Whisper-base encoder layers: 3072 values, layers 0-2, in bundles of this
version; 1024, one layer, in older ones), computed by the bundle's ``audio_encoder.onnx``. The log-mel front end is numpy only and equals faster-whisper's
``FeatureExtractor`` (Slaney mel, n_fft 400, hop 160, Whisper normalisation). Unlike
Whisper's ASR the input is not padded to 30 s: only the actual audio (at least
``min_frames``, at most 3000 frames) goes through the encoder.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.audio.io import normalize_loudness
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND, SAMPLE_RATE

__all__ = ["SpeechEncoder", "log_mel", "prepare_mel", "mel_filters", "chunk_spans", "combine_pooled", "audio_token",
           "CHUNK_SAMPLES", "SAMPLE_RATE", "MODEL_KEY"]

logger = logging.getLogger("ecmf_edge")

MODEL_KEY = "audio_encoder"
N_FFT = 400
HOP = 160
N_MELS = 80
MAX_FRAMES = 3000
MIN_FRAMES = 100
# Shortest accepted input, seconds.
MIN_SECONDS = 0.1
# Speech is encoded in chunks of this many samples (the live loop's 1 s hop), each once, and the chunks'
# pooled statistics combined (combine_pooled): a hop costs one chunk whatever the window. A remainder
# shorter than MIN_TAIL_SAMPLES at the end of an utterance is not encoded.
CHUNK_SAMPLES = SAMPLE_RATE
MIN_TAIL_SAMPLES = SAMPLE_RATE // 4
# How much speech each chunk is encoded with (its new second and the context before it).
CONTEXT_SAMPLES = SAMPLE_RATE
# A float signal peaking above this is integer PCM passed as float, not [-1, 1] audio.
_MAX_FLOAT_PEAK = 2.0
_LOG_FLOOR = -10.0  # log10 of the 1e-10 power clip: what digital silence gives


@lru_cache(maxsize=4)
def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank (n_mels, n_fft // 2 + 1), as Whisper uses."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mels = np.linspace(0.0, 45.245640471924965, n_mels + 2)  # 0 Hz .. 8 kHz in Slaney mel
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_mel = 1000.0 / f_sp
    log_region = mels >= min_log_mel
    freqs[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log_region] - min_log_mel))
    fdiff = np.diff(freqs)
    ramps = freqs.reshape(-1, 1) - fft_freqs.reshape(1, -1)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2 : n_mels + 2] - freqs[:n_mels]))[:, None]
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


def _log_power_mel(audio: np.ndarray) -> np.ndarray:
    """log10 mel power (80, len // 160 + 1), framed exactly like faster-whisper (160 zeros appended)."""
    x = np.pad(audio.astype(np.float32, copy=False), (0, HOP))
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (x.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n_frames, N_FFT), (HOP * x.strides[0], x.strides[0]))
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    spectrum = np.fft.rfft(frames * window, n=N_FFT, axis=-1).astype(np.complex64)
    power = (np.abs(spectrum[:-1]) ** 2).T  # (freq, frames); last frame dropped as Whisper does
    # einsum, not ``@``: a BLAS call wakes numpy's OpenBLAS threads, which then spin and take the cores
    # from the ONNX Runtime session that runs right after (4 s window: 59 ms with ``@``, 23 ms with einsum).
    return np.log10(np.clip(np.einsum("mf,ft->mt", mel_filters(), power, optimize=False), 1e-10, None))


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper log-mel (80, len // 160 + 1) of 16 kHz float audio.

    Normalisation: ``log10(clip(mel, 1e-10))``, ``max(x, x.max() - 8)``, ``(x + 4) / 4``.
    """
    log_spec = _log_power_mel(audio)
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def prepare_mel(audio: np.ndarray, max_frames: int = MAX_FRAMES, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """The encoder input (1, 80, T) of validated 16 kHz float audio.

    Audio longer than ``max_frames`` (30 s) is truncated; T is made even by dropping the
    last frame; inputs shorter than ``min_frames`` are padded with Whisper's silence value
    (the normalised log floor that digital silence gives).
    """
    audio = audio[: max_frames * HOP]
    log_spec = _log_power_mel(audio)
    floor = max(float(log_spec.max()) - 8.0, _LOG_FLOOR)
    mel = (np.maximum(log_spec, floor) + 4.0) / 4.0
    frames = min(mel.shape[1], max_frames)
    frames -= frames % 2
    mel = mel[:, :frames]
    target = max(frames, min_frames + min_frames % 2)
    if target > frames:
        mel = np.pad(mel, ((0, 0), (0, target - frames)), constant_values=(floor + 4.0) / 4.0)
    return np.ascontiguousarray(mel[None], dtype=np.float32)


def _validate(pcm: Any, sample_rate: Any) -> np.ndarray:
    """Validated mono float32 audio in [-1, 1]; InputError naming the fix otherwise."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise InputError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}: pass 16000")
    if int(sample_rate) != SAMPLE_RATE:
        raise InputError(
            f"speech encoder needs 16 kHz audio, got {int(sample_rate)} Hz: resample to 16 kHz first "
            "with ecmf_edge.audio.io.resample(pcm, rate, 16000)"
        )
    audio = np.asarray(pcm)
    if audio.ndim != 1:
        raise InputError(f"speech encoder needs 1-D mono audio, got shape {audio.shape}: average the channels first")
    if audio.size == 0:
        raise InputError("audio is empty: pass at least 0.1 s of 16 kHz mono samples")
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif np.issubdtype(audio.dtype, np.floating):
        audio = audio.astype(np.float32, copy=False)
        if not np.all(np.isfinite(audio)):
            raise InputError("audio contains NaN or Inf samples: clean the signal (e.g. np.nan_to_num) before encoding")
        peak = float(np.max(np.abs(audio)))
        if peak > _MAX_FLOAT_PEAK:
            raise InputError(
                f"float audio peaks at {peak:.3g}, expected [-1, 1]: divide integer PCM by 32768 or pass int16 samples"
            )
    else:
        raise InputError(f"audio dtype {audio.dtype} is not supported: pass float32 in [-1, 1] or int16 PCM")
    if audio.size < int(MIN_SECONDS * SAMPLE_RATE):
        raise InputError(
            f"audio is too short ({audio.size / SAMPLE_RATE:.3f} s): pass at least {MIN_SECONDS} s of 16 kHz audio"
        )
    return audio


def chunk_spans(n_samples: int, hop: int = CHUNK_SAMPLES, window: int = CONTEXT_SAMPLES,
                min_tail: int = MIN_TAIL_SAMPLES) -> list[tuple[int, int, int]]:
    """How a stream that encodes the new speech of every ``hop`` once sees ``n_samples`` of it: ``(start, end, new)``
    sample spans to encode, each ending where a hop ends and reaching back ``window`` samples (``new`` of them not
    seen before; the rest is context, within the speech). A remainder of at least ``min_tail`` samples after the last
    whole hop is one more span; speech no longer than one hop is one span."""
    if n_samples <= hop:
        return [(0, n_samples, n_samples)]
    ends = list(range(hop, n_samples + 1, hop))
    if n_samples - ends[-1] >= min_tail:
        ends.append(n_samples)
    spans, done = [], 0
    for end in ends:
        new = end - done
        spans.append((max(0, end - max(window, new)), end, new))
        done = end
    return spans


def combine_pooled(tokens: np.ndarray, weights: np.ndarray, block: int) -> np.ndarray:
    """The pooled token of a stretch of speech from the pooled tokens of its chunks.

    ``tokens`` (K, D): each chunk's concat over layers of (mean, population std) over time, ``block`` values
    each; ``weights`` (K,): how much speech each chunk stands for. Mean and std are recombined exactly
    (law of total variance), as if the stretch's frames had been pooled together.
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    k, dim = tokens.shape
    if dim % (2 * block):
        raise ValueError(f"a {dim}-value token is not (mean, std) blocks of {block}")
    parts = tokens.reshape(k, dim // (2 * block), 2, block)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = np.einsum("k,klc->lc", w, parts[:, :, 0])
    second = np.einsum("k,klc->lc", w, parts[:, :, 1] ** 2 + parts[:, :, 0] ** 2)
    std = np.sqrt(np.maximum(second - mean ** 2, 0.0))
    return np.stack([mean, std], axis=1).reshape(dim).astype(np.float32)


def audio_token(pooled: np.ndarray, prosody: np.ndarray) -> np.ndarray:
    """The raw ``audio`` token, the speech branch's input: ``[pooled encoder statistics; prosody]``.

    ``pooled``: the speech encoder's token of the speech (:meth:`SpeechEncoder.encode`, :meth:`~SpeechEncoder.encode_chunks`
    or :func:`combine_pooled` of chunks; 3072 values in bundles of this version); ``prosody``: the 16
    :func:`~ecmf_edge.audio.prosody.prosody_features` of the same speech. Training, streams, ``predict``,
    quantization gates and benchmarks all build the token here (float32, 1-D).
    """
    return np.concatenate([np.asarray(pooled, dtype=np.float32).reshape(-1),
                           np.asarray(prosody, dtype=np.float32).reshape(-1)])


class SpeechEncoder:
    """Whisper-base encoder on an ONNX Runtime session: PCM -> the pooled audio token or the encoder states."""

    def __init__(self, session, spec: Mapping[str, Any] | None = None, token_session=None) -> None:
        """Wrap an ``onnxruntime.InferenceSession`` of ``audio_encoder.onnx`` and, when given, one of the
        truncated graph that computes only the audio token (``audio_encoder_token.onnx``), which
        :meth:`encode` then runs. ``session`` may be a callable that opens the full session on first use.

        Raises:
            ModelError: the session does not have the ``mel`` input and ``states``/``pooled`` outputs.
        """
        self.spec = dict(spec or {})
        self._session, self._session_lock = session, threading.Lock()
        self.token_session = token_session
        if token_session is not None:
            names = {o.name for o in token_session.get_outputs()}
            token = str(self.spec.get("attributes", {}).get("token_output", "pooled"))
            if names != {token}:
                raise ModelError(f"truncated audio encoder has outputs {sorted(names)}, expected {token}: "
                                 f"run `{REBUILD_COMMAND}`")
        if callable(session) and not hasattr(session, "run"):
            self._check_preprocessing()
            self.token_output = str(self.spec.get("attributes", {}).get("token_output", "pooled"))
            return
        self._check_session(session)

    @property
    def session(self):
        """The full encoder's session (opened on first use when only the token graph was needed so far)."""
        with self._session_lock:
            if callable(self._session) and not hasattr(self._session, "run"):
                session = self._session()
                self._check_session(session)
                self._session = session
            return self._session

    def _check_preprocessing(self) -> None:
        pre = self.spec.get("preprocessing", {})
        if int(pre.get("sample_rate", SAMPLE_RATE)) != SAMPLE_RATE or int(pre.get("n_mels", N_MELS)) != N_MELS:
            raise ModelError(f"audio encoder preprocessing in the manifest is not 16 kHz / 80 mel: run `{REBUILD_COMMAND}`")
        self.max_frames = int(pre.get("max_frames", MAX_FRAMES))
        self.min_frames = int(pre.get("min_frames", MIN_FRAMES))
        attributes = self.spec.get("attributes", {})
        # size of what encode() returns: the audio token (older bundles: the last layer's pooled vector)
        self.dim = int(attributes.get("token_dim", attributes.get("pooled_dim", 2 * 512)))
        # width of one mean or std block of the token (the encoder's state size)
        self.block = int(attributes.get("state_dim", 512))

    def _check_session(self, session) -> None:
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if "mel" not in inputs or not {"states", "pooled"} <= outputs:
            raise ModelError(
                f"audio encoder model has inputs {sorted(inputs)} and outputs {sorted(outputs)}, expected mel -> states, pooled: "
                f"run `{REBUILD_COMMAND}`"
            )
        self._check_preprocessing()
        # Which pooled output is the audio token (the speech branch's input): bundles from
        # this version pool a middle layer ("pooled_mid"); older ones only the last ("pooled").
        self.token_output = str(self.spec.get("attributes", {}).get("token_output", "pooled"))
        if self.token_output not in outputs:
            raise ModelError(f"audio encoder model has no '{self.token_output}' output named in its manifest: "
                             f"run `{REBUILD_COMMAND}`")

    @classmethod
    def from_bundle(cls, bundle) -> SpeechEncoder:
        """The speech encoder of an opened bundle (``bundle.spec(key)``, ``bundle.session(file)``).

        Raises:
            ModelError: the bundle has no audio encoder or its file cannot be loaded.
        """
        spec = bundle.spec(MODEL_KEY)
        if not spec or "file" not in spec:
            raise ModelError(f"bundle has no '{MODEL_KEY}' model: run `{REBUILD_COMMAND}`")
        token_file = spec.get("attributes", {}).get("token_file")
        if token_file and token_file in spec.get("extra_files", []) and Path(token_file).suffix == Path(spec["file"]).suffix:
            # streams need only the token: the full graph is opened when states or the last layer are asked for
            return cls(lambda: bundle.session(spec["file"]), spec, token_session=bundle.session(token_file))
        return cls(bundle.session(spec["file"]), spec)

    def _run(self, pcm: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        audio = _validate(pcm, sample_rate)
        if audio.size > self.max_frames * HOP:
            logger.debug("speech encoder: %.1f s of audio truncated to %.1f s", audio.size / SAMPLE_RATE, self.max_frames * HOP / SAMPLE_RATE)
        mel = prepare_mel(audio, self.max_frames, self.min_frames)
        try:
            states, pooled = self.session.run(["states", self.token_output], {"mel": mel})
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"audio encoder failed on a {mel.shape} input ({first[:160]}): run `{REBUILD_COMMAND}`") from None
        return states[0].astype(np.float32, copy=False), pooled[0].astype(np.float32, copy=False)

    def _run_token(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = _validate(pcm, sample_rate)
        mel = prepare_mel(audio, self.max_frames, self.min_frames)
        try:
            (pooled,) = self.token_session.run([self.token_output], {"mel": mel})
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"audio encoder failed on a {mel.shape} input ({first[:160]}): run `{REBUILD_COMMAND}`") from None
        return pooled[0].astype(np.float32, copy=False)

    def encode(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """The audio token (``dim``,) float32: concat(mean, std) over time of the encoder states of the
        layers the manifest names (``token_output``: layers 0-2, 3072 values, in bundles of this version;
        the last layer, 1024, in older ones).

        ``pcm`` is 1-D float audio in [-1, 1] or int16 PCM at 16 kHz, at least 0.1 s long;
        audio after 30 s is ignored.

        Raises:
            InputError: empty, too short, non-finite, multi-channel or non-16 kHz audio.
            ModelError: the ONNX session fails.
        """
        if self.token_session is not None:
            return self._run_token(pcm, sample_rate)
        return self._run(pcm, sample_rate)[1]

    def encode_chunks(self, pcm: np.ndarray, sample_rate: int, target_dbfs: float | None = None) -> np.ndarray:
        """The audio token of a stretch of speech as the live loop computes it: each span of
        :func:`chunk_spans` loudness-normalised to ``target_dbfs`` on its own and encoded once, the spans'
        pooled statistics combined (:func:`combine_pooled`). Training and file labelling use this, so
        their tokens are the ones a stream produces.

        Raises:
            InputError: empty, too short, non-finite, multi-channel or non-16 kHz audio.
            ModelError: the ONNX session fails.
        """
        audio = _validate(pcm, sample_rate)
        spans = chunk_spans(audio.size)
        tokens = np.stack([self.encode(normalize_loudness(audio[start:end], target_dbfs), SAMPLE_RATE)
                           for start, end, _ in spans])
        return combine_pooled(tokens, np.array([new for *_, new in spans], np.float64), self.block)

    def encode_states(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """Encoder states (T/2, 512) float32, one per 20 ms (T = mel frames, >= min_frames).

        Raises:
            InputError: empty, too short, non-finite, multi-channel or non-16 kHz audio.
            ModelError: the ONNX session fails.
        """
        return self._run(pcm, sample_rate)[0]
