"""The aligner: newest feature per modality, its age, and a presence mask with reasons.

Stages post :class:`Observation` objects: a feature vector with the stream time of the
input it describes, or no vector and the reason (no face in the frame, no speech,
the stage failed ...). At each fusion tick the aligner takes, per modality, the newest
observation at or before the tick: it is *present* when it has a vector younger than
the modality's age limit, and *absent* with a stated reason otherwise. A modality can
also be declared unavailable for the rest of the stream (device died, stage hung).
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecmf_edge.stream.options import MODALITIES

__all__ = ["Observation", "Alignment", "Aligner"]


@dataclass(frozen=True, eq=False)
class Observation:
    """What one stage concluded about one modality for one input."""

    # "frame", "face", "audio" or "text".
    modality: str
    # Stream time of the input it describes (frame time, window end, utterance end), seconds.
    t: float
    # Clock time that input was captured (for capture-to-event latency).
    captured: float
    # The feature vector, or None when the modality has nothing to offer for this input.
    vector: np.ndarray | None = None
    # Why there is no vector (None when there is one).
    reason: str | None = None
    # Time spent per step of the stage, milliseconds.
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    # Anything else the stage found (face box, transcript ...).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Alignment:
    """The fusion head's input at one tick."""

    # Tick time, stream seconds.
    t: float
    # Vector per present modality, None for absent ones (every modality is a key).
    features: dict[str, np.ndarray | None]
    # Age in seconds of the observation used, per modality that has one.
    ages: dict[str, float]
    # Reason per absent modality.
    absent: dict[str, str]
    # The observation behind each present modality.
    used: dict[str, Observation]
    # The newest observation per modality whether or not it is used (e.g. a text result that was gated).
    latest: dict[str, Observation] = field(default_factory=dict)

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(m for m, v in self.features.items() if v is not None)


class Aligner:
    """Thread-safe store of recent observations per modality."""

    def __init__(self, max_age_s: Mapping[str, float], modalities: tuple[str, ...] = MODALITIES, history: int = 512) -> None:
        self.modalities = tuple(modalities)
        self.max_age_s = {m: float(max_age_s[m]) for m in self.modalities}
        self._history: dict[str, list[Observation]] = {m: [] for m in self.modalities}
        self._limit = int(history)
        # Feature vectors recorded so far (lets the ticker see whether a new feature arrived since the last tick).
        self.version = 0
        self._unavailable: dict[str, str] = {}
        self._lock = threading.Lock()

    def update(self, *observations: Observation) -> None:
        """Record observations (unknown modalities are ignored); at most ``history`` are kept per modality.

        Several observations passed together are recorded at once: no snapshot sees some of them without
        the others (a lost camera makes both visual tokens absent at the same tick).
        """
        with self._lock:
            for observation in observations:
                history = self._history.get(observation.modality)
                if history is None:
                    continue
                # Kept sorted by stream time (stages finish out of order at the end of a file); equal times keep
                # arrival order.
                bisect.insort_right(history, observation, key=lambda o: o.t)
                self.version += observation.vector is not None
                if len(history) > self._limit:
                    del history[: len(history) - self._limit]

    def set_unavailable(self, modalities: str | tuple[str, ...], reason: str) -> None:
        """Mark the modality (or modalities, at once) absent with ``reason`` for every later tick (first reason wins)."""
        with self._lock:
            for modality in (modalities,) if isinstance(modalities, str) else modalities:
                self._unavailable.setdefault(modality, reason)

    def clear_unavailable(self, modalities: str | tuple[str, ...], reason: str) -> None:
        """Lift the mark set by :meth:`set_unavailable` from each modality where ``reason`` is still the one in force."""
        with self._lock:
            for modality in (modalities,) if isinstance(modalities, str) else modalities:
                if self._unavailable.get(modality) == reason:
                    del self._unavailable[modality]

    def unavailable(self, modality: str) -> str | None:
        with self._lock:
            return self._unavailable.get(modality)

    def snapshot(self, t: float, newest: bool = False) -> Alignment:
        """Features for the tick at stream time ``t``.

        ``newest=False`` (file playback, where stages may run ahead of the ticks) uses
        the newest observation at or before ``t``; ``newest=True`` (real time) the newest one.
        """
        features: dict[str, np.ndarray | None] = {}
        ages: dict[str, float] = {}
        absent: dict[str, str] = {}
        used: dict[str, Observation] = {}
        latest: dict[str, Observation] = {}
        with self._lock:
            for m in self.modalities:
                features[m] = None
                if m in self._unavailable:
                    absent[m] = self._unavailable[m]
                    continue
                obs = None
                for candidate in reversed(self._history[m]):
                    if newest or candidate.t <= t + 1e-9:
                        obs = candidate
                        break
                if obs is None:
                    absent[m] = f"no {m} result yet"
                    continue
                latest[m] = obs
                age = max(0.0, t - obs.t)
                ages[m] = age
                if obs.vector is None:
                    absent[m] = obs.reason or f"no {m} feature"
                elif age > self.max_age_s[m]:
                    absent[m] = f"stale: the newest {m} feature is {age:.1f} s old (limit {self.max_age_s[m]:g} s)"
                else:
                    features[m] = obs.vector
                    used[m] = obs
        return Alignment(t, features, ages, absent, used, latest)
