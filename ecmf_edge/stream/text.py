"""The text stage: finished utterances -> :class:`~ecmf_edge.text.text_path.TextPath` -> ``text`` observations.

The stage runs :meth:`TextPath.process` (ASR, LLM context, text encoder) on its own
supervised thread behind a drop-oldest queue, the same contract as ``TextPath.submit``,
plus the stream's time limit, failure reporting and, for file playback, waiting until
an utterance's text is known before the ticks after it are fused (reproducible runs).
An utterance without words posts nothing: the previous transcript stays valid until it
is ``max_age_s['text']`` old. An utterance in a language the text model was not trained on
posts an absent ``text`` with the reason (the language gate).
"""
from __future__ import annotations

from typing import Any

from ecmf_edge.stream.aligner import Observation
from ecmf_edge.stream.audio import Utterance
from ecmf_edge.stream.stage import QueueStage
from ecmf_edge.text.asr import reported_language

__all__ = ["TextStage"]


class TextStage(QueueStage):
    """Speech recognition and text features for utterances (the ``text`` modality)."""

    def __init__(self, *args: Any, text_path: Any, **kwargs: Any) -> None:
        super().__init__("text", ("text",), *args, **kwargs)
        self.text_path = text_path
        # Utterances that gave no words, and the last reason.
        self.empty = 0
        self.last_empty_reason: str | None = None

    def handle(self, utterance: Utterance) -> None:
        feature = self.text_path.process(utterance.pcm, utterance.t)
        probability = float(getattr(self.text_path, "last_language_probability", 0.0))
        heard = {"language": reported_language(getattr(self.text_path, "last_language", None), probability),
                 "language_probability": round(probability, 4)}
        if feature is None:
            gate = getattr(self.text_path, "last_gate_reason", None)
            if gate is not None:  # words in a language the text model does not read: text is absent, and why
                self.post(Observation("text", utterance.t, utterance.captured, None, gate, {},
                                      {"transcript": getattr(self.text_path, "last_transcript", None), **heard}))
                return
            self.empty += 1
            self.last_empty_reason = getattr(self.text_path, "last_empty_reason", None)
            return
        latency = {k: float(v) for k, v in feature.latency_ms.items()}
        context = feature.context
        extra = {"transcript": feature.transcript, "context": getattr(context, "context", "") or None,
                 "llm_fallback": getattr(context, "fallback_reason", None), **heard}
        self.post(Observation("text", utterance.t, utterance.captured, feature.vector, None, latency, extra))
