"""PNG plots drawn with OpenCV (no plotting library needed): latency CDF and per-stage bars.

* ``latency.png``: the distribution of capture-to-event latency of each configuration as a
  cumulative curve (x: ms, y: share of events), with p50 / p95 marked;
* ``stages.png``: per-stage median latency per configuration as horizontal bars on a
  log10 millisecond axis, with a whisker to p95.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["latency_cdf_png", "stage_bars_png"]

_COLOURS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
            (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23))
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_BLACK, _GREY, _LIGHT = (30, 30, 30), (110, 110, 110), (225, 225, 225)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, colour=_BLACK, thickness: int = 1,
          anchor: str = "left") -> None:
    import cv2

    (w, h), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = org
    if anchor == "right":
        x -= w
    elif anchor == "centre":
        x -= w // 2
    cv2.putText(img, text, (int(x), int(y + h // 2)), _FONT, scale, colour, thickness, cv2.LINE_AA)


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = span / max(1, ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def _legend(img: np.ndarray, names: Sequence[str], x: int, y: int) -> None:
    import cv2

    for i, name in enumerate(names):
        yy = y + 18 * i
        cv2.rectangle(img, (x, yy - 5), (x + 18, yy + 5), _COLOURS[i % len(_COLOURS)], -1)
        _text(img, name, (x + 26, yy))


def latency_cdf_png(series: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Cumulative distribution of latencies (ms) per named series; returns the path written."""
    import cv2

    W, H, left, right, top, bottom = 900, 560, 80, 30, 60, 70
    img = np.full((H, W, 3), 255, np.uint8)
    data = {k: np.sort(np.asarray(v, dtype=np.float64)) for k, v in series.items() if len(v)}
    x_max = max((float(np.percentile(v, 99.5)) for v in data.values()), default=1.0) * 1.1 or 1.0
    step = _nice_step(x_max)
    x_max = math.ceil(x_max / step) * step
    pw, ph = W - left - right, H - top - bottom

    def px(x: float, y: float) -> tuple[int, int]:
        return int(left + min(x, x_max) / x_max * pw), int(top + ph - y * ph)

    for i in range(int(round(x_max / step)) + 1):
        x0, _ = px(i * step, 0)
        cv2.line(img, (x0, top), (x0, top + ph), _LIGHT, 1)
        _text(img, f"{i * step:g}", (x0, top + ph + 14), anchor="centre")
    for share in (0, 0.25, 0.5, 0.75, 0.95, 1.0):
        _, y0 = px(0, share)
        cv2.line(img, (left, y0), (left + pw, y0), _LIGHT, 1)
        _text(img, f"{share * 100:g}%", (left - 8, y0), anchor="right")
    cv2.rectangle(img, (left, top), (left + pw, top + ph), _BLACK, 1)
    for i, (name, values) in enumerate(data.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        shares = np.arange(1, values.size + 1) / values.size
        points = np.array([px(x, y) for x, y in zip(values, shares)], np.int32)
        cv2.polylines(img, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        for q in (50, 95):
            value = float(np.percentile(values, q))
            cv2.circle(img, px(value, q / 100), 4, colour, -1, cv2.LINE_AA)
    _text(img, title or "capture-to-event latency (cumulative share of events)", (W // 2, 24), 0.6, anchor="centre",
          thickness=2)
    _text(img, "latency, ms (dots: p50 and p95)", (left + pw // 2, H - 22), anchor="centre")
    _text(img, "events", (12, top - 20))
    _legend(img, list(data), left + pw - 230, top + ph - 18 * len(data) - 10)
    return _write(img, path)


def stage_bars_png(stages: Mapping[str, Mapping[str, tuple[float, float]]], path: str | Path, title: str = "") -> Path:
    """Per-stage (p50, p95) ms per configuration as grouped horizontal bars on a log axis."""
    import cv2

    configs = list(stages)
    names: list[str] = []
    for rows in stages.values():
        names.extend(n for n in rows if n not in names)
    group = max(1, len(configs)) * 14 + 12
    W, left, right, top, bottom = 900, 130, 30, 60, 60
    H = top + bottom + group * max(1, len(names)) + 18 * len(configs)
    img = np.full((H, W, 3), 255, np.uint8)
    values = [v for rows in stages.values() for p50, p95 in rows.values() for v in (p50, p95) if v and v > 0]
    lo = math.floor(math.log10(min(values))) if values else -2
    hi = math.ceil(math.log10(max(values))) if values else 4
    hi = max(hi, lo + 1)
    pw = W - left - right
    ph = group * max(1, len(names))

    def px(ms: float) -> int:
        return int(left + (math.log10(max(ms, 10 ** lo)) - lo) / (hi - lo) * pw)

    for e in range(lo, hi + 1):
        x0 = px(10 ** e)
        cv2.line(img, (x0, top), (x0, top + ph), _LIGHT, 1)
        _text(img, f"{10 ** e:g}", (x0, top + ph + 14), anchor="centre")
    for gi, name in enumerate(names):
        y0 = top + gi * group + 6
        _text(img, name, (left - 8, y0 + (group - 12) // 2), anchor="right")
        for ci, config in enumerate(configs):
            if name not in stages[config]:
                continue
            p50, p95 = stages[config][name]
            colour = _COLOURS[ci % len(_COLOURS)]
            y = y0 + ci * 14
            cv2.rectangle(img, (left, y), (px(p50), y + 10), colour, -1)
            if p95 and p95 > p50:
                cv2.line(img, (px(p50), y + 5), (px(p95), y + 5), _BLACK, 1)
                cv2.line(img, (px(p95), y + 1), (px(p95), y + 9), _BLACK, 1)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), _BLACK, 1)
    _text(img, title or "per-stage latency (bar: p50, whisker: p95)", (W // 2, 24), 0.6, anchor="centre", thickness=2)
    _text(img, "ms per call (log scale)", (left + pw // 2, top + ph + 36), anchor="centre")
    _legend(img, configs, left, top + ph + 56)
    return _write(img, path)


def _write(img: np.ndarray, path: str | Path) -> Path:
    import cv2

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise OSError(f"cannot write {out}")
    return out
