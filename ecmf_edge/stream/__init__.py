"""The live loop: stage threads with bounded queues, the aligner, fusion ticks, smoothing and sinks.

Most code uses it through :meth:`ecmf_edge.Recognizer.stream`; :class:`EmotionStream` and
:class:`StreamModels` are here for custom wiring (other sources, replaced models).
"""
from __future__ import annotations

from ecmf_edge.stream.models import StreamModels
from ecmf_edge.stream.options import SmootherOptions, StreamOptions
from ecmf_edge.stream.pipeline import EmotionStream

__all__ = ["EmotionStream", "StreamModels", "StreamOptions", "SmootherOptions"]
