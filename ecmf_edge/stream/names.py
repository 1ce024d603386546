"""Stream names: what ``event.stream`` says, unique among the running streams of the process.

A stream is named by the caller (``Recognizer.stream(stream_id=...)``, ``serve --name``) or after its
input: the video or audio file's stem, ``camera0``, ``microphone``. A default name already taken by a
running stream (of this or another recognizer) gets a suffix: ``clip``, ``clip-2``, ``clip-3`` ...
"""
from __future__ import annotations

import re
import threading
import weakref
from pathlib import Path
from typing import Any

__all__ = ["default_stream_name", "StreamNames"]

_UNSAFE = re.compile(r"[^\w.\-]+")


def default_stream_name(camera: Any = None, video: Any = None, microphone: Any = None, audio: Any = None) -> str:
    """A name after the stream's main input: a file's stem, "camera<N>", a source's own name, or "microphone"."""
    if video is not None:
        base = Path(str(video)).stem
    elif isinstance(camera, int):
        base = f"camera{camera}"
    elif camera is not None:
        base = str(getattr(camera, "name", "") or "video")
    elif audio is not None:
        base = Path(str(audio)).stem
    elif isinstance(microphone, (str, int)):
        base = "microphone" if microphone == "default" else f"microphone-{microphone}"
    else:
        base = str(getattr(microphone, "name", "") or "microphone")
    return _UNSAFE.sub("-", base).strip("-") or "stream"


class StreamNames:
    """The names of the process's running streams (one registry for all recognizers; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, weakref.ref] = {}

    def _in_use(self, name: str) -> bool:
        ref = self._running.get(name)
        stream = ref() if ref is not None else None
        return stream is not None and not stream.finished

    def unique(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3`` ... whichever no running stream has."""
        with self._lock:
            name, k = base, 1
            while self._in_use(name):
                k += 1
                name = f"{base}-{k}"
            return name

    def claim(self, name: str, stream: Any) -> None:
        """Record ``stream`` (it has ``.finished``) as running under ``name``."""
        with self._lock:
            self._running = {n: r for n, r in self._running.items() if self._in_use(n)}
            self._running[name] = weakref.ref(stream)


RUNNING = StreamNames()
