"""The text modality: transcript -> LLM context -> embedding, and its asynchronous worker.

With the bundle's trained text branch (:mod:`.text_branch`) the feature is the branch's
embedding of the utterance read with its conversational context (earlier utterances, and
the LLM's sentence when the branch was trained with it). Bundles without a branch use:

The text feature the fusion head reads is ``[embed(enriched text); embed(transcript)]``
(768 values): the enriched representation beside the original one, as ECMF keeps both.
Features are cached per utterance. In a live stream the whole path (ASR + LLM + encoder)
runs on its own thread behind a small queue, so it never delays the per-frame labels; a
text feature carries the time it was made and expires after ``max_age_s``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ecmf_edge.errors import DependencyError, EcmfError, ModelError
from ecmf_edge.modalities import RAW_TOKEN_DIMS, REBUILD_COMMAND
from ecmf_edge.text.llm_context import ContextEnricher, ContextResult, LlmOptions

__all__ = ["TextFeature", "TextFeaturizer", "TextPath", "build_text_path", "TEXT_FEATURE_DIM", "SKIPPED_LLM"]

logger = logging.getLogger("ecmf_edge")

# Size of the text token without a text branch: [embed(enriched); embed(transcript)].
TEXT_FEATURE_DIM = RAW_TOKEN_DIMS["text"]
# Names of the languages text models are trained on, for the language gate's message.
LANGUAGE_NAMES = {"en": "English", "de": "German", "zh": "Chinese", "fr": "French", "es": "Spanish"}
# Why a transcript got no LLM context although an LLM is configured.
SKIPPED_LLM = "the bundle's text branch was trained without LLM context, so the LLM is not run"


@dataclass(frozen=True)
class TextFeature:
    """One utterance's text feature and where it came from."""

    # The text token: the branch embedding (384,), or [embed(enriched); embed(transcript)] (768,)
    # for bundles without a text branch; float32.
    vector: np.ndarray
    transcript: str
    context: ContextResult
    # Monotonic time the feature became available, and the end of the utterance it describes.
    created: float
    utterance_end: float
    # Time spent in ASR, LLM and encoder, in ms.
    latency_ms: dict

    def age(self, now: float | None = None) -> float:
        """Seconds since the feature was made."""
        return (time.monotonic() if now is None else now) - self.created


class Enricher(Protocol):
    """What :class:`TextFeaturizer` asks of its enricher: a :class:`~ecmf_edge.text.llm_context.ContextEnricher`,
    or a stand-in that opens one on first use (:class:`~ecmf_edge.stream.models.LazyEnricher`)."""

    def enrich(self, transcript: str, history: Sequence[str] = ()) -> ContextResult: ...


