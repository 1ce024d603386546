"""Several streams of one recognizer read as one: their events interleaved in arrival order.

Each stream keeps its own threads, queues and state; a forwarding thread per stream moves its
events into one bounded queue. Iterating the group ends when every stream has ended; a stream that
fails (its devices are lost) ends alone and the others go on; ``close`` ends them all.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

from ecmf_edge.errors import EcmfError, InputError
from ecmf_edge.events import EmotionEvent

__all__ = ["StreamGroup"]

_END = object()


class StreamGroup:
    """Iterate the events of several :class:`~ecmf_edge.stream.pipeline.EmotionStream` objects together."""

    def __init__(self, streams: Sequence, queue_size: int = 256) -> None:
        """Raises:
            InputError: no streams, or two with the same id.
        """
        if not streams:
            raise InputError("a stream group needs at least one stream")
        ids = [s.stream_id for s in streams]
        if len(set(ids)) != len(ids):
            raise InputError(f"streams need distinct ids, got {ids}")
        self.streams = list(streams)
        self.by_id = {s.stream_id: s for s in self.streams}
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # The error that ended each stream that failed, by id.
        self.errors: dict[str, EcmfError] = {}

    def _forward(self, stream) -> None:
        try:
            for event in stream:
                while not self._stop.is_set():
                    try:
                        self._queue.put(event, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    break
        except EcmfError as exc:
            self.errors[stream.stream_id] = exc
        finally:
            while True:
                try:
                    self._queue.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        break

    def __iter__(self) -> Iterator[EmotionEvent]:
        for stream in self.streams:
            thread = threading.Thread(target=self._forward, args=(stream,), name=f"ecmf-group-{stream.stream_id}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        ended = 0
        try:
            while ended < len(self.streams):
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if item is _END:
                    ended += 1
                    continue
                yield item
        finally:
            self.close()

    def close(self, timeout: float = 1.0) -> None:
        """End every stream; returns within about ``timeout`` seconds."""
        self._stop.set()
        for stream in self.streams:
            stream.close(timeout)
        for thread in self._threads:
            thread.join(0.2)

    def __enter__(self) -> StreamGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
