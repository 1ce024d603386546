"""What ``ecmf-edge run`` shows: its windows (one per stream, checked before any model loads, opened at the
frame's size fitted to the screen), the console line per event, and the run's latency and event-rate
statistics (the rate is the overlay's status figure). The overlay itself is :mod:`ecmf_edge.stream.overlay`.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from ecmf_edge.errors import DependencyError, DeviceError

__all__ = ["format_event_line", "LatencyStats", "WINDOW", "check_gui", "window_size", "Viewer"]


def format_event_line(event: Any) -> str:
    """One console line per event: time, label, confidence, modalities, latency, transcript."""
    label = f"{event.label:<9} {event.confidence:4.2f}" if event.label else "-         -   "
    mods = ",".join(event.present) or "none"
    latency = event.latency_ms.get("capture_to_event")
    text = f'  "{event.transcript}"' if event.transcript else ""
    lat = f"{latency:6.0f} ms" if latency is not None else "     - ms"
    people = ""
    if len(event.people) > 1:  # one face: the line already says it
        people = "  people " + " ".join(f"#{p.id}{'*' if p.id == event.focus_id else ''}={p.label}" for p in event.people)
    return f"{event.timestamp:8.2f}s  {label}  [{mods}]  {lat}{people}{text}"


class LatencyStats:
    """Capture-to-event latency percentiles and the event rate of a run."""

    # Seconds over which the live rate (the window's status line) is measured.
    RATE_WINDOW_S = 2.0

    def __init__(self) -> None:
        from collections import deque

        self.latencies: list[float] = []
        self.events = 0
        self.last_timestamp = 0.0
        self.started = time.monotonic()
        self._recent: dict[str, deque] = {}

    def add(self, event: Any) -> None:
        from collections import deque

        self.events += 1
        self.last_timestamp = float(event.timestamp)
        now = time.monotonic()
        recent = self._recent.setdefault(str(getattr(event, "stream", "")), deque())
        recent.append(now)
        while recent and now - recent[0] > self.RATE_WINDOW_S:
            recent.popleft()
        value = event.latency_ms.get("capture_to_event")
        if value is not None:
            self.latencies.append(float(value))

    def rate(self, stream: str | None = "") -> float:
        """Events per second of ``stream`` over the last :attr:`RATE_WINDOW_S` seconds (not since start-up, which
        includes loading the models)."""
        recent = self._recent.get(str(stream))
        if not recent or len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def summary(self) -> str:
        import numpy as np

        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = f"{self.events} events in {elapsed:.1f} s ({self.events / elapsed:.1f}/s)"
        if self.latencies:
            p50, p95 = np.percentile(self.latencies, [50, 95])
            text += f"; capture-to-event latency p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        return text


WINDOW = "ecmf-edge"


def has_display() -> bool:
    """Whether a window can be opened here: always on Windows and macOS; on other systems only with an
    X11 or Wayland display (OpenCV's Qt build aborts the whole process without one)."""
    import os

    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def check_gui() -> None:
    """Open the window, before any model is loaded.

    Raises:
        DeviceError: no display (e.g. a shell over SSH).
        DependencyError: this OpenCV build cannot open windows.
    """
    if not has_display():
        raise DeviceError("no display to open a window on (DISPLAY/WAYLAND_DISPLAY not set, e.g. over SSH): use "
                          "--headless or --json for console output, or `ecmf-edge serve` to watch in a browser")
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise DependencyError("this OpenCV build has no GUI (opencv-python-headless): use --headless or --json, or "
                              "`pip install opencv-python`") from None


def screen_size() -> tuple[int, int] | None:
    """(width, height) of the screen in pixels, or None when it cannot be read (Tk not installed)."""
    try:
        import tkinter

        root = tkinter.Tk()
        root.withdraw()
        size = int(root.winfo_screenwidth()), int(root.winfo_screenheight())
        root.destroy()
        return size
    except Exception:  # no Tk, or Tk cannot reach the display: keep the frame's own size
        return None


def window_size(frame_w: int, frame_h: int, screen: tuple[int, int] | None, margin: float = 0.9) -> tuple[int, int]:
    """The window's size: the frame's own size, scaled down (keeping its aspect) to fit ``margin`` of the screen."""
    if screen is None:
        return frame_w, frame_h
    scale = min(1.0, margin * screen[0] / frame_w, margin * screen[1] / frame_h)
    return max(1, int(round(frame_w * scale))), max(1, int(round(frame_h * scale)))


class Viewer:
    """The windows of a run: one per stream name, each sized once, at its first frame, to that frame's size
    fitted to the screen."""

    def __init__(self) -> None:
        self._sized: set[str] = set()

    def show(self, name: str, image) -> bool:
        """Show ``image`` in window ``name``; False once the viewer pressed Esc or q."""
        import cv2

        if name not in self._sized:  # open at the frame's size (fitted to the screen)
            self._sized.add(name)
            cv2.namedWindow(name, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(name, *window_size(image.shape[1], image.shape[0], screen_size()))
        cv2.imshow(name, image)
        return cv2.waitKey(1) & 0xFF not in (27, ord("q"))

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()
