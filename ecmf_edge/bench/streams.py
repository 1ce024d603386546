"""How many live streams this machine holds: 1, 2 ... N streams of the replay clip at once in one process.

Every stream plays the replay clip's video and sound at camera pace (``realtime=True``), all from
one :class:`~ecmf_edge.Recognizer` (the models are shared). For each count: per-stream
capture -> event p95, events/s and dropped frames, the process's CPU and peak RSS. A count "keeps up"
when every stream delivers at least 9.5 events/s with p95 at most 100 ms and drops no frame; the
run stops at the first count that does not (it never waits beyond a bounded time per count).
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ecmf_edge.bench.endtoend import RssSampler, run_stream_once
from ecmf_edge.bench.replay import ReplayClip
from ecmf_edge.bench.system import CpuMeter
from ecmf_edge.errors import InputError

__all__ = ["measure_streams", "MAX_STREAMS", "keeps_up"]

# The most streams one run may ask for.
MAX_STREAMS = 16
# What "keeps up" means for every stream of a count.
MIN_EVENTS_PER_S, MAX_P95_MS = 9.5, 100.0


class _Collector:
    """Arrival times and latencies of a stream's periodic events (the closing event after the clip, which waits
    for the last utterance's transcript, is left out as in the end-to-end measurement)."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.latencies: list[float] = []
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        if event.timestamp >= self.limit_s - 1e-6:
            return
        with self.lock:
            self.arrivals.append(time.perf_counter())
            value = event.latency_ms.get("capture_to_event")
            if value is not None:
                self.latencies.append(float(value))


def keeps_up(row: dict[str, Any]) -> bool:
    """Whether every stream of a measured count kept 10 events/s, p95 <= 100 ms and every frame."""
    return all(s["events_per_s"] is not None and s["events_per_s"] >= MIN_EVENTS_PER_S and s["p95_ms"] is not None
               and s["p95_ms"] <= MAX_P95_MS and s["dropped_frames"] == 0 for s in row["per_stream"])


def _run(recognizer: Any, clip: ReplayClip, count: int) -> dict[str, Any]:
    collectors = [_Collector(clip.seconds) for _ in range(count)]
    streams = []
    meter = CpuMeter()
    started = time.perf_counter()
    with RssSampler() as sampler:
        try:
            for k in range(count):
                streams.append(recognizer.stream(video=clip.video, audio=clip.audio, realtime=True,
                                                 on_event=collectors[k], stream_id=f"bench-{k}"))
            for stream in streams:
                stream.start()
            deadline = time.monotonic() + clip.seconds * 2.0 + 10.0  # a machine that falls behind still ends the run
            while not all(s.finished for s in streams) and time.monotonic() < deadline:
                time.sleep(0.25)
        finally:
            for stream in streams:
                stream.close()
    rss = sampler.samples
    wall = time.perf_counter() - started
    cpu = meter.read()
    per_stream = []
    for stream, c in zip(streams, collectors):
        stats = stream.stats()
        video = stats["sources"].get(clip.video.name, {})
        face_drops = stats["stages"].get("face", {}).get("dropped", 0)
        span = c.arrivals[-1] - c.arrivals[0] if len(c.arrivals) > 1 else 0.0
        per_stream.append({
            "stream": stream.stream_id, "events": len(c.arrivals),
            "events_per_s": round((len(c.arrivals) - 1) / span, 2) if span > 0 else None,
            "p50_ms": round(float(np.percentile(c.latencies, 50)), 1) if c.latencies else None,
            "p95_ms": round(float(np.percentile(c.latencies, 95)), 1) if c.latencies else None,
            "dropped_frames": int(video.get("dropped", 0)) + int(face_drops)})
    return {"streams": count, "per_stream": per_stream, "wall_s": round(wall, 2),
            "cpu_percent_of_one_core": cpu["cpu_percent_of_one_core"],
            "peak_rss_mb": round(max(rss), 1) if rss else None}


def measure_streams(recognizer: Any, clip: ReplayClip, max_streams: int) -> dict[str, Any]:
    """Counts 1 .. ``max_streams`` until one does not keep up; ``holds`` is the largest count that did.

    Raises:
        InputError: ``max_streams`` outside 1 .. MAX_STREAMS.
    """
    if isinstance(max_streams, bool) or not isinstance(max_streams, int) or not 1 <= max_streams <= MAX_STREAMS:
        raise InputError(f"streams={max_streams!r} is invalid: use 1 to {MAX_STREAMS}")
    run_stream_once(recognizer, clip, seconds=min(2.0, clip.seconds))  # warm-up: first calls allocate
    rows, holds = [], 0
    for count in range(1, max_streams + 1):
        row = _run(recognizer, clip, count)
        row["keeps_up"] = keeps_up(row)
        rows.append(row)
        if not row["keeps_up"]:
            break
        holds = count
    one = rows[0].get("peak_rss_mb")
    for row in rows:
        row["rss_vs_one"] = round(row["peak_rss_mb"] / one, 2) if one and row.get("peak_rss_mb") else None
    return {"rows": rows, "holds": holds, "asked": max_streams,
            "criteria": f">= {MIN_EVENTS_PER_S} events/s, p95 <= {MAX_P95_MS:g} ms, no dropped frames, every stream"}
