"""A bounded, thread-safe ring of audio samples that drops the oldest samples when full.

The audio callback (PortAudio's thread, or a real-time file player) writes; the audio
stage reads. When the reader falls behind by more than the capacity, the oldest
samples are discarded and counted, so the stream stays live instead of lagging.
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["AudioRing"]


class AudioRing:
    """Float32 sample ring with overflow accounting."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(int(capacity), dtype=np.float32)
        self._start = 0  # index of the oldest unread sample
        self._size = 0
        self._cond = threading.Condition()
        # Samples written since creation (including dropped ones) and samples read.
        self.written = 0
        self.read_total = 0
        # Overflow events and the samples they discarded.
        self.overflows = 0
        self.dropped_samples = 0
        # Clock time of the newest write (set by the writer).
        self.last_write = 0.0
        self._closed = False

    @property
    def capacity(self) -> int:
        return self._buf.size

    def __len__(self) -> int:
        with self._cond:
            return self._size

    def write(self, samples: np.ndarray, when: float = 0.0) -> int:
        """Append samples; returns how many old samples were dropped to make room."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        cap = self._buf.size
        with self._cond:
            self.written += x.size
            dropped = 0
            if x.size >= cap:
                dropped = self._size + x.size - cap
                x = x[-cap:]
                self._start, self._size = 0, 0
            elif self._size + x.size > cap:
                dropped = self._size + x.size - cap
                self._start = (self._start + dropped) % cap
                self._size -= dropped
            end = (self._start + self._size) % cap
            first = min(x.size, cap - end)
            self._buf[end:end + first] = x[:first]
            self._buf[:x.size - first] = x[first:]
            self._size += x.size
            if dropped:
                self.overflows += 1
                self.dropped_samples += dropped
                self.read_total += dropped  # the reader's position skips what was dropped
            self.last_write = when
            self._cond.notify_all()
            return dropped

    def read(self, max_samples: int, timeout: float, min_samples: int = 1) -> tuple[int, np.ndarray] | None:
        """``(position, samples)``: up to ``max_samples`` oldest unread samples once at least ``min_samples`` are there.

        ``position`` is the index of the first returned sample among all samples ever
        written (dropped ones included), so ``position / rate`` is its time. Returns None
        after ``timeout`` seconds (or when closed and empty).
        """
        with self._cond:
            if self._size < min_samples and not self._closed:
                self._cond.wait_for(lambda: self._size >= min_samples or self._closed, timeout=max(0.0, timeout))
            if self._size == 0 or (self._size < min_samples and not self._closed):
                return None
            n = min(self._size, max_samples)
            cap = self._buf.size
            idx = (self._start + np.arange(n)) % cap
            out = self._buf[idx].copy()
            position = self.read_total
            self._start = (self._start + n) % cap
            self._size -= n
            self.read_total += n
            return position, out

    def close(self) -> None:
        """Wake waiting readers; later reads return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
