"""Speech recognition on the CPU: Whisper base (CTranslate2, int8) through faster-whisper.

The model folder is part of the bundle (``whisper-base-ct2/``, assembled by
``ecmf-edge export`` from registry packages), so nothing is downloaded. Audio is cut
into utterances by the bundle's VAD first: Whisper invents words on silence and noise,
so audio without speech never reaches it, and long monologues are transcribed in
chunks of at most 30 s split at pauses.

Two ways to decode a chunk:

- **text only** (``word_timestamps=False``, what the live loop uses): the chunk's log-mel
  frames go to the encoder once, padded to a window that fits the speech
  (``window="fit"``: the chunk plus ``window_margin_s``, at least ``min_window_s``) rather
  than to Whisper's 30 s; the language is read from that one encoder pass, and the
  decoder runs greedily without timestamps. A short utterance then costs a fraction of a
  30 s window (``benchmarks/asr.py`` measures cost and word error rate). On a short window
  Whisper sometimes repeats the last phrase instead of ending: a repeated tail is cut to one
  copy (:func:`cut_repeated_tail`). A result that still looks like a failed decode (repetitive
  text, text that fills the token limit, or unsure text with fewer words than the audio holds)
  is decoded again over the full 30 s window.
- **with word times** (``word_timestamps=True``, ``ecmf-edge transcribe``): faster-whisper's
  own loop over the full 30 s window, with timestamps, word alignment and its temperature
  fallback.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, SILENCE_DBFS, check_pcm, rms_dbfs
from ecmf_edge.errors import DependencyError, InputError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["SpeechRecognizer", "AsrOptions", "Transcript", "TranscriptSegment", "Word", "cut_repeated_tail", "not_language"]

logger = logging.getLogger("ecmf_edge")

# Whisper's context window: longer speech is split at VAD pauses into chunks up to this length.
MAX_CHUNK_SECONDS = 30.0
# Log-mel frames per second of audio (10 ms hop) and the most the encoder takes (30 s).
FRAMES_PER_SECOND = 100
MAX_FRAMES = int(MAX_CHUNK_SECONDS * FRAMES_PER_SECOND)
# Whisper's decoder context (tokens) and a generous ceiling of tokens per second of speech.
MAX_TOKENS = 448
TOKENS_PER_SECOND = 12
# A text-only result is decoded again over 30 s when it is this repetitive (faster-whisper's
# gzip compression-ratio threshold), fills the token limit, or is unsure (average log-probability
# below RETRY_AVG_LOGPROB) with fewer words than RETRY_WORDS_PER_SECOND per second of audio (people
# say 2-3): the decoder stopped early. Unsure alone is not a reason: short utterances often score
# below -1, and the 30 s window read them no better.
RETRY_COMPRESSION_RATIO = 2.4
RETRY_AVG_LOGPROB = -1.0
RETRY_WORDS_PER_SECOND = 1.0
# A chunk Whisper rates as non-speech above no_speech_threshold with text this unsure is dropped.
SILENT_AVG_LOGPROB = -1.0
WINDOWS = ("fit", "full")


@dataclass(frozen=True)
class AsrOptions:
    """How speech is transcribed."""

    # ISO 639-1 code ("en", "de", ...) or None to detect the language per utterance.
    language: str | None = None
    # CTranslate2 compute type on the CPU: "int8" (fastest), "int8_float32" or "float32".
    compute_type: str = "int8"
    # CPU threads for CTranslate2 (0 = its default). 1 by default: in a live stream the transcript is
    # asynchronous, and a second ASR thread takes the core the vision stages need when an utterance
    # ends (two streams on two cores then drop frames); `ecmf-edge transcribe` uses 2.
    threads: int = 1
    # Beam width; 1 is greedy decoding (fastest, what a live loop wants).
    beam_size: int = 1
    # Per-word start/end times: faster-whisper's full loop over a 30 s window (slower). Without them
    # only the text is decoded, over the window below.
    word_timestamps: bool = False
    # Encoder window for text-only decoding: "fit" pads a chunk to its length plus window_margin_s
    # (at least min_window_s), "full" to Whisper's 30 s.
    window: str = "fit"
    window_margin_s: float = 2.0
    min_window_s: float = 4.0
    # Speech shorter than this (seconds) is not transcribed: a blip carries no words.
    min_speech_seconds: float = 0.3
    # Segments Whisper itself rates as probably not speech above this are dropped.
    no_speech_threshold: float = 0.6

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise InputError(f"ASR window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        if not 0.0 <= self.window_margin_s <= MAX_CHUNK_SECONDS or not 0.0 < self.min_window_s <= MAX_CHUNK_SECONDS:
            raise InputError(f"ASR window_margin_s and min_window_s must lie within 0-{MAX_CHUNK_SECONDS:.0f} s "
                             f"(min_window_s above 0), got {self.window_margin_s} and {self.min_window_s}")

    def window_frames(self, seconds: float) -> int:
        """Encoder frames for a chunk of ``seconds`` of audio in text-only decoding."""
        if self.window == "full":
            return MAX_FRAMES
        wanted = max(seconds + self.window_margin_s, self.min_window_s)
        return min(MAX_FRAMES, int(np.ceil(wanted)) * FRAMES_PER_SECOND)


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span (seconds from the start of the audio)."""

    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class TranscriptSegment:
    """A stretch of recognised text with timestamps and Whisper's own confidence."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """What was said in a piece of audio; ``text`` is empty when nothing was recognised."""

    text: str
    language: str | None
    language_probability: float
    segments: tuple[TranscriptSegment, ...]
    # Audio length and wall-clock time spent, for the real-time factor.
    audio_seconds: float
    elapsed_seconds: float
    # Why the transcript is empty (no speech, too short, silent ...), else None.
    empty_reason: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # True when Whisper gave words that are not language (:func:`not_language`): dropped, ``empty_reason`` says why.
    rejected: bool = False

    @property
    def real_time_factor(self) -> float:
        """Processing time divided by audio length (< 1 is faster than real time)."""
        return self.elapsed_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    @property
    def is_empty(self) -> bool:
        return not self.text


# Below this probability of Whisper's language guess, events report the language as "unsure" (with the
# probability): a short or accented utterance can be guessed as a near language (Mandarin read as "ko").
LANGUAGE_SURE = 0.5


def reported_language(language: str | None, probability: float) -> str | None:
    """What events say was heard: Whisper's guess when it is sure enough (:data:`LANGUAGE_SURE`), else "unsure"
    (None before anything was transcribed). The text branch's language gate still uses the guess itself."""
    if language is None:
        return None
    return language if probability >= LANGUAGE_SURE else "unsure"


