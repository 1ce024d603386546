"""Soak test: a long replayed stream at camera rate; memory, latency and queues sampled every interval.

The real camera and microphone sources run over the fakes of ``ecmf_edge.capture.fake``:
a 640x480 scene with the astronaut photograph panning at 30 fps, and the shipped
English speech looped, so the whole live path (watchdogs, ring buffer, stage threads,
fusion head, smoother) runs as it does on devices. Every ``interval`` seconds a window
is recorded: events and their rate, capture-to-event latency median and p95, current
and peak RSS, and the deepest stage/event queue seen.

Pass criteria (after ``warmup`` seconds):

* RSS growth ≤ 5 %: the last window's RSS against the first window after warm-up;
* no latency drift: the median p95 of the last third of the windows exceeds that of the
  first third by at most max(20 ms, 25 %).

    python benchmarks/soak.py [--minutes 10] [--interval 10] [--warmup 60] [--bundle default]
                              [--precision fp32] [--fps 30] [--text] [--json bench-out/soak.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS

# Allowed RSS growth after warm-up, percent; allowed p95 drift, ms and relative.
MAX_RSS_GROWTH_PCT = 5.0
MAX_DRIFT_MS = 20.0
MAX_DRIFT_REL = 0.25


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (peak RSS where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def replay_frames(count: int = 60) -> list[np.ndarray]:
    """640x480 BGR frames: the astronaut photograph panning left and right (never two identical in a row)."""
    import cv2

    from ecmf_edge._assets import asset_path

    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    frames = []
    for i in range(count):
        x = 20 + int(round(50 * (1 - abs(1 - 2 * i / count))))  # 20 .. 70 .. 20 pixels
        canvas = np.full((480, 640, 3), 90, np.uint8)
        canvas[:, x:x + 512] = photo[:480]
        frames.append(canvas)
    return frames


def open_stream(recognizer, fps: float = 30.0, audio: bool = True):
    """A live stream from a fake camera at ``fps`` and (optionally) a fake microphone looping speech."""
    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.capture import CameraSource, FakeCamera, FakeMicrophone, MicrophoneSource

    camera = CameraSource(0, opener=FakeCamera(replay_frames(), fps=fps))
    mic = MicrophoneSource("default", backend=FakeMicrophone(load_audio(asset_path("speech_en.wav")), 16000, loop=True)) if audio else None
    return recognizer.stream(camera=camera, microphone=mic)


@dataclass
class Window:
    """What one sampling interval saw."""

    # Stream seconds at the end of the window.
    end_s: float
    events: int
    fps: float
    p50_ms: float | None
    p95_ms: float | None
    rss_mb: float
    peak_rss_mb: float
    # Deepest stage queue and event queue seen at any event of the window.
    max_stage_queue: int
    max_event_queue: int
    # Items dropped so far by full stage queues and by the event queue.
    dropped: int

    def as_row(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Sampler:
    """Collects per-event latency and queue depths, and closes a :class:`Window` every ``interval_s``."""

    interval_s: float
    started: float = field(default_factory=time.monotonic)
    windows: list[Window] = field(default_factory=list)
    _latencies: list[float] = field(default_factory=list)
    _events: int = 0
    _peak: float = 0.0
    _stage_q: int = 0
    _event_q: int = 0

    def add(self, event, stats: dict) -> None:
        """Record one event with the stream's :meth:`~ecmf_edge.stream.pipeline.EmotionStream.stats`."""
        self._events += 1
        latency = event.latency_ms.get("capture_to_event")
        if latency is not None:
            self._latencies.append(float(latency))
        self._peak = max(self._peak, current_rss_mb())
        self._stage_q = max([self._stage_q] + [s.get("queued", 0) for s in stats["stages"].values()])
        self._event_q = max(self._event_q, stats.get("events_queued", 0))
        elapsed = time.monotonic() - self.started
        if elapsed >= (len(self.windows) + 1) * self.interval_s:
            self._close(elapsed, stats)

    def _close(self, elapsed: float, stats: dict) -> None:
        span = elapsed - (self.windows[-1].end_s if self.windows else 0.0)
        lat = np.asarray(self._latencies) if self._latencies else None
        dropped = sum(s.get("dropped", 0) for s in stats["stages"].values()) + stats.get("events_dropped", 0)
        rss = current_rss_mb()
        self.windows.append(Window(
            end_s=round(elapsed, 1), events=self._events, fps=round(self._events / max(span, 1e-9), 2),
            p50_ms=round(float(np.median(lat)), 1) if lat is not None else None,
            p95_ms=round(float(np.percentile(lat, 95)), 1) if lat is not None else None,
            rss_mb=rss, peak_rss_mb=max(self._peak, rss), max_stage_queue=self._stage_q, max_event_queue=self._event_q,
            dropped=int(dropped)))
        self._latencies, self._events, self._peak, self._stage_q, self._event_q = [], 0, 0.0, 0, 0


