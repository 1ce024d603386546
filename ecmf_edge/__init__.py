"""ecmf-edge: live, on-device multimodal emotion recognition (ECMF) on ONNX Runtime.

The public API is what ``__all__`` lists; everything else may change between versions.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ecmf_edge.errors import DependencyError, DeviceError, EcmfError, InputError, ModelError
from ecmf_edge.events import EmotionEvent
from ecmf_edge.labels import LABELS
from ecmf_edge.recognizer import Recognizer
from ecmf_edge.runtime.bundle import Bundle, load_bundle

__all__ = [
    "__version__",
    "Recognizer",
    "EmotionEvent",
    "LABELS",
    "Bundle",
    "load_bundle",
    "EcmfError",
    "InputError",
    "ModelError",
    "DeviceError",
    "DependencyError",
]
