"""The clock every live source and stream stage reads: monotonic seconds, and waits that can be cut short.

Stream code never calls ``time.monotonic`` or ``time.sleep`` directly: it asks a
:class:`Clock`, so waits end as soon as the stream is closed (``sleep`` returns early
when its ``stop`` event is set) and tests can substitute a :class:`ManualClock`.
"""
from __future__ import annotations

import threading
import time

__all__ = ["Clock", "MonotonicClock", "ManualClock", "DEFAULT_CLOCK"]


class Clock:
    """Monotonic time in seconds plus an interruptible sleep."""

    def now(self) -> float:
        """Current time in seconds; never goes backwards."""
        raise NotImplementedError

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` (or until ``stop`` is set); returns True when ``stop`` ended the wait."""
        raise NotImplementedError

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        """Wait until ``now() >= deadline`` (or ``stop``); returns True when ``stop`` ended the wait."""
        return self.sleep(max(0.0, deadline - self.now()), stop)


class MonotonicClock(Clock):
    """``time.monotonic`` with waits on a ``threading.Event``."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if seconds <= 0:
            return bool(stop is not None and stop.is_set())
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)


class ManualClock(Clock):
    """A clock that only moves when :meth:`advance` is called (for deterministic tests).

    ``sleep`` blocks until another thread advances the clock past the deadline, the
    ``stop`` event is set, or (as a safety net) ``real_timeout_s`` of real time passes.
    """

    def __init__(self, start: float = 0.0, real_timeout_s: float = 5.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()
        self._real_timeout_s = real_timeout_s

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and wake sleepers; returns the new time."""
        with self._cond:
            self._now += max(0.0, float(seconds))
            self._cond.notify_all()
            return self._now

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        real_deadline = time.monotonic() + self._real_timeout_s
        with self._cond:
            deadline = self._now + max(0.0, seconds)
            while self._now < deadline:
                if stop is not None and stop.is_set():
                    return True
                remaining = real_deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(0.01, remaining))
        return bool(stop is not None and stop.is_set())


# The clock used when none is given.
DEFAULT_CLOCK = MonotonicClock()
