"""The audio stage: streaming VAD, speech windows for the speech encoder, utterances for the text path.

Audio arrives in chunks of any size and is cut into the 512-sample steps Silero VAD
reads. Speech starts when the VAD probability reaches ``vad_threshold`` and ends after
``min_silence_s`` below ``vad_threshold - 0.15``. While someone speaks, every ``hop_s``
(the first time after ``window_min_s``) the speech heard since the last window goes through
the speech encoder once, loudness-normalised on its own (a remainder shorter than one
second is encoded with the second before it as context and counts for its new part only);
the pooled statistics of the chunks within the last ``window_max_s`` are combined exactly
(:func:`ecmf_edge.audio.speech_encoder.combine_pooled`), so a hop costs one chunk whatever
the window. The prosody statistics come from the window itself. The ``audio`` token is
``[pooled layers (3072); prosody (16)]`` (:func:`~ecmf_edge.audio.speech_encoder.audio_token`); training computes it the same way
(:meth:`SpeechEncoder.encode_chunks`). When an utterance ends, its tail is encoded and the
whole utterance is queued for the text stage (ASR -> LLM context -> text encoder). Silence
yields an absent observation ("no speech") every ``hop_s``.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, normalize_loudness
from ecmf_edge.audio.speech_encoder import CONTEXT_SAMPLES, MIN_TAIL_SAMPLES, audio_token, combine_pooled
from ecmf_edge.audio.vad import CHUNK_SAMPLES
from ecmf_edge.capture.base import AudioChunk
from ecmf_edge.stream.aligner import Observation
from ecmf_edge.stream.options import StreamOptions
from ecmf_edge.stream.stage import QueueStage, SourceStage

__all__ = ["AudioStage", "Utterance"]

_STEP_S = CHUNK_SAMPLES / SAMPLE_RATE
# Past the silence that ends an utterance: one VAD step of slack before a tick may go without its text.
_UTTERANCE_MARGIN_S = 2 * _STEP_S
# Audio kept before the VAD's speech onset, seconds (the onset is detected a little late).
_PREROLL_S = 0.2


class Utterance:
    """A finished stretch of speech queued for the text stage."""

    def __init__(self, t: float, captured: float, pcm: np.ndarray) -> None:
        # Stream time the utterance ended; capture clock time of its last chunk; 16 kHz samples.
        self.t, self.captured, self.pcm = t, captured, pcm


class AudioStage(SourceStage):
    """VAD + speech windows + utterance segmentation over an audio source (the ``audio`` modality)."""

    def __init__(self, *args: Any, vad: Any, encoder: Any, options: StreamOptions, text: QueueStage | None = None,
                 block: bool = False, branch: Any = None, **kwargs: Any) -> None:
        """``branch``: the trained speech branch; its embedding (of the speaker-normalised window) is
        the audio token. Without one (older bundles) the raw token is posted."""
        super().__init__("audio", ("audio",), *args, **kwargs)
        self.vad, self.encoder, self.options, self.text, self.block = vad, encoder, options, text, block
        self.branch = branch
        self.vad.reset()
        self._high = float(options.vad_threshold)
        self._low = max(self._high - 0.15, 0.01)
        keep = options.window_max_s + options.min_silence_s + _PREROLL_S + 1.0
        self._recent: deque[np.ndarray] = deque()  # 512-sample steps, newest last
        self._recent_max = int(np.ceil(keep / _STEP_S))
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_t: float | None = None  # stream time of _pending[0]
        self._in_speech = False
        self._speech_start = 0.0
        self._silence = 0.0
        self._last_window = 0.0
        self._utterance: list[np.ndarray] = []
        # The current utterance's encoded chunks: (stream time of their end, seconds of new speech, pooled token).
        self._chunks: deque[tuple[float, float, np.ndarray]] = deque()
        self._next_quiet = 0.0
        self._captured = 0.0
        self._vad_ms: list[float] = []
        # Utterances handed to the text stage.
        self.utterances = 0

    # -- helpers ------------------------------------------------------------------------------
    def _tail(self, end_t: float, seconds: float, now_t: float) -> np.ndarray:
        """The ``seconds`` of audio that end at stream time ``end_t`` (``now_t`` = end of the newest step)."""
        steps = list(self._recent)
        skip = int(round((now_t - end_t) / _STEP_S))
        take = int(round(seconds / _STEP_S))
        chosen = steps[max(0, len(steps) - skip - take): len(steps) - skip if skip > 0 else None]
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.float32)

    def _encode(self, end_t: float, now_t: float) -> None:
        """Encode the speech heard since the last window (ending at ``end_t``) and post the token of the last
        ``window_max_s`` of the utterance."""
        from ecmf_edge.audio.prosody import prosody_features

        opts = self.options
        elapsed, new = end_t - self._speech_start, end_t - self._last_window
        if min(elapsed, new) < 0.1:
            return
        # the new speech, reaching back to the context chunk_spans gives every span in training
        pcm = self._tail(end_t, min(max(new, CONTEXT_SAMPLES / SAMPLE_RATE), elapsed), now_t)
        started = time.perf_counter()
        chunk = np.asarray(self.encoder.encode(normalize_loudness(pcm, opts.speech_target_dbfs), SAMPLE_RATE),
                           dtype=np.float32).reshape(-1)
        encoder_ms = (time.perf_counter() - started) * 1000.0
        self._chunks.append((end_t, new, chunk))
        while self._chunks[0][0] <= end_t - opts.window_max_s + 1e-6:
            self._chunks.popleft()
        pooled = combine_pooled(np.stack([c[2] for c in self._chunks]), np.array([c[1] for c in self._chunks]),
                                self.encoder.block)
        window = self._tail(end_t, min(opts.window_max_s, elapsed), now_t)
        started = time.perf_counter()
        prosody = prosody_features(normalize_loudness(window, opts.speech_target_dbfs), SAMPLE_RATE)
        prosody_ms = (time.perf_counter() - started) * 1000.0
        vad_ms = float(np.mean(self._vad_ms)) if self._vad_ms else 0.0
        latency = {"vad": round(vad_ms, 3), "audio_encoder": round(encoder_ms, 3), "prosody": round(prosody_ms, 3)}
        token = audio_token(pooled, prosody)
        if self.branch is not None:
            started = time.perf_counter()
            token = self.branch(token)[0]
            latency["speech_head"] = round((time.perf_counter() - started) * 1000.0, 3)
        self.post(Observation("audio", end_t, self._captured, token, None, latency,
                              {"window_s": round(window.size / SAMPLE_RATE, 3), "chunk_s": round(pcm.size / SAMPLE_RATE, 3)}))

    def _quiet(self, t: float, reason: str) -> None:
        if t >= self._next_quiet:
            self.post(Observation("audio", t, self._captured, None, reason))
            self._next_quiet = t + self.options.hop_s

    def _finish_utterance(self, speech_end: float, now_t: float) -> None:
        opts = self.options
        duration = speech_end - self._speech_start
        if duration >= opts.min_utterance_s:
            if speech_end - self._last_window >= MIN_TAIL_SAMPLES / SAMPLE_RATE:
                self._encode(speech_end, now_t)
            trailing = int(round((now_t - speech_end) / _STEP_S))
            steps = self._utterance[: len(self._utterance) - trailing] if trailing else self._utterance
            if self.text is not None and steps:
                self.utterances += 1
                busy, self.busy_since = self.busy_since, None  # waiting for room is not a hang
                self.text.submit(Utterance(speech_end, self._captured, np.concatenate(steps)), block=self.block)
                self.busy_since = busy if busy is None else self.clock.now()
        self._utterance = []
        self._in_speech = False
        self._next_quiet = speech_end + opts.hop_s

    # -- the stage ----------------------------------------------------------------------------
    def handle(self, chunk: AudioChunk) -> None:
        opts = self.options
        self._captured = chunk.captured
        next_t = self._next_t  # a local copy, which mypy can narrow; self._next_t is kept equal to it
        if next_t is None or abs(chunk.t - (next_t + self._pending.size / SAMPLE_RATE)) > 2.0 / SAMPLE_RATE:
            # the first chunk, or a gap (dropped audio)
            self._pending = np.zeros(0, dtype=np.float32)
            next_t = self._next_t = chunk.t
        self._pending = np.concatenate([self._pending, np.asarray(chunk.pcm, dtype=np.float32)])
        self._vad_ms = []
        while self._pending.size >= CHUNK_SAMPLES:
            step, self._pending = self._pending[:CHUNK_SAMPLES], self._pending[CHUNK_SAMPLES:]
            t = next_t
            next_t = self._next_t = t + _STEP_S
            end_t = next_t
            started = time.perf_counter()
            p = self.vad.chunk_probability(step)
            self._vad_ms.append((time.perf_counter() - started) * 1000.0)
            self._recent.append(step)
            while len(self._recent) > self._recent_max:
                self._recent.popleft()
            if not self._in_speech:
                if p >= self._high:
                    self._in_speech, self._speech_start, self._silence = True, t, 0.0
                    self._last_window = t
                    self._chunks.clear()
                    pre = int(round(_PREROLL_S / _STEP_S))
                    self._utterance = list(self._recent)[-(pre + 1):]
                else:
                    self._quiet(end_t, "no speech (VAD)")
                continue
            self._utterance.append(step)
            self._silence = 0.0 if p >= self._low else self._silence + _STEP_S
            if self._silence >= opts.min_silence_s:
                self._finish_utterance(end_t - self._silence, end_t)
            elif end_t - self._speech_start >= opts.max_utterance_s:
                self._finish_utterance(end_t, end_t)
                self._in_speech, self._speech_start, self._last_window = True, end_t, end_t
                self._chunks.clear()
            elif end_t - self._speech_start >= opts.window_min_s and end_t - self._last_window >= opts.hop_s - 1e-6:
                self._encode(end_t, end_t)
                self._last_window = end_t

    def ready_through(self, t: float) -> bool:
        """Ready for the tick at ``t`` once every utterance that ended by ``t`` has been cut and handed to the
        text stage: an utterance ends ``min_silence_s`` before its silence is heard, so the audio must be read
        that far past ``t`` (file playback then gives the same transcripts at the same ticks on any machine)."""
        if self.text is None:
            return super().ready_through(t)
        return self.finished or self.done_t >= t + self.options.min_silence_s + _UTTERANCE_MARGIN_S - 1e-9

    def _ended(self, end_t: float) -> None:
        if self._in_speech and self._next_t is not None:
            self._finish_utterance(self._next_t, self._next_t)
        self.post(Observation("audio", end_t + 1e-3, self.clock.now(), None, "the audio ended"))
