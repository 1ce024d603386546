"""End to end: the replay clip through the real stream loop at camera rate.

A :class:`~ecmf_edge.Recognizer` streams the clip's video and audio files with
``realtime=True`` (they behave like a 30 fps camera and a microphone: frames that are
not read in time are skipped, audio is lost beyond the ring buffer). Each event's
``latency_ms["capture_to_event"]`` and per-stage timings are collected; the stream's
``stats()`` give the dropped frames and queue drops; CPU time and RSS are read for the
process. One untimed warm-up stream runs first.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ecmf_edge.bench.replay import ReplayClip
from ecmf_edge.bench.stats import spread, summarize
from ecmf_edge.bench.system import CpuMeter, current_rss_mb

__all__ = ["run_stream_once", "measure_end_to_end", "RssSampler"]

logger = logging.getLogger("ecmf_edge")

# Per-stage keys an event's latency_ms may carry (besides capture_to_event).
_EVENT_STAGES = ("face_detect", "face_encode", "frame_encoder", "vad", "audio_encoder", "prosody", "asr", "llm",
                 "text_encoder", "fusion")


class RssSampler:
    """Samples this process's RSS every ``period`` seconds on a daemon thread."""

    def __init__(self, period: float = 0.25) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), name="bench-rss", daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            value = current_rss_mb()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1.0)


def run_stream_once(recognizer: Any, clip: ReplayClip, seconds: float | None = None) -> dict[str, Any]:
    """Stream the clip once in real time; returns raw per-event figures and the stream's counters."""
    limit = clip.seconds if seconds is None else min(seconds, clip.seconds)
    latencies: list[float] = []
    stage_ms: dict[str, list[float]] = {k: [] for k in _EVENT_STAGES}
    present: dict[str, int] = {}
    labelled = 0
    meter = CpuMeter()
    with RssSampler() as rss:
        stream = recognizer.stream(video=clip.video, audio=clip.audio, realtime=True)
        started = time.perf_counter()
        arrivals: list[float] = []  # wall time of each periodic event (the closing event after the clip is left out)
        labels: list[tuple[float, str | None]] = []  # (stream time, label) of each event, for comparing runs
        events = 0
        try:
            for event in stream:
                if event.timestamp < limit - 1e-6:
                    arrivals.append(time.perf_counter())
                events += 1
                labelled += event.label is not None
                labels.append((round(float(event.timestamp), 3), event.label))
                for modality in event.present:
                    present[modality] = present.get(modality, 0) + 1
                value = event.latency_ms.get("capture_to_event")
                if value is not None:
                    latencies.append(float(value))
                for key in _EVENT_STAGES:
                    if key in event.latency_ms:
                        stage_ms[key].append(float(event.latency_ms[key]))
                if event.timestamp >= limit:
                    break
        finally:
            stream.close()
            stats = stream.stats()
    cpu = meter.read()
    wall = time.perf_counter() - started
    video = stats["sources"].get(clip.video.name, {})
    audio = stats["sources"].get(clip.audio.name, {})
    queues = {name: entry.get("dropped", 0) for name, entry in stats["stages"].items() if "dropped" in entry}
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else None
    return {
        "events": events, "labelled_events": labelled, "wall_s": round(wall, 3),
        "events_per_s": round((len(arrivals) - 1) / span, 2) if span else None,
        "latencies_ms": latencies, "stage_ms": stage_ms, "present": present,
        "frames_read": video.get("frames"), "frames_dropped_at_source": video.get("dropped", 0),
        "queue_drops": queues, "audio_samples_dropped": audio.get("dropped_samples", 0),
        "events_dropped": stats.get("events_dropped", 0),
        "stage_errors": {name: entry.get("errors", 0) for name, entry in stats["stages"].items()},
        "cpu": cpu, "rss_mb_samples": rss.samples,
        "stage_cpu_s": {name: entry.get("cpu_s", 0.0) for name, entry in stats["stages"].items()},
        "stream_s": float(limit), "labels": labels,
    }


