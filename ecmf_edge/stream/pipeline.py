"""The live loop: sources -> stage threads -> aligner -> fusion ticks -> smoother -> sinks.

:class:`EmotionStream` wires the stages, runs the fusion ticker and delivers
:class:`~ecmf_edge.events.EmotionEvent` objects to callbacks and to a ``for`` loop.

Two ways of keeping time:

* **real time** (a device, or files played at their pace): a tick every
  ``1 / fusion_hz`` seconds on the clock fuses whatever each modality has newest; queues
  drop the oldest item when a stage falls behind.
* **fast file playback** (``realtime=False``): tick *k* is fused at stream time
  ``k / fusion_hz`` as soon as every stage has handled its input up to that time, and
  queues wait for room instead of dropping, so the events do not depend on the speed
  of the machine.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from ecmf_edge.capture.base import AudioSource, Frame, VideoSource
from ecmf_edge.capture.clock import DEFAULT_CLOCK, Clock
from ecmf_edge.errors import EcmfError, InputError
from ecmf_edge.events import EmotionEvent
from ecmf_edge.stream.aligner import Aligner
from ecmf_edge.stream.audio import AudioStage
from ecmf_edge.stream.fuser import Fuser
from ecmf_edge.stream.models import StreamModels
from ecmf_edge.stream.options import MODALITIES, StreamOptions
from ecmf_edge.stream.sinks import CallbackSink, EventQueue
from ecmf_edge.stream.stage import QueueStage, SourceStage, Stage
from ecmf_edge.stream.text import TextStage
from ecmf_edge.stream.vision import FaceStage, SceneStage, VideoReader

__all__ = ["StreamModels", "EmotionStream"]

logger = logging.getLogger("ecmf_edge")


class EmotionStream:
    """A running recognition stream; iterate it for events, or attach callbacks and :meth:`run` it.

    Use it as a context manager or call :meth:`close`; closing returns within about a second.
    """

    def __init__(self, models: StreamModels, *, video: VideoSource | None = None, audio: AudioSource | None = None,
                 options: StreamOptions | None = None, clock: Clock | None = None, realtime: bool = True,
                 sinks: tuple[Callable[[EmotionEvent], None], ...] = (), stream_id: str | None = None) -> None:
        """Raises:
            InputError: no source, or fast playback (``realtime=False``) with a live device.
        """
        if video is None and audio is None:
            raise InputError("nothing to stream: give a camera or video file and/or a microphone or audio file")
        live = [s.name for s in (video, audio) if s is not None and s.live]
        if not realtime and live:
            raise InputError(f"realtime=False needs file inputs, but {', '.join(live)} is a live device or real-time "
                             "playback: pass realtime=True")
        self.models, self.options = models, options or StreamOptions()
        self.clock = clock or DEFAULT_CLOCK
        self.realtime = bool(realtime)
        self.video, self.audio = video, audio
        self._sinks: list[Callable[[EmotionEvent], None]] = [self._wrap(s) for s in sinks]
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._progress = threading.Condition()
        self.aligner = Aligner({m: self.options.max_age(m) for m in MODALITIES})
        # The stream's id in its events (several streams of one recognizer tell theirs apart by it).
        self.stream_id = stream_id
        self.fuser = Fuser(self.aligner, models, self.options, self.clock, newest=self.realtime,
                           stream_id=stream_id)
        self._queues: list[EventQueue] = []
        self._tick_t = 0.0
        self._seen = -1
        self._ticker: threading.Thread | None = None
        self._started = False
        self._closed = False
        self.t0: float | None = None
        self._build()

    # -- wiring ---------------------------------------------------------------------------------
    def _build(self) -> None:
        opts, models, aligner = self.options, self.models, self.aligner
        common = dict(post=aligner.update, clock=self.clock, stop=self._stop, progress=self._progress,
                      on_recover=aligner.clear_unavailable)
        block = not self.realtime
        pace = None if self.realtime else self._pace
        self.face_stage = self.scene_stage = self.video_reader = self.audio_stage = self.text_stage = None
        if self.video is not None:
            if models.face_detector is not None and models.face_encoder is not None:
                self.face_stage = FaceStage(time_limit_s=opts.time_limit("face"), queue_size=opts.queue_size,
                                            detector=models.face_detector, encoder=models.face_encoder, options=opts,
                                            **common)
            if models.frame_encoder is not None:
                self.scene_stage = SceneStage(time_limit_s=opts.time_limit("frame"), queue_size=opts.queue_size,
                                              encoder=models.frame_encoder, change=opts.scene_change,
                                              refresh_s=opts.scene_refresh_s, **common)
            self.video_reader = VideoReader(time_limit_s=float("inf"), source=self.video, pace=pace,
                                            on_unavailable=aligner.set_unavailable, face=self.face_stage,
                                            scene=self.scene_stage, scene_hz=opts.frame_encoder_hz, face_hz=opts.face_path_hz,
                                            block=block, **common)
        if self.audio is not None and models.vad is not None and models.speech_encoder is not None:
            if models.text_path is not None:
                self.text_stage = TextStage(time_limit_s=opts.time_limit("text"), queue_size=opts.queue_size,
                                            text_path=models.text_path, **common)
            self.audio_stage = AudioStage(time_limit_s=opts.time_limit("audio"), source=self.audio, pace=pace,
                                          on_unavailable=aligner.set_unavailable, vad=models.vad,
                                          encoder=models.speech_encoder, branch=models.speech_branch,
                                          options=opts, text=self.text_stage,
                                          block=block, **common)
        if opts.speaker_per_focus and self.face_stage is not None and self.audio_stage is not None \
                and hasattr(models.speech_branch, "reset_speaker"):
            self.face_stage.on_focus_change = models.speech_branch.reset_speaker  # a new focus person: a new speaker
        no_video, no_audio = "no camera or video given", "no microphone or audio file given"
        defaults = {"face": no_video if self.video is None else "the face models are not loaded",
                    "frame": no_video if self.video is None else "the frame encoder is not loaded",
                    "audio": no_audio if self.audio is None else "the audio models are not loaded",
                    "text": no_audio if self.audio is None else "the text path is not loaded"}
        present = {"face": self.face_stage, "frame": self.scene_stage, "audio": self.audio_stage, "text": self.text_stage}
        for modality in MODALITIES:
            if present[modality] is None:
                aligner.set_unavailable(modality, models.unavailable.get(modality) or defaults[modality])
        self.stages: list[Stage] = [s for s in (self.video_reader, self.face_stage, self.scene_stage, self.audio_stage,
                                                self.text_stage) if s is not None]

    def _pace(self, t: float) -> None:
        with self._progress:
            while not self._stop.is_set() and t > self._tick_t + self.options.max_lead_s:
                self._progress.wait(0.05)

    # -- lifecycle --------------------------------------------------------------------------------
    @staticmethod
    def _wrap(sink: Callable[[EmotionEvent], None]) -> Callable[[EmotionEvent], None]:
        return sink if hasattr(sink, "close") else CallbackSink(sink)

    def add_sink(self, sink: Callable[[EmotionEvent], None]) -> None:
        """Deliver every later event to ``sink(event)`` (called on the ticker thread; keep it quick).

        A plain function is wrapped so that an exception it raises is logged once and skipped.
        """
        self._sinks.append(self._wrap(sink))

    def start(self) -> EmotionStream:
        """Start the sources and threads (idempotent); events go to the sinks from now on.

        Raises:
            DeviceError: a device cannot be started.
            InputError: the stream was closed.
        """
        if self._closed:
            raise InputError("this stream is closed: start a new one with Recognizer.stream(...)")
        if self._started:
            return self
        self._started = True
        self.t0 = self.clock.now()
        for source in (self.video, self.audio):
            if source is not None:
                source.start(self.t0)
        for stage in self.stages:
            stage.start()
        self._ticker = threading.Thread(target=self._run_ticker, name="ecmf-fusion", daemon=True)
        self._ticker.start()
        return self

    def __iter__(self) -> Iterator[EmotionEvent]:
        queue = EventQueue(self.options.event_queue_size, block=not self.realtime, stop=self._stop)
        self._queues.append(queue)
        if self._finished.is_set():
            queue.close()
        self.start()
        completed = False
        try:
            yield from queue
            completed = True
        finally:
            if not completed:  # the consumer left the loop (break, exception): the stream ends
                self.close()
        error = self.error if not self._stop.is_set() else None
        # The stream is over once its events have all been taken: its stage threads end and its devices are
        # released now, not when the recognizer closes.
        self.close()
        if error is not None:
            raise error

    def run(self, timeout: float | None = None) -> bool:
        """Start and block until the stream ends or ``timeout`` seconds pass; True if it ended."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def error(self) -> EcmfError | None:
        """The device error that ended the stream, when every source failed (None otherwise)."""
        sources = [s for s in self.stages if isinstance(s, SourceStage)]
        if sources and all(s.device_error is not None for s in sources):
            return sources[0].device_error
        return None

    @property
    def end_reason(self) -> str | None:
        """Why the stream ended: "input ended" (every file read to its end), the device error that ended it, or
        "stopped" (closed before its inputs ended); None while it runs."""
        if not (self._finished.is_set() or self._closed):
            return None
        error = self.error
        if error is not None:
            return str(error)
        return "input ended" if self._started and self._sources_done() else "stopped"

    @property
    def events(self) -> int:
        """Events emitted so far."""
        return self.fuser.count

    def frame_for(self, event: EmotionEvent) -> Frame | None:
        """The video frame that goes with ``event`` (the newest one in real time), or None."""
        if self.video_reader is None:
            return None
        return self.video_reader.latest if self.realtime else self.video_reader.frame_at(event.timestamp)

    def calibrate(self, seconds: float = 3.0) -> None:
        """Record the focus person's face over the next ``seconds`` as their neutral baseline (they should look
        neutral meanwhile); from then on their face is read relative to it.

        Raises:
            InputError: the stream has no video, ``seconds`` is out of range, or the bundle has no statistics for it.
        """
        face_stage: FaceStage | None = getattr(self, "face_stage", None)
        if face_stage is None:
            raise InputError("this stream has no camera or video: calibration reads the face")
        face_stage.path.resting.calibrate(seconds)

    def set_focus(self, focus: str | int) -> None:
        """Change whose face the fused label follows, while the stream runs: "largest", "center" or a track id
        (``event.people[i].id``). Takes effect from the next frame the face path reads.

        Raises:
            InputError: an invalid focus, or a stream without video.
        """
        from dataclasses import replace

        checked = replace(self.options, focus=focus).focus  # StreamOptions' own check of the value
        face_stage: FaceStage | None = getattr(self, "face_stage", None)
        if face_stage is None:
            raise InputError("this stream has no camera or video: the focus is a face")
        face_stage.path.focus = checked
        self.options = replace(self.options, focus=checked)

    @property
    def source(self) -> str:
        """What the stream reads, in words (e.g. "clip.mp4 + clip.mp4 (sound)", "camera 0 + microphone default")."""
        names = [str(getattr(s, "name", type(s).__name__)) for s in (self.video, self.audio) if s is not None]
        if len(names) == 2 and names[0] == names[1]:
            names[1] += " (sound)"
        return " + ".join(names)

    def close(self, timeout: float = 1.0) -> None:
        """Stop every thread and release the devices; returns within about ``timeout`` seconds."""
        deadline = time.monotonic() + 0.9 * timeout
        self._closed = True
        self._stop.set()
        with self._progress:
            self._progress.notify_all()
        for queue in self._queues:
            queue.close()
        threads = [self._ticker] if self._ticker is not None else []
        for stage in self.stages:
            stage.join(deadline - time.monotonic())
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        owners = {id(s.source): s for s in self.stages if isinstance(s, SourceStage)}
        for source in (self.video, self.audio):
            if source is None:
                continue
            owner = owners.get(id(source))
            # A stage closes its own source when its thread ends; close here what no running thread will close
            # (never started, no stage for it) and devices whose reading thread is stuck (their close is thread-safe).
            if not self._started or owner is None or (owner.thread is not None and owner.thread.is_alive()
                                                      and getattr(source, "close_is_thread_safe", False)):
                source.close()
        for sink in self._sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                close()
        self._finished.set()

    def __enter__(self) -> EmotionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ticking ----------------------------------------------------------------------------------
    def _check_health(self) -> None:
        now = self.clock.now()
        for stage in self.stages:
            reason = stage.check_hang(now)
            if reason is not None:
                self.aligner.set_unavailable(stage.modalities, reason)

    def _drained(self) -> bool:
        for stage in self.stages:
            if isinstance(stage, SourceStage) and not stage.finished:
                return False
            if isinstance(stage, QueueStage) and stage.failed is None and not stage.idle():
                return False
        return True

    def _sources_done(self) -> bool:
        return all(s.finished for s in self.stages if isinstance(s, SourceStage))

    def _wait_drained(self) -> bool:
        with self._progress:
            while not self._stop.is_set():
                self._check_health()
                if self._drained():
                    return True
                self._progress.wait(0.05)
        return False

    def _end_t(self) -> float:
        ends = [s.end_t for s in self.stages if isinstance(s, SourceStage) and s.end_t is not None]
        return max(ends) if ends else float("-inf")

    def _wait_ready(self, t: float) -> bool:
        with self._progress:
            while not self._stop.is_set():
                self._check_health()
                if all(stage.ready_through(t) for stage in self.stages):
                    return True
                self._progress.wait(0.05)
        return False

    def _tick(self, t: float) -> None:
        self._seen = self.aligner.version
        self._deliver(self.fuser.event(t))
        with self._progress:
            self._tick_t = t
            self._progress.notify_all()

    def _run_ticker(self) -> None:
        period = 1.0 / self.options.fusion_hz
        t0 = self.t0
        assert t0 is not None  # start() sets t0 before it starts this thread, and never changes it
        k = 0
        last = float("-inf")
        try:
            while not self._stop.is_set():
                k += 1
                t = k * period
                if self.realtime:
                    if self.clock.sleep_until(t0 + t, self._stop):
                        break
                    late = self.clock.now() - t0 - t
                    if late > period:  # fell behind: skip the missed ticks instead of bursting
                        k += int(late // period)
                        t = k * period
                    self._check_health()
                    if self._sources_done() and t >= self._end_t() - 1e-9:
                        # The inputs are over: no more periodic events, one closing event once the stages are done.
                        if self._wait_drained() and self.aligner.version != self._seen:
                            self._tick(max(t, self.clock.now() - t0))
                        break
                elif not self._wait_ready(t):
                    break
                if self._drained() and t >= self._end_t() - 1e-9:
                    break
                self._tick(t)
                last = t
            end = self._end_t()
            if not self._stop.is_set() and not self.realtime and last < end - 1e-9 < float("inf") and self._wait_ready(end):
                self._tick(end)  # a closing event at the very end of the files (it carries the last utterance's text)
        except Exception:  # a bug here must still end the stream cleanly
            logger.exception("the fusion ticker stopped unexpectedly")
        finally:
            for queue in self._queues:
                queue.close()
            self._finished.set()

    def _deliver(self, event: EmotionEvent) -> None:
        for sink in list(self._sinks):
            sink(event)
        for queue in self._queues:
            queue(event)

    # -- diagnostics ------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters: events, per-stage processed/errors/failed/CPU seconds/queue depth and drops (and the scene
        updates that reused an embedding), per-source device counters."""
        stages = {}
        for stage in self.stages:
            entry = {"processed": stage.processed, "errors": stage.errors, "failed": stage.failed,
                     "cpu_s": round(stage.cpu_s, 4)}
            if isinstance(stage, QueueStage):
                entry["queued"] = len(stage.queue)
                entry["dropped"] = stage.queue.dropped
            if stage is self.scene_stage:
                entry["reused"] = stage.reused  # scene updates that reused the last embedding (a still scene)
            stages[stage.name] = entry
        sources = {s.name: s.stats() for s in (self.video, self.audio) if s is not None}
        return {"events": self.fuser.count, "events_dropped": sum(q.dropped for q in self._queues),
                "events_queued": sum(len(q) for q in self._queues), "stages": stages, "sources": sources}