class TextFeaturizer:
    """Transcript -> (optional) LLM context -> text feature, cached per utterance."""

    def __init__(self, encoder, enricher: Enricher | None = None, cache_size: int = 256, branch=None) -> None:
        """``branch``: a :class:`~ecmf_edge.text.text_branch.TextBranch` (used instead of ``encoder``)."""
        if encoder is None and branch is None:
            raise ModelError(f"no text model: the bundle has neither text_branch nor text_encoder: run `{REBUILD_COMMAND}`")
        self.encoder = encoder
        self.branch = branch
        self.enricher = enricher
        self._cache: OrderedDict[tuple, tuple[np.ndarray, ContextResult, dict]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages the text model reads (ISO 639-1 codes); transcripts in others are gated out."""
        return tuple(getattr(self.branch, "languages", ("en",))) if self.branch is not None else ("en",)

    def language_gate(self, language: str | None) -> str | None:
        """Why a transcript in ``language`` must not reach the text model, or None when it may (also when the
        language is unknown, e.g. a typed text)."""
        if not language or language in self.languages:
            return None
        names = " or ".join(LANGUAGE_NAMES.get(code, code) for code in self.languages)
        return f"speech is {language}; the text branch reads {names}"

    @property
    def reads_llm_context(self) -> bool:
        """Whether the text feature depends on the LLM's answer (the 768-d encoder feature and branches
        trained with LLM context do; the shipped text branch does not)."""
        return self.branch is None or bool(self.branch.uses_llm_context)

    @classmethod
    def from_bundle(cls, bundle, enricher: Enricher | None = None) -> TextFeaturizer:
        """The bundle's text branch, or its text encoder for bundles without one.

        Raises:
            ModelError: the bundle has neither, or its files are corrupt.
        """
        from ecmf_edge.text.text_branch import TextBranch
        from ecmf_edge.text.text_encoder import TextEncoder

        branch = TextBranch.from_bundle(bundle)
        return cls(None if branch is not None else TextEncoder.from_bundle(bundle), enricher, branch=branch)

    def featurize(self, transcript: str, history: Sequence[str] = (), utterance_end: float | None = None) -> TextFeature:
        """Feature for one transcript (cached on transcript + history).

        Raises:
            InputError: empty or non-string transcript.
        """
        key = (transcript, tuple(history))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            started = time.perf_counter()
            if self.enricher is not None and self.reads_llm_context:
                context = self.enricher.enrich(transcript, history)
            elif self.enricher is not None:  # the LLM's answer would change nothing: do not run it
                context = ContextResult(transcript, "", transcript, False, SKIPPED_LLM)
            else:
                context = ContextResult(transcript, "", transcript, False, "no LLM loaded")
            llm_ms = (time.perf_counter() - started) * 1000.0
            started = time.perf_counter()
            if self.branch is not None:
                vector = self.branch(transcript, history, context.context if context.used_llm else "")[0]
            else:
                vectors = self.encoder.encode([context.enriched or transcript, transcript])
                vector = np.concatenate([vectors[0], vectors[1]]).astype(np.float32)
            hit = (vector, context, {"llm": round(llm_ms, 2), "text_encoder": round((time.perf_counter() - started) * 1000.0, 2)})
            with self._lock:
                self._cache[key] = hit
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        now = time.monotonic()
        vector, context, latency = hit
        return TextFeature(vector, transcript, context, now, now if utterance_end is None else utterance_end, dict(latency))


class TextPath:
    """Runs ASR + context + text encoder for finished utterances on a background thread.

    ``submit`` never blocks: the queue holds at most ``queue_size`` utterances and the
    oldest is dropped when it is full. ``latest`` returns the newest feature while it is
    younger than ``max_age_s``.
    """

    def __init__(self, recognizer, featurizer: TextFeaturizer, *, max_age_s: float = 10.0, queue_size: int = 2,
                 history_turns: int = 2, on_feature: Callable[[TextFeature], None] | None = None) -> None:
        self.recognizer = recognizer
        self.featurizer = featurizer
        self.max_age_s = max_age_s
        self.history_turns = history_turns
        self.on_feature = on_feature
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._latest: TextFeature | None = None
        self._history: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_empty_reason: str | None = None
        # The language of the last utterance, and why it was kept from the text model (language gate).
        self.last_language: str | None = None
        self.last_language_probability = 0.0
        self.last_gate_reason: str | None = None
        self.last_transcript: str | None = None

    def start(self) -> TextPath:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ecmf-text", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker; waits at most ``timeout`` seconds for the current utterance."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, pcm: np.ndarray, utterance_end: float | None = None) -> bool:
        """Queue one finished utterance (16 kHz mono); returns False if an older one was dropped."""
        item = (np.asarray(pcm, dtype=np.float32), time.monotonic() if utterance_end is None else utterance_end)
        dropped = False
        while True:
            try:
                self._queue.put_nowait(item)
                return not dropped
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                    dropped = True
                except queue.Empty:
                    pass

    def latest(self, now: float | None = None) -> TextFeature | None:
        """Newest text feature, or None when there is none or it has expired."""
        with self._lock:
            feature = self._latest
        if feature is None or feature.age(now) > self.max_age_s:
            return None
        return feature

    def process(self, pcm: np.ndarray, utterance_end: float) -> TextFeature | None:
        """Transcribe and featurise one utterance synchronously (what the worker runs)."""
        started = time.perf_counter()
        transcript = self.recognizer.transcribe(pcm)
        asr_ms = (time.perf_counter() - started) * 1000.0
        self.last_language = transcript.language
        self.last_language_probability = float(transcript.language_probability)
        self.last_gate_reason = None
        if transcript.is_empty:
            self.last_empty_reason = transcript.empty_reason
            if transcript.rejected:  # words that are not language: the text is absent, and why
                self.last_gate_reason, self.last_transcript = transcript.empty_reason, None
                with self._lock:
                    self._latest = None
            return None
        gate = self.featurizer.language_gate(transcript.language)
        if gate is not None:  # transcribed, but in a language the text model was not trained on
            self.last_gate_reason, self.last_transcript = gate, transcript.text
            with self._lock:
                self._latest = None
            return None
        feature = self.featurizer.featurize(transcript.text, tuple(self._history[-self.history_turns:]) if self.history_turns else (), utterance_end)
        feature.latency_ms["asr"] = round(asr_ms, 2)
        self._history.append(transcript.text)
        del self._history[:-max(self.history_turns, 1)]
        with self._lock:
            self._latest = feature
        if self.on_feature is not None:
            self.on_feature(feature)
        return feature

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pcm, end = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self.process(pcm, end)
            except EcmfError as exc:
                self._record_error(str(exc))
            except Exception as exc:  # a failed stage must not kill the stream
                self._record_error(f"{type(exc).__name__}: {exc}")

    def _record_error(self, message: str) -> None:
        self.errors += 1
        if message != self.last_error:
            logger.warning("text path failed: %s (the other modalities continue)", message)
        self.last_error = message


def build_text_path(bundle, *, use_llm: bool = False, llm_options: LlmOptions | None = None, asr_options=None,
                    max_age_s: float = 10.0) -> TextPath | None:
    """The text path for a stream, degrading instead of failing.

    No ASR (faster-whisper missing) -> None: the text modality is absent. No LLM
    (llama-cpp-python or the GGUF missing) -> transcripts are embedded without
    enrichment. Each degradation is announced once with ``warnings.warn``.
    """
    from ecmf_edge.text.asr import SpeechRecognizer

    try:
        recognizer = SpeechRecognizer.from_bundle(bundle, asr_options)
    except (DependencyError, ModelError) as exc:
        warnings.warn(f"text modality disabled: {exc}", RuntimeWarning, stacklevel=2)
        return None
    enricher = None
    if use_llm:
        try:
            enricher = ContextEnricher(llm_options)
        except (DependencyError, ModelError) as exc:
            warnings.warn(f"running without LLM context enrichment: {exc}", RuntimeWarning, stacklevel=2)
    return TextPath(recognizer, TextFeaturizer.from_bundle(bundle, enricher), max_age_s=max_age_s)