def _cpu_shares(runs: list[dict[str, Any]]) -> dict[str, float]:
    stream_s = sum(run["stream_s"] for run in runs) or 1.0
    shares = {name: round(sum(run["stage_cpu_s"].get(name, 0.0) for run in runs) / stream_s, 4)
              for name in runs[0]["stage_cpu_s"]}
    total = sum(run["cpu"]["cpu_percent_of_one_core"] * run["wall_s"] / 100.0 for run in runs) / stream_s
    shares["other"] = round(max(0.0, total - sum(shares.values())), 4)
    shares["total"] = round(total, 4)
    return shares


def measure_end_to_end(recognizer: Any, clip: ReplayClip, repeats: int = 3, warmup_s: float = 2.0) -> dict[str, Any]:
    """Capture-to-event latency (p50/p95/p99 over every event of every repeat, and the spread of each
    percentile over the repeats), sustained events/s, dropped frames, CPU use and RSS.

    The warm-up stream (``warmup_s`` seconds of the clip) is run first and left out.
    """
    if warmup_s > 0:
        run_stream_once(recognizer, clip, seconds=warmup_s)
    runs = [run_stream_once(recognizer, clip) for _ in range(max(1, repeats))]
    every = [v for run in runs for v in run["latencies_ms"]]
    per_run = [summarize(run["latencies_ms"]) for run in runs]
    frames_read = sum(run["frames_read"] or 0 for run in runs)
    source_drops = sum(run["frames_dropped_at_source"] for run in runs)
    face_drops = sum(run["queue_drops"].get("face", 0) for run in runs)
    expected_frames = int(round(clip.seconds * clip.fps)) * len(runs)
    rss = [v for run in runs for v in run["rss_mb_samples"]]
    stage_in_loop = {key: summarize([v for run in runs for v in run["stage_ms"][key]]) for key in _EVENT_STAGES}
    return {
        "repeats": len(runs), "clip_seconds": clip.seconds, "warmup_s": warmup_s,
        "capture_to_event": summarize(every),
        "capture_to_event_spread": {p: spread(r.get(f"{p}_ms") for r in per_run) for p in ("p50", "p95", "p99")},
        "events": sum(run["events"] for run in runs),
        "events_per_s": spread(run["events_per_s"] for run in runs),
        "labelled_share": round(sum(r["labelled_events"] for r in runs) / max(1, sum(r["events"] for r in runs)), 3),
        "frames": {"expected": expected_frames, "read": frames_read, "dropped_at_source": source_drops,
                   "dropped_in_face_queue": face_drops,
                   "dropped_share": round((source_drops + face_drops) / max(1, expected_frames), 4)},
        "queue_drops": {k: sum(run["queue_drops"].get(k, 0) for run in runs) for k in runs[0]["queue_drops"]},
        "audio_samples_dropped": sum(run["audio_samples_dropped"] for run in runs),
        "events_dropped": sum(run["events_dropped"] for run in runs),
        "stage_errors": {k: sum(run["stage_errors"].get(k, 0) for run in runs) for k in runs[0]["stage_errors"]},
        "cpu_percent_of_one_core": spread(run["cpu"]["cpu_percent_of_one_core"] for run in runs),
        "cpu_percent_of_machine": spread(run["cpu"]["cpu_percent_of_machine"] for run in runs),
        "rss_mb": {"median": round(float(np.median(rss)), 1), "max": round(float(max(rss)), 1)} if rss else {},
        "stage_in_loop_ms": {k: v for k, v in stage_in_loop.items() if v.get("n")},
        # CPU seconds per stream second, per stage thread (a core's share: 0.5 = half a core); the rest of the
        # process's CPU (decoding threads of the sources, ONNX Runtime/CTranslate2/llama.cpp pools, the ticker) is "other".
        "cpu_per_stream_s": _cpu_shares(runs),
        "latency_samples_ms": [round(v, 2) for v in every],
        "labels_per_run": [run["labels"] for run in runs],
    }
