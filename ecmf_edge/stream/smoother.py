"""Label smoothing: an exponential moving average of the probabilities plus hysteresis.

Per-tick probabilities flicker; an application wants a label that changes when the
person's state changes. The EMA damps the flicker, and a new label takes over only
when its smoothed probability beats the current label's by ``switch_margin`` and the
current label has been held for ``min_dwell_s``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.stream.options import SmootherOptions

__all__ = ["Smoother", "Smoothed"]


@dataclass(frozen=True)
class Smoothed:
    """The smoother's output for one tick."""

    # Smoothed probabilities over the labels (sum to 1).
    probabilities: np.ndarray
    # The held label and its smoothed probability.
    label: str
    confidence: float
    # True when the label differs from the previous tick's.
    changed: bool


class Smoother:
    """EMA + hysteresis over probability vectors; not thread-safe (one ticker uses it)."""

    def __init__(self, labels: Sequence[str], options: SmootherOptions | None = None) -> None:
        self.labels = tuple(labels)
        self.options = options or SmootherOptions()
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next update starts afresh."""
        self._ema: np.ndarray | None = None
        self._label: int | None = None
        self._since = 0.0
        self._last_t: float | None = None

    def update(self, probabilities: np.ndarray, t: float) -> Smoothed:
        """Fold in one tick's probabilities at stream time ``t``.

        Raises:
            InputError: the vector's length differs from the label count, or it holds NaN/Inf.
        """
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if p.size != len(self.labels):
            raise InputError(f"{p.size} probabilities for {len(self.labels)} labels: pass one per label")
        if not np.all(np.isfinite(p)):
            raise InputError("probabilities contain NaN or Inf")
        opts = self.options
        if self._last_t is not None and t - self._last_t > opts.reset_after_s:
            self.reset()
        self._last_t = t
        self._ema = p.copy() if self._ema is None else opts.alpha * p + (1.0 - opts.alpha) * self._ema
        total = float(self._ema.sum())
        smoothed = self._ema / total if total > 0 else np.full_like(self._ema, 1.0 / p.size)
        best = int(np.argmax(smoothed))
        previous = self._label
        if previous is None or (best != previous and t - self._since >= opts.min_dwell_s
                                and smoothed[best] - smoothed[previous] >= opts.switch_margin):
            label, self._since = best, t
        else:
            label = previous
        self._label = label
        return Smoothed(smoothed.astype(np.float32), self.labels[label], float(smoothed[label]),
                        previous is not None and label != previous)

    def idle(self, t: float) -> None:
        """A tick without any modality: start afresh once the gap exceeds ``reset_after_s``."""
        if self._last_t is not None and t - self._last_t > self.options.reset_after_s:
            self.reset()