def _empty(reason: str, audio_seconds: float, elapsed: float, language: str | None = None,
           probability: float = 0.0, rejected: bool = False) -> Transcript:
    return Transcript("", language, probability, (), audio_seconds, elapsed, empty_reason=reason, rejected=rejected)


# A transcript is not language when one token makes up at least this share of it and is a single letter repeated
# four or more times ("N-N-N-N-N-N") or any word repeated six or more times ("the the the the the the"; "I I I I think
# so", "oh, oh, oh, no!" and "yeah yeah yeah yeah yeah" are speech), or when Whisper was this unsure of it on
# average (log-probability per token). On 60 RAVDESS training clips Whisper's segments scored -1.19 at worst
# (median -0.19): none was dropped.
REPEATED_TOKEN_SHARE = 0.8
UNSURE_AVG_LOGPROB = -2.0
_TOKEN_SPLIT = re.compile(r"[\s\-\u2010-\u2015.,;:!?\"'()\[\]]+")


def not_language(text: str, segments: Sequence[TranscriptSegment] = ()) -> str | None:
    """Why a transcript is not language (one token repeated, no letters, decoded with very low probability),
    or None when it may be read. Such a transcript never reaches the text branch."""
    tokens = [t for t in _TOKEN_SPLIT.split(text.lower()) if t]
    if not any(ch.isalpha() for ch in text):
        return f"speech recognition gave no words ({text[:40]!r})"
    if tokens:
        top, count = Counter(tokens).most_common(1)[0]
        share = count / len(tokens)
        if share >= REPEATED_TOKEN_SHARE and (count >= 6 or (len(top) == 1 and count >= 4)):
            return f"speech recognition repeated {top!r} {count} times: not language"
    weights = [max(s.end - s.start, 1e-3) for s in segments]
    if segments and sum(s.avg_logprob * w for s, w in zip(segments, weights)) / sum(weights) < UNSURE_AVG_LOGPROB:
        return "speech recognition was unsure of every word: not taken as language"
    return None


