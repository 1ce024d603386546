"""A bounded queue that drops its oldest item when full (live) or waits for room (file playback).

Every wait has a timeout, so no thread can block on a queue forever.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["DropOldestQueue"]


class DropOldestQueue:
    """FIFO of at most ``maxsize`` items; ``None`` is not a valid item."""

    def __init__(self, maxsize: int, on_drop: Callable[[Any], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = int(maxsize)
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._on_drop = on_drop
        # Items discarded to make room for newer ones.
        self.dropped = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: Any, *, block: bool = False, timeout: float = 0.1) -> bool:
        """Add ``item``.

        ``block=False``: always succeeds; when full the oldest item is dropped (and
        passed to ``on_drop``). ``block=True``: waits up to ``timeout`` seconds for room
        and returns False if there was none (nothing is dropped).
        """
        if item is None:
            raise ValueError("None cannot be queued")
        victim = None
        with self._cond:
            if len(self._items) >= self.maxsize:
                if block:
                    if not self._cond.wait_for(lambda: len(self._items) < self.maxsize, timeout=max(0.0, timeout)):
                        return False
                else:
                    victim = self._items.popleft()
                    self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
        if victim is not None and self._on_drop is not None:
            self._on_drop(victim)
        return True

    def get(self, timeout: float) -> Any | None:
        """The oldest item, or None when none arrived within ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait_for(lambda: bool(self._items), timeout=max(0.0, timeout))
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def clear(self) -> list:
        """Remove and return everything queued."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items
