"""Per-person resting-face calibration of the face token.

A person's resting face is not the population's neutral face: heavy brows read as angry, a mouth whose
corners turn down as sad. The face branch's evidence for a person is therefore corrected by that person's
own offset, in the space of the face token (the features the fusion head and the branch's classifier read):

* **online prior** (per tracked person; on by default only where the bundle says it helped held-out people): the running mean of the person's face tokens, shrunk
  towards the training population's mean while little of the face has been seen; the token is moved by the
  difference, ``token - w * (person_mean - population_mean)`` with ``w = n / (n + prior_views)``, ``n`` the
  views seen *before* this one. So the first view is read as it is, and a face seen for a while is judged
  relative to itself.
* **explicit neutral baseline** (``calibrate``): the mean token of a stretch the user declares neutral replaces
  the online prior for that person: ``token - (baseline - population_neutral_mean)``, so the resting face
  lands on the population's neutral face. Each removes its own share of the offset (``strength``,
  ``baseline_strength``; 1: all of it).

Amounts of face are counted in *views*: a photo is one view, and one second of a stream is one view (a stream
encodes a face about ten times a second, and consecutive frames are nearly the same). The running mean
forgets at :data:`MAX_VIEWS`, so it follows a long session and never grows. The statistics come from the
training faces (``face_encoder.json`` → the bundle manifest's ``resting_face`` attribute); ``prior_views``
was chosen on held-out training people (MODEL_CARD.md).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["RestingFaceStats", "RestingFace", "RestingFaces", "MAX_VIEWS"]

# Views after which older views are forgotten (the running mean follows the last couple of minutes of a stream).
MAX_VIEWS = 120.0


@dataclass(frozen=True)
class RestingFaceStats:
    """The training population's face-token statistics the corrections move towards."""

    # Mean face token over the training people (each person weighted by their faces).
    population_mean: np.ndarray
    # Mean face token of the training faces labelled neutral.
    neutral_mean: np.ndarray
    # How many views of the population mean a person's running mean starts from.
    prior_views: float
    # Share of the estimated offset the online prior removes (1: all of it); chosen with prior_views.
    strength: float = 1.0
    # Share of the (baseline - neutral mean) offset an explicit baseline removes.
    baseline_strength: float = 1.0
    # Whether the online prior is on by default (it is kept only where it helped held-out people at every point).
    online_default: bool = True

    @classmethod
    def from_spec(cls, attributes: Mapping[str, Any]) -> RestingFaceStats | None:
        """The statistics in a face encoder's manifest attributes (None when the bundle has none).

        Raises:
            ModelError: the entry is present but incomplete or malformed.
        """
        entry = attributes.get("resting_face")
        if entry is None:
            return None
        try:
            stats = cls(np.asarray(entry["population_mean"], np.float32), np.asarray(entry["neutral_mean"], np.float32),
                        float(entry["prior_views"]), float(entry.get("strength", 1.0)),
                        float(entry.get("baseline_strength", 1.0)), bool(entry.get("online_default", True)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"face_encoder resting_face entry is malformed ({exc!r}): run `{REBUILD_COMMAND}`") from None
        if (stats.population_mean.shape != stats.neutral_mean.shape or stats.population_mean.ndim != 1
                or not np.all(np.isfinite(stats.population_mean)) or not np.all(np.isfinite(stats.neutral_mean))
                or not np.isfinite(stats.prior_views) or stats.prior_views < 0 or not 0 <= stats.strength <= 1
                or not 0 <= stats.baseline_strength <= 1):
            raise ModelError(f"face_encoder resting_face entry is malformed: run `{REBUILD_COMMAND}`")
        return stats

    def to_dict(self) -> dict[str, Any]:
        return {"population_mean": [round(float(v), 6) for v in self.population_mean],
                "neutral_mean": [round(float(v), 6) for v in self.neutral_mean], "prior_views": self.prior_views,
                "strength": self.strength, "baseline_strength": self.baseline_strength, "online_default": self.online_default}

    def baseline_offset(self, baseline: np.ndarray) -> np.ndarray:
        """What is subtracted from a calibrated person's tokens, given their neutral baseline token."""
        return (self.baseline_strength * (np.asarray(baseline, np.float32) - self.neutral_mean)).astype(np.float32)


class RestingFace:
    """One person's online correction: the running mean of their tokens against the population's."""

    def __init__(self, stats: RestingFaceStats) -> None:
        self.stats = stats
        self.views = 0.0
        self._sum = np.zeros_like(stats.population_mean, dtype=np.float64)

    def observe(self, token: np.ndarray, views: float = 1.0) -> None:
        """Add ``views`` worth of this token to the running mean (forgetting beyond :data:`MAX_VIEWS`)."""
        total = self.views + views
        if total > MAX_VIEWS:
            self._sum *= (MAX_VIEWS - views) / self.views
            total = MAX_VIEWS
        self._sum += views * np.asarray(token, np.float64)
        self.views = total

    def offset(self) -> np.ndarray:
        """What is subtracted from this person's tokens now."""
        if self.views <= 0:
            return np.zeros_like(self.stats.population_mean)
        weight = self.stats.strength * self.views / (self.views + self.stats.prior_views)
        return (weight * (self._sum / self.views - self.stats.population_mean)).astype(np.float32)

    def correct(self, token: np.ndarray, views: float = 1.0, observe: bool = True) -> np.ndarray:
        """The token corrected by what was seen of the person before it (then added to the running mean when
        ``observe``): a person's first view is read as it is."""
        token = np.asarray(token, np.float32)
        corrected = (token - self.offset()).astype(np.float32)
        if observe:
            self.observe(token, views)
        return corrected


class RestingFaces:
    """The corrections of the people of one stream (or of ``Recognizer.predict``), by track id; thread-safe.

    ``calibrate(seconds)`` records the focus person's mean token over the next ``seconds`` of stream time as
    their neutral baseline (it then follows the focus person: in a one-person setting, the user).
    """

    def __init__(self, stats: RestingFaceStats | None, enabled: bool | None = None) -> None:
        """``enabled``: the online prior on or off (None: the bundle's default, ``stats.online_default``)."""
        self.stats = stats
        if enabled is None:
            enabled = stats is not None and stats.online_default
        self.enabled = bool(enabled and stats is not None)
        self._people: dict[int, RestingFace] = {}
        self._baseline: np.ndarray | None = None
        self._recording: tuple[float | None, float, list[np.ndarray]] | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether the bundle carries the statistics a correction needs."""
        return self.stats is not None

    def calibrate(self, seconds: float) -> None:
        """Record the focus person's neutral baseline over the next ``seconds`` (stream time).

        Raises:
            InputError: ``seconds`` is not a positive number, or the bundle has no resting-face statistics.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < float(seconds) <= 600:
            raise InputError(f"calibration seconds={seconds!r} is invalid: use a number of seconds between 0 and 600 "
                             "(e.g. 3), while the person looks neutral")
        if self.stats is None:
            raise InputError(f"this bundle's face encoder has no resting-face statistics: run `{REBUILD_COMMAND}`")
        with self._lock:
            self._recording = (None, float(seconds), [])

    def set_baseline(self, tokens: np.ndarray) -> None:
        """Use the mean of ``tokens`` (N, D) as the focus person's neutral baseline now.

        Raises:
            InputError: no tokens, a wrong width, or no statistics in the bundle.
        """
        if self.stats is None:
            raise InputError(f"this bundle's face encoder has no resting-face statistics: run `{REBUILD_COMMAND}`")
        tokens = np.atleast_2d(np.asarray(tokens, np.float32))
        if tokens.size == 0 or tokens.shape[1] != self.stats.population_mean.size:
            raise InputError("no face to calibrate on: give frames or crops in which one face looks neutral")
        with self._lock:
            self._baseline = tokens.mean(axis=0)

    def reset(self) -> None:
        """Forget every person's correction and the baseline (a new session)."""
        with self._lock:
            self._people.clear()
            self._baseline = None
            self._recording = None

    @property
    def calibrating(self) -> bool:
        with self._lock:
            return self._recording is not None

    @property
    def has_baseline(self) -> bool:
        with self._lock:
            return self._baseline is not None

    def correct(self, person: int, token: np.ndarray, t: float, views: float, focus: bool) -> np.ndarray:
        """Person ``person``'s corrected token at stream time ``t`` (``views``: how much face this token stands for;
        ``focus``: whether the person is the stream's focus, whom a baseline and a calibration belong to)."""
        if self.stats is None:
            return np.asarray(token, np.float32)
        with self._lock:
            if focus and self._recording is not None:
                started, seconds, tokens = self._recording
                started = t if started is None else started
                tokens.append(np.asarray(token, np.float32))
                self._recording = (started, seconds, tokens)
                if t - started >= seconds - 1e-6:
                    self._baseline = np.mean(tokens, axis=0)
                    self._recording = None
            state = self._people.get(person)
            if state is None:
                state = self._people[person] = RestingFace(self.stats)
            if focus and self._baseline is not None:
                state.observe(token, views)
                return (np.asarray(token, np.float32) - self.stats.baseline_offset(self._baseline)).astype(np.float32)
            if not self.enabled:
                return np.asarray(token, np.float32)
            return state.correct(token, views)

    def forget(self, live: set[int]) -> None:
        """Drop the state of people no longer tracked."""
        with self._lock:
            for gone in set(self._people) - live:
                del self._people[gone]