def cut_repeated_tail(text: str, min_words: int = 4) -> str:
    """Keep one copy of a phrase the text ends by repeating back to back ("by the door door door",
    "dogs are sitting by the door dogs are sitting by the door dogs are"): the way Whisper fails on a
    window shorter than the 30 s it was trained on. The run must cover at least two copies and
    ``min_words`` words; words are compared without case or punctuation."""
    words = text.split()
    keys = [re.sub(r"[^\w']", "", w.lower()) for w in words]
    n, cut = len(keys), None
    for period in range(1, n // 2 + 1):
        i = n - 1
        while i >= period and keys[i] == keys[i - period]:
            i -= 1
        start = i + 1 - period  # first word of the repeating run
        if n - start >= max(2 * period, min_words) and (cut is None or start + period < cut):
            cut = start + period
    return text if cut is None else " ".join(words[:cut])


class SpeechRecognizer:
    """Transcribes 16 kHz mono speech with faster-whisper; thread-compatible, not thread-safe."""

    key = "audio_encoder"  # the CTranslate2 folder ships with the speech encoder's files

    def __init__(self, model_dir: str | Path, vad=None, options: AsrOptions | None = None) -> None:
        """Load the CTranslate2 Whisper folder.

        Raises:
            DependencyError: faster-whisper is not installed.
            ModelError: the folder is missing or cannot be loaded.
        """
        self.options = options or AsrOptions()
        self.vad = vad
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise ModelError(f"Whisper model folder {model_dir} has no model.bin: run `{REBUILD_COMMAND}`")
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise DependencyError("faster-whisper is not installed: run `pip install 'ecmf-edge[asr]'`") from None
        try:
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type=self.options.compute_type,
                                       cpu_threads=self.options.threads, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"Whisper model in {model_dir} could not be loaded ({str(exc)[:160]}): run `{REBUILD_COMMAND}`") from None
        self._tokenizers: dict[str | None, object] = {}
        # Text-only chunks decoded again over the full window, of all text-only chunks decoded.
        self.retried = 0
        self.decoded = 0

    @classmethod
    def from_bundle(cls, bundle, options: AsrOptions | None = None, use_vad: bool = True) -> SpeechRecognizer:
        """Recogniser over the bundle's verified Whisper folder (and its VAD for chunking)."""
        files = [f for f in bundle.model_files(cls.key) if f.endswith("/model.bin")]
        if not files:
            raise ModelError(f"bundle at {bundle.root} has no Whisper model folder: run `{REBUILD_COMMAND}`")
        for relative in bundle.model_files(cls.key)[1:]:
            bundle.path(relative)  # sha256 check of every file in the folder
        vad = None
        if use_vad:
            from ecmf_edge.audio.vad import VoiceActivityDetector

            vad = VoiceActivityDetector.from_bundle(bundle)
        return cls(bundle.path(files[0]).parent, vad, options)

    @classmethod
    def lazy_from_bundle(cls, bundle, options: AsrOptions | None = None) -> LazySpeechRecognizer:
        """A recogniser that opens Whisper on its first :meth:`transcribe` (a stream whose speaker never
        finishes an utterance never pays for it). What can be checked without loading is checked now.

        Raises:
            DependencyError: faster-whisper is not installed.
            ModelError: the bundle has no Whisper model folder.
        """
        return LazySpeechRecognizer(bundle, options)

    def _chunks(self, x: np.ndarray) -> list[tuple[float, float]]:
        """Speech spans (seconds), merged into chunks of at most 30 s split at pauses."""
        if self.vad is None:
            total = x.size / SAMPLE_RATE
            return [(s, min(s + MAX_CHUNK_SECONDS, total)) for s in np.arange(0.0, total, MAX_CHUNK_SECONDS)]
        chunks: list[list[float]] = []
        for seg in self.vad.segments(x):
            start, end = seg.start, seg.end
            while end - start > MAX_CHUNK_SECONDS:  # one segment longer than Whisper's window
                chunks.append([start, start + MAX_CHUNK_SECONDS])
                start += MAX_CHUNK_SECONDS
            if chunks and end - chunks[-1][0] <= MAX_CHUNK_SECONDS and start - chunks[-1][1] < 1.0:
                chunks[-1][1] = end
            else:
                chunks.append([start, end])
        return [(s, e) for s, e in chunks]

    def transcribe(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript:
        """Transcribe speech; audio without (enough) speech gives an empty transcript with a reason.

        Raises:
            InputError: wrong rate, empty audio or NaN/Inf samples.
        """
        started = time.perf_counter()
        x = check_pcm(pcm, sample_rate, name="ASR input")
        seconds = x.size / SAMPLE_RATE
        loudness = rms_dbfs(x)
        if not np.isfinite(loudness) or loudness < SILENCE_DBFS:
            return _empty("audio is silent", seconds, time.perf_counter() - started)
        chunks = self._chunks(x)
        speech_seconds = sum(e - s for s, e in chunks)
        if not chunks:
            return _empty("no speech found by the VAD", seconds, time.perf_counter() - started)
        if speech_seconds < self.options.min_speech_seconds:
            return _empty(f"only {speech_seconds:.2f} s of speech (minimum {self.options.min_speech_seconds} s)", seconds,
                          time.perf_counter() - started)
        segments: list[TranscriptSegment] = []
        languages: list[tuple[str, float]] = []
        for start, end in chunks:
            piece = x[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)]
            if not self.options.word_timestamps:
                segment, detected = self._decode_text(piece, start, end)
                languages.append(detected)
                if segment is not None:
                    segments.append(segment)
                continue
            found, info = self._model.transcribe(
                piece, language=self.options.language, beam_size=self.options.beam_size,
                word_timestamps=self.options.word_timestamps, vad_filter=False, condition_on_previous_text=False,
            )
            for seg in found:  # a lazy generator: decoding happens here
                if seg.no_speech_prob > self.options.no_speech_threshold and seg.avg_logprob < SILENT_AVG_LOGPROB:
                    continue
                words = tuple(Word(float(round(start + w.start, 3)), float(round(start + w.end, 3)), w.word.strip(), float(w.probability))
                              for w in (seg.words or ()))
                text = seg.text.strip()
                if text:
                    segments.append(TranscriptSegment(float(round(start + seg.start, 3)), float(round(start + seg.end, 3)), text,
                                                      float(seg.avg_logprob), float(seg.no_speech_prob), words))
            languages.append((info.language, float(info.language_probability)))
        elapsed = time.perf_counter() - started
        language, probability = max(languages, key=lambda lp: lp[1]) if languages else (None, 0.0)
        text = " ".join(s.text for s in segments).strip()
        if not text:
            return _empty("Whisper recognised no words", seconds, elapsed, language, probability)
        garbled = not_language(text, segments)
        if garbled is not None:
            logger.debug("transcript %r dropped: %s", text[:80], garbled)
            return _empty(garbled, seconds, elapsed, language, probability, rejected=True)
        notes = () if language == "en" else (f"language '{language}' detected: the default text encoder is English-only",)
        return Transcript(text, language, probability, tuple(segments), seconds, elapsed, notes=notes)


    def _tokenizer(self, language: str | None):
        """faster-whisper's tokenizer set up for transcribing ``language`` (cached per language)."""
        if language not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer

            self._tokenizers[language] = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                                   task="transcribe", language=language)
        return self._tokenizers[language]

    def _decode_text(self, piece: np.ndarray, start: float, end: float,
                     frames: int | None = None) -> tuple[TranscriptSegment | None, tuple[str, float]]:
        """One chunk, text only: one encoder pass over the window, language from it, greedy decoding.

        Returns the segment (None when Whisper rates the chunk as non-speech) and (language, probability).
        """
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        whisper = self._model.model
        seconds = piece.size / SAMPLE_RATE
        window = self.options.window_frames(seconds) if frames is None else frames
        mel = pad_or_trim(self._model.feature_extractor(piece), window)
        encoded = whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32)))
        language, probability = self.options.language or "en", 1.0
        if self.options.language is None and whisper.is_multilingual:
            token, probability = whisper.detect_language(encoded)[0][0]
            language = token[2:-2]
        tokenizer = self._tokenizer(language if whisper.is_multilingual else None)
        prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
        max_new = min(MAX_TOKENS - len(prompt), int(np.ceil(seconds * TOKENS_PER_SECOND)) + 8)
        result = whisper.generate(encoded, [prompt], beam_size=self.options.beam_size, max_length=len(prompt) + max_new,
                                  return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                                  suppress_tokens=get_suppressed_tokens(tokenizer, [-1]))[0]
        tokens = result.sequences_ids[0]
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        no_speech = float(result.no_speech_prob)
        text = tokenizer.decode(tokens).strip()
        if window < MAX_FRAMES:
            text = cut_repeated_tail(text)
        if frames is None:
            self.decoded += 1
        silent = no_speech > self.options.no_speech_threshold and avg_logprob < SILENT_AVG_LOGPROB
        # Still repetitive after the cut, stopped by the token limit (the decode ran away), or unsure and
        # ended after fewer words than the speech holds (it stopped early).
        failed = bool(text) and (get_compression_ratio(text) > RETRY_COMPRESSION_RATIO or len(tokens) >= max_new
                                 or (avg_logprob < RETRY_AVG_LOGPROB and len(text.split()) < RETRY_WORDS_PER_SECOND * seconds))
        if failed and window < MAX_FRAMES:
            self.retried += 1
            return self._decode_text(piece, start, end, MAX_FRAMES)
        if silent or not text:
            return None, (language, float(probability))
        segment = TranscriptSegment(float(round(start, 3)), float(round(end, 3)), text, avg_logprob, no_speech)
        return segment, (language, float(probability))


class LazySpeechRecognizer:
    """:class:`SpeechRecognizer` opened on first use (thread-safe opening)."""

    def __init__(self, bundle, options: AsrOptions | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("faster_whisper") is None:
            raise DependencyError("faster-whisper is not installed: run `pip install 'ecmf-edge[asr]'`")
        if not any(f.endswith("/model.bin") for f in bundle.model_files(SpeechRecognizer.key)):
            raise ModelError(f"bundle at {bundle.root} has no Whisper model folder: run `{REBUILD_COMMAND}`")
        self._bundle, self._options = bundle, options
        self._recognizer: SpeechRecognizer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether Whisper has been opened."""
        return self._recognizer is not None

    def get(self) -> SpeechRecognizer:
        """The opened recogniser (opens it on the first call).

        Raises:
            DependencyError, ModelError: as :meth:`SpeechRecognizer.from_bundle`.
        """
        with self._lock:
            if self._recognizer is None:
                self._recognizer = SpeechRecognizer.from_bundle(self._bundle, self._options)
            return self._recognizer

    def transcribe(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript:
        """As :meth:`SpeechRecognizer.transcribe`, opening Whisper first if needed."""
        return self.get().transcribe(pcm, sample_rate)
