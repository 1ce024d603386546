"""The benchmark report: JSON on disk and plain-text tables for the terminal.

The JSON (schema :data:`SCHEMA`) carries the machine, package versions, settings, the
replay clip's sha256s, every bundle's file sha256s, one entry per configuration
(measured or skipped with the reason), the peer comparison, the scaling tables and the
plot files. :func:`check_report` validates that shape; the README generator and the
tests read only what it guarantees.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ecmf_edge.errors import InputError

__all__ = ["SCHEMA", "check_report", "end_to_end_rows", "format_tables", "measured", "peer_rows", "print_table", "read_json",
           "stage_rows", "text_table", "write_json", "write_report"]

SCHEMA = "ecmf-edge-bench/1"


def measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The configurations that were measured, in run order."""
    return [c for c in report.get("configurations", []) if c.get("status") == "measured"]


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as indented JSON (non-finite numbers are refused)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write a benchmark script's report as JSON, after its creation time, the machine and the package versions
    (the ones ``ecmf-edge bench`` records); returns the path. Latency summaries in it are :func:`~ecmf_edge.bench.stats.summarize`'s."""
    from datetime import datetime, timezone

    from ecmf_edge.bench.system import machine, versions

    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), **report}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def read_json(path: str | Path) -> dict[str, Any]:
    """Read and check a report.

    Raises:
        InputError: the file is missing, not JSON, or not a benchmark report.
    """
    p = Path(path)
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p} does not exist: run `ecmf-edge bench --out {p.parent}` first") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p} is not readable JSON ({exc}): run `ecmf-edge bench` again") from None
    check_report(report)
    return report


