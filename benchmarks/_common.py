"""Timing, memory and report helpers shared by the benchmark scripts."""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# Make `python benchmarks/<script>.py` work from a source checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def summarize(times_ms) -> dict[str, float]:
    """Median, p95, min, spread and fps of a list of latencies in ms."""
    t = np.asarray(times_ms, dtype=np.float64)
    median = float(np.median(t))
    return {
        "median_ms": round(median, 3),
        "p95_ms": round(float(np.percentile(t, 95)), 3),
        "min_ms": round(float(t.min()), 3),
        "std_ms": round(float(t.std()), 3),
        "fps": round(1000.0 / median, 1) if median > 0 else None,
        "repeats": int(t.size),
    }


def measure(fn: Callable[[], object], repeats: int, warmup: int) -> dict[str, float]:
    """Time ``fn`` with perf_counter after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return summarize(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0), 1)


def machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def write_report(path: str | Path, report: dict) -> Path:
    """Add the creation time and machine, write JSON, return the path."""
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), **report}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as a table; columns are (key, header, format spec)."""
    widths = [max(len(h), *(len(format(r.get(k, ""), f) if r.get(k) is not None else "-") for r in rows)) for k, h, f in columns]
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, ((_, h, _), w) in enumerate(zip(columns, widths))))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        cells = [format(r.get(k), f) if r.get(k) is not None else "-" for k, _, f in columns]
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
