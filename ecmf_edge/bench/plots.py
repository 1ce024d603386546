"""The benchmark's pictures, drawn with matplotlib off-screen:

* ``latency.png``: the cumulative distribution of capture-to-event latency per configuration on a
  log millisecond axis (the part that matters, 10-200 ms, is readable next to seconds-long tails),
  with the 100 ms budget and each configuration's p50 / p95 marked;
* ``stages.png``: per-stage median latency per configuration as horizontal bars on a log axis,
  with a whisker to p95;
* ``streams.png``: streams at once vs each stream's worst p95 latency and events/s, with the
  budgets, and the machine's CPU;
* ``cpu.png``: where one stream's CPU goes: CPU seconds per stream second by stage, stacked per
  configuration, against the half-core budget.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ecmf_edge.batch.plot import require_matplotlib

__all__ = ["latency_cdf_png", "stage_bars_png", "cpu_share_png", "streams_png", "LATENCY_BUDGET_MS", "CPU_BUDGET"]

# Capture -> event budget of the live loop, ms.
LATENCY_BUDGET_MS = 100.0
# CPU budget of one live stream: CPU seconds per stream second (half of one core).
CPU_BUDGET = 0.5


def _save(fig, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def latency_cdf_png(series: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Cumulative distribution of latencies (ms) per named series, log x axis; returns the path written.

    Raises:
        DependencyError: matplotlib is not installed.
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    data = {k: np.sort(np.asarray(v, dtype=np.float64)) for k, v in series.items() if len(v)}
    for name, values in data.items():
        values = np.maximum(values, 0.1)
        shares = np.arange(1, values.size + 1) / values.size
        (line,) = ax.step(values, shares, where="post", label=name, linewidth=1.8)
        for q, marker in ((50, "o"), (95, "^")):
            x = float(np.percentile(values, q))
            ax.plot([x], [q / 100.0], marker, color=line.get_color(), markersize=6)
            ax.annotate(f"p{q} {x:.0f}", (x, q / 100.0), textcoords="offset points", xytext=(6, -10 if q == 50 else 4),
                        fontsize=8, color=line.get_color())
    ax.axvline(LATENCY_BUDGET_MS, color="0.35", linestyle="--", linewidth=1)
    ax.text(LATENCY_BUDGET_MS, 0.02, f" budget {LATENCY_BUDGET_MS:.0f} ms", fontsize=8, color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel("capture → event latency, ms (log scale)")
    ax.set_ylabel("share of events")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    if data:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "capture → event latency")
    fig.tight_layout()
    return _save(fig, path)


def stage_bars_png(stages: Mapping[str, Mapping[str, tuple[float, float]]], path: str | Path, title: str = "") -> Path:
    """Per-stage (p50, p95) ms per configuration as horizontal bars on a log axis; returns the path written.

    Raises:
        DependencyError: matplotlib is not installed.
    """
    plt = require_matplotlib()
    names: list[str] = []
    for per in stages.values():
        names.extend(n for n in per if n not in names)
    configs = list(stages)
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + 0.42 * max(1, len(names)) * max(1, len(configs)) ** 0.5))
    height = 0.8 / max(1, len(configs))
    for i, config in enumerate(configs):
        ys, p50, err = [], [], []
        for j, name in enumerate(names):
            if name in stages[config]:
                median, p95 = stages[config][name]
                ys.append(j + i * height)
                p50.append(max(median, 1e-3))
                err.append(max(p95 - median, 0.0))
        ax.barh(ys, p50, height=height, xerr=[np.zeros(len(err)), err], label=config, capsize=2)
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per call: median, whisker to p95 (log scale)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    if configs:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "per-stage latency")
    fig.tight_layout()
    return _save(fig, path)


def cpu_share_png(shares: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """CPU seconds per stream second by stage (stacked), one bar per configuration, with the half-core budget.

    ``shares`` maps a configuration to {stage: CPU seconds per stream second} (a "total" key is ignored).

    Raises:
        DependencyError: matplotlib is not installed.
    """
    plt = require_matplotlib()
    configs = list(shares)
    stages: list[str] = []
    for per in shares.values():
        stages.extend(n for n in per if n != "total" and n not in stages)
    fig, ax = plt.subplots(figsize=(9.5, 2.2 + 0.55 * max(1, len(configs))))
    left = np.zeros(len(configs))
    for stage in stages:
        values = np.array([shares[c].get(stage, 0.0) for c in configs])
        ax.barh(configs, values, left=left, label=stage)
        left += values
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.2f}", va="center", fontsize=8)
    ax.axvline(CPU_BUDGET, color="0.35", linestyle="--", linewidth=1)
    ax.text(CPU_BUDGET, 0.02, f" budget {CPU_BUDGET:g}", fontsize=8, color="0.3", transform=ax.get_xaxis_transform())
    ax.set_xlabel("CPU seconds per stream second (1 = one whole core)")
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)
    if stages:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="stage thread", title_fontsize=8)
    ax.set_title(title or "CPU of one stream, by stage")
    fig.tight_layout()
    return _save(fig, path)


def streams_png(result: Mapping, path: str | Path, title: str = "") -> Path:
    """Streams at once (x) vs the worst stream's p95 latency and events/s, and the process's CPU.

    ``result`` is what :func:`ecmf_edge.bench.streams.measure_streams` returns.

    Raises:
        DependencyError: matplotlib is not installed.
    """
    plt = require_matplotlib()
    rows = list(result["rows"])
    counts = [r["streams"] for r in rows]
    p95 = [max((s["p95_ms"] or float("nan")) for s in r["per_stream"]) for r in rows]
    rate = [min((s["events_per_s"] or 0.0) for s in r["per_stream"]) for r in rows]
    cpu = [r["cpu_percent_of_one_core"] / 100.0 for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.0), sharex=True)
    top.plot(counts, p95, "o-", label="worst stream's p95 latency")
    top.axhline(LATENCY_BUDGET_MS, color="0.35", linestyle="--", linewidth=1, label=f"budget {LATENCY_BUDGET_MS:.0f} ms")
    top.set_yscale("log")
    top.set_ylabel("capture → event p95, ms")
    top.legend(fontsize=8)
    top.grid(True, which="both", alpha=0.3)
    bottom.plot(counts, rate, "s-", color="tab:green", label="slowest stream's events/s")
    bottom.axhline(10.0, color="tab:green", linestyle=":", linewidth=1)
    bottom.set_ylabel("events/s")
    bottom.set_ylim(0, 11.5)
    twin = bottom.twinx()
    twin.plot(counts, cpu, "^-", color="tab:red", label="process CPU (cores)")
    twin.set_ylabel("CPU, cores")
    twin.set_ylim(0, max(cpu + [1.0]) * 1.15)
    bottom.set_xlabel("live streams at once")
    bottom.set_xticks(counts)
    lines = bottom.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    bottom.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower left")
    bottom.grid(True, alpha=0.3)
    top.set_title(title or f"streams per machine: holds {result.get('holds', 0)} ({result.get('criteria', '')})",
                  fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