def _numbers(value: Any) -> Iterable[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


def check_report(report: Any) -> None:
    """Raises InputError naming the first problem when ``report`` is not a well-formed benchmark report."""
    def fail(why: str) -> None:
        raise InputError(f"not a well-formed ecmf-edge benchmark report: {why}; run `ecmf-edge bench` again")

    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        fail(f"schema is not {SCHEMA!r}")
    for key in ("created", "machine", "versions", "settings", "clip", "bundles", "configurations"):
        if key not in report:
            fail(f"'{key}' is missing")
    if any(not math.isfinite(v) for v in _numbers(report)):
        fail("a number is not finite")
    for config in report["configurations"]:
        if config.get("status") not in ("measured", "skipped", "failed"):
            fail(f"configuration {config.get('key')!r} has no status")
        if config["status"] != "measured" and not str(config.get("reason") or "").strip():
            fail(f"skipped configuration {config.get('key')!r} carries no reason")
        if config["status"] == "measured":
            e2e = config.get("end_to_end", {}).get("capture_to_event", {})
            if not e2e.get("n") or not all(e2e.get(k, 0) > 0 for k in ("p50_ms", "p95_ms", "p99_ms")):
                fail(f"configuration {config.get('key')!r} has no capture-to-event latencies")
            if config.get("key") not in report["bundles"]:
                fail(f"configuration {config.get('key')!r} names a bundle the report does not list")


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Rows as a plain-text table (first column left-aligned, the others right-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Print dict rows as a table; ``columns`` are (key, header, format spec); missing values show as "-"."""
    def cell(row: dict[str, Any], key: str, spec: str) -> str:
        return format(row[key], spec) if row.get(key) is not None else "-"

    widths = [max(len(h), *(len(cell(r, k, f)) for r in rows)) for k, h, f in columns]
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, ((_, h, _), w) in enumerate(zip(columns, widths))))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        cells = [cell(r, k, f) for k, _, f in columns]
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))


def end_to_end_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the end-to-end table (shared with the README generator)."""
    headers = ["configuration", "p50 ms", "p95 ms", "p99 ms", "p95 spread", "events/s", "dropped frames", "CPU % of 1 core",
               "peak RSS MB"]
    rows = []
    for c in measured(report):
        e = c["end_to_end"]
        lat, spread = e["capture_to_event"], e["capture_to_event_spread"]["p95"]
        frames = e["frames"]
        rows.append([c["key"], _fmt(lat["p50_ms"]), _fmt(lat["p95_ms"]), _fmt(lat["p99_ms"]),
                     f"{_fmt(spread.get('min'))}-{_fmt(spread.get('max'))}", _fmt(e["events_per_s"].get("median")),
                     f"{frames['dropped_at_source'] + frames['dropped_in_face_queue']}/{frames['expected']}",
                     _fmt(e["cpu_percent_of_one_core"].get("median"), ".0f"), _fmt(c.get("peak_rss_mb_stream"), ".0f")])
    return headers, rows


def stage_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Stages x configurations, p50 (p95) ms; a skipped stage shows its reason's first words."""
    configs = measured(report)
    headers = ["stage", "input"] + [c["key"] for c in configs]
    names: list[str] = []
    for c in configs:
        names.extend(n for n in c["stages"] if n not in names)
    rows = []
    for name in names:
        first = next((c["stages"][name] for c in configs if "input" in c["stages"].get(name, {})), {})
        row = [name, str(first.get("input", ""))]
        for c in configs:
            s = c["stages"].get(name, {})
            row.append(f"{_fmt(s['p50_ms'], '.2f')} ({_fmt(s['p95_ms'], '.2f')})" if "p50_ms" in s else "skipped")
        rows.append(row)
    return headers, rows


def cpu_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Stream stages x configurations: CPU seconds per stream second (the share of one core each stage uses)."""
    configs = [c for c in measured(report) if c["end_to_end"].get("cpu_per_stream_s")]
    headers = ["stage thread"] + [c["key"] for c in configs]
    names: list[str] = []
    for c in configs:
        names.extend(n for n in c["end_to_end"]["cpu_per_stream_s"] if n not in names)
    rows = [[name] + [_fmt(c["end_to_end"]["cpu_per_stream_s"].get(name), ".3f") for c in configs] for name in names]
    return headers, rows


def format_tables(report: dict[str, Any]) -> str:
    """Every table of the report as plain text."""
    parts = []
    m = report["machine"]
    parts.append(f"machine: {m.get('cpu')}, {m.get('usable_cores')} usable cores, {m.get('memory_gb')} GB; "
                 f"{m.get('os')}; Python {m.get('python')}")
    parts.append("\nend to end (replay clip at camera rate; latency = capture -> event):")
    parts.append(text_table(*end_to_end_rows(report)))
    headers, rows = cpu_rows(report)
    if rows:
        parts.append("\nCPU per stream second, by stage thread (0.5 = half a core; 'other': decoding, library thread "
                     "pools, the ticker; budget: 0.5 in total):")
        parts.append(text_table(headers, rows))
    parts.append("\nper stage, p50 (p95) ms:")
    parts.append(text_table(*stage_rows(report)))
    skipped = [c for c in report["configurations"] if c["status"] != "measured"]
    if skipped:
        parts.append("\nnot measured:")
        parts.extend(f"  {c['key']}: {c['reason']}" for c in skipped)
    peers = report.get("peers") or {}
    if peers.get("peers") or peers.get("ours"):
        parts.append("\npeers (same faces; agreement = top-1 on the bundle's labels):")
        parts.append(text_table(*peer_rows(report)))
    for p in peers.get("unavailable", []):
        parts.append(f"  not run: {p['name']}: {p['reason']}")
    if peers.get("skipped"):
        parts.append(f"\npeers skipped: {peers['skipped']}")
    streams = report.get("streams") or {}
    if streams.get("rows"):
        parts.append(f"\nstreams at once ({streams.get('config')}; keeps up = {streams.get('criteria')}): "
                     f"this machine holds {streams.get('holds')}")
        rows = [[str(r["streams"]), " ".join(_fmt(s["p95_ms"], ".0f") for s in r["per_stream"]),
                 " ".join(_fmt(s["events_per_s"], ".1f") for s in r["per_stream"]),
                 " ".join(str(s["dropped_frames"]) for s in r["per_stream"]), _fmt(r["cpu_percent_of_one_core"], ".0f"),
                 _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("rss_vs_one"), ".2f"), "yes" if r["keeps_up"] else "no"]
                for r in streams["rows"]]
        parts.append(text_table(["streams", "p95 ms per stream", "events/s per stream", "dropped frames", "CPU % of 1 core",
                                 "peak RSS MB", "RSS vs 1", "keeps up"], rows))
    elif streams.get("skipped") and "not asked" not in streams["skipped"]:
        parts.append(f"\nstreams skipped: {streams['skipped']}")
    scaling = report.get("scaling") or {}
    for name, rows in (scaling.get("tables") or {}).items():
        if isinstance(rows, list) and rows:
            keys = list(rows[0])
            parts.append(f"\nscaling: {name} ({scaling.get('config')})")
            parts.append(text_table(keys, [[_fmt(r.get(k), ".2f") if isinstance(r.get(k), float) else str(r.get(k, "-"))
                                        for k in keys] for r in rows]))
    if scaling.get("skipped"):
        parts.append(f"\nscaling skipped: {scaling['skipped']}")
    return "\n".join(parts)


def peer_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Ours and each peer: per-face and per-frame p50 ms, agreement with each of our configurations."""
    peers = report.get("peers") or {}
    ours = peers.get("ours", {})
    headers = ["model", "per face p50 ms", "per frame p50 ms", "frames with face"] + [f"agree {k}" for k in ours]
    rows = []
    for key, o in ours.items():
        rows.append([f"ecmf-edge {key}", _fmt(o["per_face"].get("p50_ms"), ".3f"), _fmt(o["per_frame"].get("p50_ms"), ".1f"),
                     str(o.get("frames_with_face"))] + ["-" for _ in ours])
    for p in peers.get("peers", []):
        agree = []
        for key in ours:
            a = p["agreement"].get(key, {})
            face, frame = a.get("per_face", {}), a.get("per_frame", {})
            agree.append(f"{_pct(face.get('top1_agreement'))} faces / {_pct(frame.get('top1_agreement'))} frames")
        rows.append([p["name"], _fmt(p["per_face"].get("p50_ms"), ".3f"), _fmt(p["per_frame"].get("p50_ms"), ".1f"),
                     str(p.get("frames_with_face"))] + agree)
    return headers, rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
