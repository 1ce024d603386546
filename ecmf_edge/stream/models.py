"""The models a stream runs, and the lazy loader that opens them from a bundle once.

:class:`StreamModels` is what :class:`~ecmf_edge.stream.pipeline.EmotionStream` needs;
:class:`ModelLoader` opens each model on first use and shares it between streams and
one-shot predictions (ONNX Runtime sessions are thread-safe; the VAD, which carries
state, and the text path, which keeps conversation history, are made per stream).
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ecmf_edge.errors import DependencyError, ModelError
from ecmf_edge.stream.options import StreamOptions

if TYPE_CHECKING:  # the models are imported when first opened
    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.audio.speech_encoder import SpeechEncoder
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.text.asr import SpeechRecognizer
    from ecmf_edge.text.text_path import TextFeaturizer
    from ecmf_edge.vision.face_detector import FaceDetector
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

__all__ = ["StreamModels", "ModelLoader", "Locked", "LazyEnricher"]


@dataclass
class StreamModels:
    """What a stream runs; a model left as None leaves its modality out."""

    # The bundle's labels, in the order of the fusion head's probabilities.
    labels: tuple[str, ...]
    # features {modality: vector or None} -> result with .labels, .probabilities, .modality_weights.
    fusion: Callable[[Mapping[str, np.ndarray | None]], Any]
    face_detector: Any = None
    face_encoder: Any = None
    frame_encoder: Any = None
    # A VoiceActivityDetector of this stream's own (it carries state).
    vad: Any = None
    # encode(pcm, rate) -> pooled token, and block: the width of the token's mean / std blocks (SpeechEncoder).
    speech_encoder: Any = None
    # The trained speech branch (speaker normalisation + head) of this stream, or None (older bundles).
    speech_branch: Any = None
    # A TextPath (ASR + LLM context + text encoder), or None.
    text_path: Any = None
    # Modalities that cannot be had at all, with the reason (e.g. "text": "speech recognition unavailable ...").
    unavailable: dict[str, str] = field(default_factory=dict)


class Locked:
    """Serialises calls to something that is not thread-safe (the fusion head, one llama.cpp context)."""

    def __init__(self, function: Callable) -> None:
        self._function = function
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._function(*args, **kwargs)


class _LockedEnricher:
    """A ContextEnricher shared by streams and predict(): one answer at a time."""

    def __init__(self, enricher: Any) -> None:
        self._enricher = enricher
        self.enrich = Locked(enricher.enrich)

    def close(self) -> None:
        self._enricher.close()


class LazyEnricher:
    """Stands in for the LLM context enricher and opens it on the first :meth:`enrich` (the LLM's GGUF is
    read only when a transcript first needs context, never by a frame- or audio-only prediction)."""

    def __init__(self, loader: ModelLoader) -> None:
        self._loader = loader

    @property
    def loaded(self) -> bool:
        """Whether the LLM has been opened (or found unavailable)."""
        return self._loader.is_loaded("enricher")

    def enrich(self, transcript: str, history: Any = ()) -> Any:
        """As :meth:`~ecmf_edge.text.llm_context.ContextEnricher.enrich`; the transcript alone when no LLM can be had."""
        enricher = self._loader.get("enricher")
        if enricher is None:
            from ecmf_edge.text.llm_context import ContextResult

            return ContextResult(transcript, "", transcript, False, "no LLM loaded")
        return enricher.enrich(transcript, history)

    def close(self) -> None:
        """Nothing to free here: the loader closes the LLM it opened."""


class ModelLoader:
    """Opens the bundle's models on first use (thread-safe) and builds :class:`StreamModels`."""

    def __init__(self, bundle: Any, fusion: Callable, options: StreamOptions, *, text: bool = True, use_llm: bool = False,
                 llm_options: Any = None, asr_options: Any = None) -> None:
        self.bundle, self.fusion, self.options = bundle, fusion, options
        self.text, self.use_llm, self.llm_options, self.asr_options = text, use_llm, llm_options, asr_options
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- the models, typed (each opened on first use; raises ModelError when the bundle lacks it or it is corrupt) --
    @property
    def face_detector(self) -> FaceDetector:
        return self.get("face_detector")

    @property
    def face_encoder(self) -> FaceEncoder:
        return self.get("face_encoder")

    @property
    def frame_encoder(self) -> FrameEncoder:
        return self.get("frame_encoder")

    @property
    def speech_encoder(self) -> SpeechEncoder:
        return self.get("speech_encoder")

    @property
    def speech_branch(self) -> SpeechBranch | None:
        """The trained speech branch shared by one-shot predictions (None in bundles without one)."""
        return self.get("speech_branch")

    @property
    def features(self) -> FeatureExtractor:
        """The feature extractor of one-shot predictions (VAD + speech encoder + prosody, text featurizer)."""
        return self.get("features")

    @property
    def featurizer(self) -> TextFeaturizer:
        return self.get("featurizer")

    @property
    def asr(self) -> tuple[SpeechRecognizer | None, str | None]:
        """``(speech recognizer, None)``, or ``(None, why it is unavailable)``."""
        return self.get("asr")

    def get(self, key: str) -> Any:
        """The model under ``key`` (face_detector, face_encoder, frame_encoder, speech_encoder, speech_branch,
        enricher, asr, featurizer, features), opened once; the typed properties of the same names are the
        usual way in.

        Raises:
            ModelError: the bundle lacks the model or its file is corrupt.
        """
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._load(key)
            return self._cache[key]

    def _load(self, key: str) -> Any:
        bundle = self.bundle
        if key == "face_detector":
            from ecmf_edge.vision.face_detector import FaceDetector

            return FaceDetector.from_bundle(bundle, min_face_size=self.options.min_face_size)
        if key == "face_encoder":
            from ecmf_edge.vision.face_encoder import FaceEncoder

            return FaceEncoder.from_bundle(bundle)
        if key == "frame_encoder":
            from ecmf_edge.vision.frame_encoder import FrameEncoder

            return FrameEncoder.from_bundle(bundle)
        if key == "speech_encoder":
            from ecmf_edge.audio.speech_encoder import SpeechEncoder

            return SpeechEncoder.from_bundle(bundle)
        if key == "enricher":
            return self._load_enricher()
        if key == "asr":
            return self._load_asr()
        if key == "features":
            from ecmf_edge.features import FeatureExtractor

            return FeatureExtractor(bundle, enricher=self._lazy_enricher())
        if key == "featurizer":
            from ecmf_edge.text.text_path import TextFeaturizer

            return TextFeaturizer.from_bundle(bundle, self._lazy_enricher())
        if key == "speech_branch":
            from ecmf_edge.audio.speech_branch import SpeechBranch

            return SpeechBranch.from_bundle(bundle)
        raise KeyError(key)  # pragma: no cover - programming error

    def is_loaded(self, key: str) -> bool:
        """Whether the model under ``key`` has been opened (or tried)."""
        with self._lock:
            return key in self._cache

    def _lazy_enricher(self) -> LazyEnricher | None:
        return LazyEnricher(self) if self.use_llm else None

    def _load_enricher(self) -> Any:
        if not self.use_llm:
            return None
        from ecmf_edge.text.llm_context import ContextEnricher

        try:
            enricher = ContextEnricher(self.llm_options)
        except (DependencyError, ModelError) as exc:
            if self.llm_options is not None and getattr(self.llm_options, "model_path", None):
                raise  # an explicitly chosen model that does not load is an error
            warnings.warn(f"running without LLM context enrichment: {exc}", RuntimeWarning, stacklevel=5)
            return None
        return _LockedEnricher(enricher)

    def _load_asr(self) -> tuple[Any, str | None]:
        from ecmf_edge.text.asr import SpeechRecognizer

        try:
            return SpeechRecognizer.lazy_from_bundle(self.bundle, self.asr_options), None
        except (DependencyError, ModelError) as exc:
            warnings.warn(f"text modality disabled: {exc}", RuntimeWarning, stacklevel=5)
            return None, f"speech recognition unavailable: {exc}"

    def stream_models(self, video: bool, audio: bool) -> StreamModels:
        """The models for a stream with video and/or audio.

        Raises:
            ModelError: a needed model is missing from the bundle or corrupt.
            DependencyError: an explicitly requested LLM cannot be loaded.
        """
        models = StreamModels(labels=tuple(self.bundle.labels), fusion=self.fusion)
        if video:
            models.face_detector = self.get("face_detector")
            models.face_encoder = self.get("face_encoder")
            models.frame_encoder = self.get("frame_encoder")
        if audio:
            from ecmf_edge.audio.vad import VoiceActivityDetector
            from ecmf_edge.text.text_path import TextPath

            models.vad = VoiceActivityDetector.from_bundle(self.bundle)  # each stream has its own VAD state
            models.speech_encoder = self.get("speech_encoder")
            from ecmf_edge.audio.speech_branch import SpeechBranch

            models.speech_branch = SpeechBranch.from_bundle(self.bundle)  # each stream has its own speaker statistics
            if not self.text:
                models.unavailable["text"] = "the text modality is turned off (text=False)"
            else:
                asr, reason = self.get("asr")
                if asr is None:
                    models.unavailable["text"] = reason
                else:
                    models.text_path = TextPath(asr, self.get("featurizer"), max_age_s=self.options.max_age("text"))
        return models

    def close(self) -> None:
        """Free the LLM (other models are released with the bundle's sessions)."""
        with self._lock:
            enricher = self._cache.pop("enricher", None)
        if enricher is not None:
            enricher.close()