def verdict(windows: list[Window], warmup_s: float) -> dict:
    """RSS growth and latency drift after warm-up, and whether they are within the limits."""
    steady = [w for w in windows if w.end_s > warmup_s + 1e-6]
    if len(steady) < 2:
        return {"pass": False, "reason": f"only {len(steady)} window(s) after the {warmup_s:g} s warm-up: run longer"}
    growth = 100.0 * (steady[-1].rss_mb - steady[0].rss_mb) / steady[0].rss_mb
    third = max(1, len(steady) // 3)
    first = float(np.median([w.p95_ms for w in steady[:third] if w.p95_ms is not None] or [np.nan]))
    last = float(np.median([w.p95_ms for w in steady[-third:] if w.p95_ms is not None] or [np.nan]))
    drift = last - first
    allowed = max(MAX_DRIFT_MS, MAX_DRIFT_REL * first)
    reasons = []
    if growth > MAX_RSS_GROWTH_PCT:
        reasons.append(f"RSS grew {growth:.1f} % (limit {MAX_RSS_GROWTH_PCT:g} %)")
    if not np.isfinite(drift):
        reasons.append("no latency figures (no events with a present modality)")
    elif drift > allowed:
        reasons.append(f"p95 latency drifted by {drift:.0f} ms (limit {allowed:.0f} ms)")
    min_fps = min(w.fps for w in steady)
    return {"pass": not reasons, "reason": "; ".join(reasons) or None, "rss_growth_pct": round(growth, 2),
            "rss_start_mb": steady[0].rss_mb, "rss_end_mb": steady[-1].rss_mb, "p95_first_ms": round(first, 1),
            "p95_last_ms": round(last, 1), "p95_drift_ms": round(drift, 1), "min_fps": min_fps,
            "peak_rss_mb": max(w.peak_rss_mb for w in windows)}


def run_soak(recognizer, duration_s: float, interval_s: float = 10.0, warmup_s: float = 60.0, fps: float = 30.0,
             audio: bool = True, on_window=None) -> dict:
    """Stream for ``duration_s`` seconds and return the windows, the stream's counters and the verdict."""
    sampler = Sampler(interval_s)
    stream = open_stream(recognizer, fps=fps, audio=audio)
    reported = 0
    try:
        sampler.started = time.monotonic()
        for event in stream:
            sampler.add(event, stream.stats())
            if on_window is not None and len(sampler.windows) > reported:
                reported = len(sampler.windows)
                on_window(sampler.windows[-1])
            if time.monotonic() - sampler.started >= duration_s:
                break
    finally:
        stream.close()
    stats = stream.stats()
    return {"duration_s": duration_s, "interval_s": interval_s, "warmup_s": warmup_s, "fps": fps, "audio": audio,
            "windows": [w.as_row() for w in sampler.windows], "stats": stats, **verdict(sampler.windows, warmup_s)}


COLUMNS = [("end_s", "t (s)", ".0f"), ("events", "events", "d"), ("fps", "events/s", ".1f"), ("p50_ms", "p50 ms", ".0f"),
           ("p95_ms", "p95 ms", ".0f"), ("rss_mb", "RSS MiB", ".0f"), ("peak_rss_mb", "peak RSS MiB", ".0f"),
           ("max_stage_queue", "stage q", "d"), ("max_event_queue", "event q", "d"), ("dropped", "dropped", "d")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="stream length (default 10)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per sample window (default 10)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the verdict (default 60)")
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="inference backend (default auto, as ecmf-edge run)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate (default 30)")
    parser.add_argument("--no-audio", action="store_true", help="camera only")
    parser.add_argument("--text", action="store_true", help="also run speech recognition (no LLM)")
    parser.add_argument("--json", default="bench-out/soak.json", help="report path")
    args = parser.parse_args(argv)

    from ecmf_edge import Recognizer

    with Recognizer(bundle=args.bundle, backend=args.backend, precision=args.precision, text=args.text, use_llm=False) as rec:
        print(f"soak: {args.minutes:g} min at {args.fps:g} fps, windows of {args.interval:g} s, warm-up {args.warmup:g} s",
              file=sys.stderr, flush=True)
        report = run_soak(rec, args.minutes * 60.0, args.interval, args.warmup, args.fps, audio=not args.no_audio,
                          on_window=lambda w: print(f"  {w.end_s:6.0f} s  {w.fps:5.1f} ev/s  p95 {w.p95_ms} ms  "
                                                    f"RSS {w.rss_mb:.0f} MiB", file=sys.stderr, flush=True))
    print_table(report["windows"], COLUMNS)
    print(f"\nRSS {report.get('rss_start_mb')} -> {report.get('rss_end_mb')} MiB ({report.get('rss_growth_pct')} %), "
          f"p95 {report.get('p95_first_ms')} -> {report.get('p95_last_ms')} ms: {'PASS' if report['pass'] else 'FAIL'}"
          + (f" ({report['reason']})" if report.get("reason") else ""))
    out = write_report(args.json, {"benchmark": "soak", "bundle": args.bundle, "backend": args.backend, "precision": args.precision,
                                   "text": args.text, **report})
    print(f"report: {out}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
