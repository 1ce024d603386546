"""Supervised worker threads: a stage turns inputs into observations and never takes the stream down.

A :class:`Stage` runs one thread. An exception while handling an item is logged once
(per distinct message), the stage's modalities get an absent observation with the
reason, and the stage goes on with the next item. A stage busy on one item for longer
than its time limit is declared *hung* by the ticker (:meth:`Stage.check_hang`): its
modalities are marked unavailable and its thread is left to finish on its own (Python
cannot kill a thread); it never holds up the others. If the stuck call returns after
all, the stage recovers: its modalities come back and it takes new items again.

:class:`QueueStage` takes items from a :class:`~ecmf_edge.stream.queues.DropOldestQueue`;
:class:`SourceStage` reads a capture source directly. Both track how far they got in
stream time, so file playback can wait for them (:meth:`Stage.ready_through`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ecmf_edge.capture.base import SourceEnded
from ecmf_edge.capture.clock import Clock
from ecmf_edge.errors import EcmfError
from ecmf_edge.stream.aligner import Observation
from ecmf_edge.stream.queues import DropOldestQueue

__all__ = ["Stage", "QueueStage", "SourceStage"]

logger = logging.getLogger("ecmf_edge")


class Stage:
    """A supervised thread producing :class:`Observation` objects for ``modalities``."""

    def __init__(self, name: str, modalities: tuple[str, ...], post: Callable[..., None], clock: Clock,
                 time_limit_s: float, stop: threading.Event, progress: threading.Condition | None = None,
                 on_recover: Callable[[tuple[str, ...], str], None] | None = None) -> None:
        self.name = name
        self.modalities = tuple(modalities)
        self.post = post
        self.clock = clock
        self.time_limit_s = float(time_limit_s)
        self.stop = stop
        self.progress = progress or threading.Condition()
        self.thread: threading.Thread | None = None
        # Clock time the current item started (None while idle).
        self.busy_since: float | None = None
        # Permanent failure (hung stage, dead device); the stage's modalities are unavailable.
        self.failed: str | None = None
        # Items handled, and items whose handling raised.
        self.processed = 0
        self.errors = 0
        # CPU seconds this stage's thread spent handling items (libraries' own worker threads not included).
        self.cpu_s = 0.0
        self._logged: set[str] = set()
        self._exit = False  # set when the stage has nothing more to do (its source ended)
        # on_recover(modality, reason) lifts the "hung" mark of a modality once the stuck call returned.
        self.on_recover = on_recover
        self._hung_since: float | None = None

    # -- to implement -------------------------------------------------------------------------
    def _take(self, timeout: float) -> Any | None:
        """The next item, or None when there is none within ``timeout``."""
        raise NotImplementedError

    def handle(self, item: Any) -> None:
        """Turn one item into observations (call :attr:`post`)."""
        raise NotImplementedError

    def item_time(self, item: Any) -> tuple[float, float]:
        """(stream time, capture clock time) of an item, for failure observations."""
        return float(getattr(item, "t", 0.0)), float(getattr(item, "captured", self.clock.now()))

    def _done(self, item: Any) -> None:
        """Bookkeeping after an item (handled or failed)."""

    def ready_through(self, t: float) -> bool:
        """Whether every input up to stream time ``t`` has been handled (or the stage is out of the game)."""
        return True

    # -- machinery ---------------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"ecmf-{self.name}", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when the thread has ended."""
        if self.thread is None:
            return True
        if self.thread is not threading.current_thread():
            self.thread.join(max(0.0, timeout))
        return not self.thread.is_alive()

    def log_once(self, message: str, level: int = logging.WARNING) -> None:
        if message not in self._logged:
            self._logged.add(message)
            logger.log(level, "%s (the stream goes on without it)", message)

    def _notify(self) -> None:
        with self.progress:
            self.progress.notify_all()

    def _run(self) -> None:
        try:
            while not self.stop.is_set() and self.failed is None and not self._exit:
                item = self._take(0.1)
                if item is None:
                    continue
                if self.failed is not None:
                    break
                self.busy_since = self.clock.now()
                cpu = time.thread_time()
                try:
                    self.handle(item)
                    self.processed += 1
                except Exception as exc:  # a failing stage must not end the stream
                    self._item_failed(item, exc)
                finally:
                    self.cpu_s += time.thread_time() - cpu
                    self.busy_since = None
                    self._done(item)
                    if self._hung_since is not None:
                        self._recover()
                    self._notify()
        finally:
            self._finish()
            self._notify()

    def _finish(self) -> None:
        """Called on the stage's thread when it stops."""

    def _item_failed(self, item: Any, exc: Exception) -> None:
        self.errors += 1
        detail = str(exc) if isinstance(exc, EcmfError) else f"{type(exc).__name__}: {exc}"
        reason = f"{self.name} stage failed: {detail.splitlines()[0][:200] if detail else type(exc).__name__}"
        self.log_once(reason)
        t, captured = self.item_time(item)
        self.post(*(Observation(modality, t, captured, None, reason) for modality in self.modalities))

    def check_hang(self, now: float) -> str | None:
        """Declare the stage hung when its current item has run past the time limit; returns the new reason."""
        since = self.busy_since
        if self.failed is None and since is not None and now - since > self.time_limit_s:
            self.failed = f"{self.name} stage hung: no result within {self.time_limit_s:g} s"
            self._hung_since = since
            self.log_once(self.failed)
            return self.failed
        return None

    def _recover(self) -> None:
        """The stuck call returned: take items again and give the modalities back (unless the stream is stopping)."""
        reason, since, self._hung_since = self.failed, self._hung_since, None
        assert since is not None  # _run calls this only while _hung_since is set; only this thread clears it
        if self.stop.is_set() or reason is None:
            return
        self.failed = None
        if self.on_recover is not None:
            self.on_recover(self.modalities, reason)
        logger.warning("%s stage recovered: its call returned after %.1f s", self.name, self.clock.now() - since)


