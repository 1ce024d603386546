"""ecmf-edge: live, on-device multimodal emotion recognition (ECMF) on ONNX Runtime.

The public API is what ``__all__`` lists; everything else may change between versions.
This package is the runtime: it runs a prebuilt bundle with numpy, ONNX Runtime, OpenCV and
the optional ASR/LLM/microphone extras. Building bundles (``ecmf_edge.build``) and training
(``ecmf_edge.train``) are layers on top that need the ``build`` and ``train`` extras.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ecmf_edge.capture.camera import CameraOptions
from ecmf_edge.capture.microphone import MicrophoneOptions
from ecmf_edge.errors import DependencyError, DeviceError, EcmfError, InputError, ModelError
from ecmf_edge.events import SCHEMA_VERSION, UNCERTAIN, EmotionEvent, Person, event_schema
from ecmf_edge.labels import LABELS
from ecmf_edge.modalities import BACKEND_CHOICES, MODALITIES, PRECISIONS, SAMPLE_RATE
from ecmf_edge.recognizer import Recognizer, RecognizerOptions
from ecmf_edge.runtime.bundle import Bundle, ensure_default_bundle, load_bundle
from ecmf_edge.stream.options import SmootherOptions, StreamOptions
from ecmf_edge.stream.pipeline import EmotionStream
from ecmf_edge.text.asr import AsrOptions
from ecmf_edge.text.llm_context import LlmOptions
from ecmf_edge.timeline import ClipResult, ClipSummary

__all__ = [
    "__version__",
    "Recognizer",
    "RecognizerOptions",
    "EmotionEvent",
    "Person",
    "EmotionStream",
    "ClipResult",
    "ClipSummary",
    "SCHEMA_VERSION",
    "UNCERTAIN",
    "event_schema",
    "LABELS",
    "MODALITIES",
    "SAMPLE_RATE",
    "BACKEND_CHOICES",
    "PRECISIONS",
    "StreamOptions",
    "SmootherOptions",
    "CameraOptions",
    "MicrophoneOptions",
    "AsrOptions",
    "LlmOptions",
    "Bundle",
    "load_bundle",
    "ensure_default_bundle",
    "EcmfError",
    "InputError",
    "ModelError",
    "DeviceError",
    "DependencyError",
]
