"""One fusion tick: aligned features -> fusion head -> smoother -> :class:`~ecmf_edge.events.EmotionEvent`.

Used by the stream's ticker thread only (it is not thread-safe). A fusion step that
raises is logged once per message; its events carry no label and say why in
``absent["fusion"]``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ecmf_edge.capture.clock import Clock
from ecmf_edge.errors import EcmfError
from ecmf_edge.events import UNCERTAIN, EmotionEvent
from ecmf_edge.people import FRAME_ALONE_REASON, frame_alone, people_results
from ecmf_edge.runtime.fusion_head import relabelled
from ecmf_edge.stream.aligner import Aligner
from ecmf_edge.stream.models import StreamModels
from ecmf_edge.stream.options import MODALITIES, StreamOptions
from ecmf_edge.stream.smoother import Smoother

__all__ = ["Fuser", "fusion_step", "readout", "uncertain_label"]

logger = logging.getLogger("ecmf_edge")


def fusion_step(fuse: Callable[[dict], Any], features: Mapping[str, np.ndarray | None], absent: dict[str, str],
                latency: dict[str, float]) -> tuple[dict[str, np.ndarray | None], Any, bool]:
    """The fusion step of a tick and of :meth:`~ecmf_edge.Recognizer.predict`: a whole frame alone is no evidence of
    anyone's emotion (it is dropped, with the reason in ``absent["frame"]``); whatever else is present goes through
    ``fuse`` once, timed in ``latency["fusion"]``. Returns ``(features fused, fuse's result or None, whether fuse
    ran)``."""
    fused = dict(features)
    if frame_alone(tuple(m for m, v in fused.items() if v is not None)):
        absent["frame"] = FRAME_ALONE_REASON
        fused = {m: None for m in fused}
    if not any(v is not None for v in fused.values()):
        return fused, None, False
    started = time.perf_counter()
    result = fuse(fused)
    latency["fusion"] = round((time.perf_counter() - started) * 1000.0, 3)
    return fused, result, True


def readout(result: Any, probabilities: Sequence[float] | np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """``({label: probability}, {modality: weight})`` of a fusion result (``probabilities``: smoothed ones to report
    instead of the result's own)."""
    probs = result.probabilities if probabilities is None else probabilities
    return ({name: float(p) for name, p in zip(result.labels, probs)},
            {m: float(w) for m, w in result.modality_weights.items()})


def uncertain_label(label: str | None, confidence: float, min_confidence: float) -> tuple[str | None, bool]:
    """``(label to report, whether it is uncertain)``: "uncertain" when the label's probability is below
    ``min_confidence`` (``StreamOptions.min_confidence``), the label itself otherwise."""
    if label is not None and confidence < min_confidence:
        return UNCERTAIN, True
    return label, False


class Fuser:
    """Builds the event of each tick and numbers the events of one stream."""

    def __init__(self, aligner: Aligner, models: StreamModels, options: StreamOptions, clock: Clock,
                 newest: bool, stream_id: str | None = None) -> None:
        """Raises:
            InputError: ``options.labels`` names a label the bundle does not have, or keeps fewer than two.
        """
        self.aligner, self.models, self.clock, self.newest = aligner, models, clock, newest
        self.stream_id = stream_id
        self.min_confidence = options.min_confidence
        # The fusion step over the stream's label set (the bundle's, or the application's: options.labels).
        self.fusion = relabelled(models.fusion, models.labels, options.labels)
        self.labels = self.fusion.labels
        self._people_cache: dict = {}
        self.smoother = Smoother(self.labels, options.smoother)
        self._errors: set[str] = set()
        self._last_label: str | None = None
        # Events built so far.
        self.count = 0

    def _fuse(self, features: dict) -> tuple[Any, str | None]:
        try:
            return self.fusion(features), None
        except Exception as exc:  # the stream reports it and goes on
            reason = f"fusion failed: {exc if isinstance(exc, EcmfError) else f'{type(exc).__name__}: {exc}'}"
            if reason not in self._errors:
                self._errors.add(reason)
                logger.warning("%s (events go on without a label)", reason)
            return None, reason

    def event(self, t: float) -> EmotionEvent:
        """The event for the tick at stream time ``t``."""
        aligned = self.aligner.snapshot(t, newest=self.newest)
        latency: dict[str, float] = {}
        for obs in aligned.used.values():
            latency.update(obs.latency_ms)
        label, confidence, raw_label, uncertain = None, 0.0, None, False
        probabilities = dict.fromkeys(self.labels, 0.0)  # every label, all 0 without evidence
        weights: dict[str, float] = {}
        absent = dict(aligned.absent)
        failures: list[str | None] = []

        def fuse(features: dict) -> Any:
            result, failure = self._fuse(features)
            failures.append(failure)
            return result

        features, result, ran = fusion_step(fuse, aligned.features, absent, latency)
        if ran:
            failure = failures[-1]
            if result is not None:
                smoothed = self.smoother.update(result.probabilities, t)
                probabilities, weights = readout(result, smoothed.probabilities)
                label, confidence = smoothed.label, smoothed.confidence
                raw_label = result.labels[int(np.argmax(result.probabilities))]
                label, uncertain = uncertain_label(label, confidence, self.min_confidence)
            else:  # _fuse gives a reason with every failure; a fusion callable that returned None gets one here
                absent["fusion"] = failure if failure is not None else "fusion gave no result"
        else:
            self.smoother.idle(t)
        if aligned.used:
            newest = max(obs.captured for obs in aligned.used.values())
            latency["capture_to_event"] = round((self.clock.now() - newest) * 1000.0, 3)
        people, focus_id, skipped = self._people(aligned, t) if "fusion" not in absent else ((), None, 0)
        heard = aligned.latest.get("text")  # present or gated by language: what was heard is reported either way
        fresh = heard is not None and ("text" in aligned.used or t - heard.t <= self.aligner.max_age_s["text"])
        face = aligned.used.get("face")
        changed = label != self._last_label
        self._last_label = label
        self.count += 1
        return EmotionEvent(
            timestamp=round(t, 6), label=label, confidence=confidence, probabilities=probabilities,
            modality_weights=weights, present=tuple(m for m in MODALITIES if features.get(m) is not None), absent=absent,
            transcript=heard.extra.get("transcript") if heard is not None and fresh else None, latency_ms=latency,
            index=self.count, label_changed=changed, raw_label=raw_label,
            ages_s={m: round(a, 4) for m, a in aligned.ages.items()},
            face_box=face.extra.get("box") if face is not None else None,
            language=heard.extra.get("language") if heard is not None else None,
            language_probability=heard.extra.get("language_probability") if heard is not None else None,
            people=people, focus_id=focus_id, people_skipped=skipped, stream=self.stream_id,
            uncertain=uncertain, relabelled=self.fusion.view.relabelled,
        )

    def _people(self, aligned: Any, t: float) -> tuple[tuple, int | None, int]:
        """Every tracked face of the newest fresh face observation, with its own label."""
        seen = aligned.latest.get("face")
        if seen is None or t - seen.t > self.aligner.max_age_s["face"]:
            return (), None, 0
        entries = seen.extra.get("people", ())
        try:
            people = people_results(entries, self.fusion, self._people_cache, t)
        except Exception as exc:  # a failing head already shows in absent["fusion"]; people are left out
            reason = f"per-person labels failed: {type(exc).__name__}: {exc}"
            if reason not in self._errors:
                self._errors.add(reason)
                logger.warning("%s", reason)
            people = ()
        return people, seen.extra.get("focus_id"), int(seen.extra.get("skipped", 0))