class QueueStage(Stage):
    """A stage fed through a bounded queue of items that have a ``t`` (stream time) attribute."""

    def __init__(self, *args: Any, queue_size: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = DropOldestQueue(queue_size, on_drop=self._forget)
        self._pending: list[float] = []
        self._pending_lock = threading.Lock()

    def submit(self, item: Any, *, block: bool = False) -> bool:
        """Queue ``item``; ``block`` waits for room (file playback) instead of dropping the oldest.

        Returns False when the stage is out of the game or the stream is stopping.
        """
        if self.failed is not None or self.stop.is_set():
            return False
        with self._pending_lock:
            self._pending.append(float(item.t))
        while True:
            if self.queue.put(item, block=block, timeout=0.1):
                return True
            if self.failed is not None or self.stop.is_set():
                self._forget(item)
                return False

    def _forget(self, item: Any) -> None:
        with self._pending_lock:
            try:
                self._pending.remove(float(item.t))
            except ValueError:
                pass
        self._notify()

    def _take(self, timeout: float) -> Any | None:
        return self.queue.get(timeout)

    def _done(self, item: Any) -> None:
        self._forget(item)

    def idle(self) -> bool:
        with self._pending_lock:
            return not self._pending

    def ready_through(self, t: float) -> bool:
        if self.failed is not None:
            return True
        with self._pending_lock:
            return not any(p <= t + 1e-9 for p in self._pending)


class SourceStage(Stage):
    """A stage that reads a capture source itself; it ends with the source.

    ``pace(t)`` (file playback) blocks until the stream is ready for an item at stream
    time ``t``, so a fast source cannot run arbitrarily far ahead of the fusion ticks.
    """

    def __init__(self, *args: Any, source: Any, pace: Callable[[float], None] | None = None,
                 on_unavailable: Callable[[tuple[str, ...], str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source
        self.pace = pace
        self.on_unavailable = on_unavailable
        # Stream time up to which the source has been handled; +inf once it ended.
        self.done_t = float("-inf")
        # Stream time the source ended at (None while it runs).
        self.end_t: float | None = None
        # The device error that ended the source, if any.
        self.device_error: EcmfError | None = None

    def _take(self, timeout: float) -> Any | None:
        try:
            item = self.source.read(timeout)
        except SourceEnded as end:
            self.end_t = end.end_t
            self._ended(end.end_t)
            self._exit = True
            return None
        except EcmfError as exc:  # the device died or the file is unreadable
            self.device_error = exc
            self.failed = str(exc)
            self.log_once(str(exc))
            if self.on_unavailable is not None:
                self.on_unavailable(self.modalities, str(exc))
            return None
        if item is None:
            self._report_problem()
        elif self.pace is not None:
            self.pace(float(item.t))
        return item

    def _report_problem(self) -> None:
        """While a device says why it delivers nothing (reconnecting ...), its modalities are absent with that reason."""
        problem = getattr(self.source, "problem", None)
        if not problem or self.source.t0 is None:
            return
        now = self.clock.now()
        self.post(*(Observation(modality, now - self.source.t0, now, None, problem) for modality in self.modalities))

    def _ended(self, end_t: float) -> None:
        """The source has no more data (post end observations here)."""

    def _done(self, item: Any) -> None:
        end = getattr(item, "end_t", None)
        self.done_t = max(self.done_t, float(end if end is not None else item.t))

    @property
    def finished(self) -> bool:
        """The source ended or failed (the stage reads no more)."""
        return self.end_t is not None or self.device_error is not None or self.failed is not None

    def ready_through(self, t: float) -> bool:
        return self.finished or self.done_t >= t - 1e-9

    def _finish(self) -> None:
        try:
            self.source.close()
        except EcmfError as exc:
            logger.debug("closing %s: %s", getattr(self.source, "name", "source"), exc)
