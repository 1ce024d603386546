"""Where events go: Python callbacks, JSON lines, and the iterator a ``for`` loop reads.

A sink that raises is logged once and skipped for that event; it never stops the stream.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ecmf_edge.errors import InputError
from ecmf_edge.events import EmotionEvent
from ecmf_edge.stream.queues import DropOldestQueue

__all__ = ["CallbackSink", "JsonLinesSink", "EventQueue", "LabelChangeSink"]

logger = logging.getLogger("ecmf_edge")


class CallbackSink:
    """Calls ``function(event)``; exceptions are logged once per message and swallowed."""

    def __init__(self, function: Callable[[EmotionEvent], object], name: str | None = None) -> None:
        if not callable(function):
            raise InputError(f"event callback {function!r} is not callable: pass a function taking one EmotionEvent")
        self.function = function
        self.name = name or getattr(function, "__qualname__", repr(function))
        self.errors = 0
        self._logged: set[str] = set()

    def __call__(self, event: EmotionEvent) -> None:
        try:
            self.function(event)
        except Exception as exc:  # user code: report, never stop the stream
            self.errors += 1
            message = f"event callback {self.name} raised {type(exc).__name__}: {exc}"
            if message not in self._logged:
                self._logged.add(message)
                logger.warning("%s (the stream goes on)", message)

    def close(self) -> None:
        """Nothing to release."""


class LabelChangeSink(CallbackSink):
    """Calls ``function(event)`` only for events whose label differs from the previous event's."""

    def __call__(self, event: EmotionEvent) -> None:
        if event.label_changed:
            super().__call__(event)


class JsonLinesSink:
    """Writes each event as one JSON object per line to a path or an open text stream."""

    def __init__(self, target: str | Path | IO[str], *, append: bool = False) -> None:
        """``append`` adds to an existing file instead of replacing it.

        Raises:
            InputError: the path cannot be opened for writing.
        """
        self._fh: IO[str] | None
        self._own = isinstance(target, (str, Path))
        if isinstance(target, (str, Path)):
            try:
                self._fh = open(target, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"cannot write events to {target} ({exc.strerror}): choose a writable path") from None
        else:
            self._fh = target
        self._lock = threading.Lock()
        self.written = 0

    def __call__(self, event: EmotionEvent) -> None:
        with self._lock:
            if self._fh is None:
                return
            try:
                self._fh.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
                self._fh.flush()
                self.written += 1
            except (OSError, ValueError) as exc:  # full disk, closed pipe, closed file
                logger.warning("JSON lines output stopped: %s", exc)
                self._fh = None

    def close(self) -> None:
        with self._lock:
            if self._own and self._fh is not None:
                try:
                    self._fh.close()
                except OSError as exc:  # the last lines did not fit on the disk
                    logger.warning("JSON lines output stopped: %s", exc)
            self._fh = None


class EventQueue:
    """The buffer between the fusion ticker and a consuming ``for`` loop.

    Live streams drop the oldest event when the consumer falls behind (counted in
    :attr:`dropped`); file playback waits for the consumer instead, so no event is lost.
    """

    def __init__(self, maxsize: int, block: bool, stop: threading.Event) -> None:
        self._queue = DropOldestQueue(maxsize)
        self._block = block
        self._stop = stop
        self._closed = threading.Event()

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def __len__(self) -> int:
        """Events waiting for the consumer."""
        return len(self._queue)

    def __call__(self, event: EmotionEvent) -> None:
        while not self._stop.is_set() and not self._closed.is_set():
            if self._queue.put(event, block=self._block, timeout=0.1):
                return

    def close(self) -> None:
        """No more events will come; the iterator ends once the queue is empty."""
        self._closed.set()

    def __iter__(self) -> Iterator[EmotionEvent]:
        while True:
            event = self._queue.get(0.1)
            if event is not None:
                yield event
            elif self._closed.is_set() or self._stop.is_set():
                leftover = self._queue.clear()
                yield from leftover if not self._stop.is_set() else ()
                return
