"""Summaries of repeated timings: percentiles and spread, after untimed warm-up calls."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["summarize", "time_calls", "measure", "spread"]


def summarize(times_ms: Iterable[float]) -> dict[str, float | int]:
    """p50/p95/p99, mean, std, min, max (ms) and the count of a list of latencies.

    An empty list gives ``{"n": 0}``.
    """
    t = np.asarray([float(v) for v in times_ms if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if t.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(t, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(t.mean()), 3), "std_ms": round(float(t.std()), 3),
            "min_ms": round(float(t.min()), 3), "max_ms": round(float(t.max()), 3), "n": int(t.size)}


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` (perf_counter), after ``warmup`` untimed calls."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, float | int]:
    """:func:`summarize` of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    return summarize(time_calls(fn, repeats, warmup))


def spread(values: Iterable[float]) -> dict[str, float | int]:
    """Median, min, max and std of one figure over repeated runs (e.g. p95 latency per repeat)."""
    v = np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"median": round(float(np.median(v)), 3), "min": round(float(v.min()), 3),
            "max": round(float(v.max()), 3), "std": round(float(v.std()), 3), "n": int(v.size)}
