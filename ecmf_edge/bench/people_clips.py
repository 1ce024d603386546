"""Clips of several people from real photographs: faces composited over a real scene and moved.

Three looks of the astronaut photograph's head (as taken, mirrored, and in warmer light with more
contrast) are pasted over the coffee photograph, still in a grid (0-8 faces) or moving: two and three
people walking, two crossing (the one in front hides the other for a while), and one leaving the
frame and coming back. Every frame comes with where each person's head is, so tracks can be checked
against the truth: :func:`id_switches` counts how often a person's track id changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ecmf_edge._assets import asset_path

__all__ = ["PeopleClip", "grid_clip", "moving_clip", "SCENARIOS", "id_switches", "person_of"]

SCENARIOS = ("two", "three", "crossing", "leave-return")


@dataclass(frozen=True, eq=False)
class PeopleClip:
    """Frames (BGR uint8) and, per frame, each visible person's head rectangle (x1, y1, x2, y2)."""

    frames: list[np.ndarray]
    heads: list[dict[int, tuple[int, int, int, int]]]
    fps: float


@lru_cache(maxsize=1)
def _heads() -> tuple[np.ndarray, ...]:
    import cv2

    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    head = photo[10:250, 110:430]  # 320x240: head and shoulders
    warm = cv2.convertScaleAbs(head, alpha=1.25, beta=-20)
    warm[..., 2] = cv2.add(warm[..., 2], 25)
    return head, np.ascontiguousarray(head[:, ::-1]), warm


@lru_cache(maxsize=4)
def _scene(width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.imread(str(asset_path("coffee.jpg"))), (width, height), interpolation=cv2.INTER_LINEAR)


def _paste(frame: np.ndarray, head: np.ndarray, x: int, y: int, w: int) -> tuple[int, int, int, int] | None:
    """Paste ``head`` scaled to width ``w`` with its top-left at (x, y), clipped; its visible rectangle."""
    import cv2

    h = int(round(w * head.shape[0] / head.shape[1]))
    tile = cv2.resize(head, (w, h), interpolation=cv2.INTER_AREA)
    fh, fw = frame.shape[:2]
    x1, y1, x2, y2 = max(0, x), max(0, y), min(fw, x + w), min(fh, y + h)
    if x2 <= x1 or y2 <= y1:
        return None
    frame[y1:y2, x1:x2] = tile[y1 - y:y2 - y, x1 - x:x2 - x]
    return x1, y1, x2, y2


def grid_clip(faces: int, frames: int = 30, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> PeopleClip:
    """``faces`` (0-8) people standing still in a grid (up to 2x2 cells of 320x240, 4x2 beyond), each
    swaying a few pixels so that tracking has something to follow."""
    if not 0 <= faces <= 8:
        raise ValueError("faces must be 0..8")
    w, h = size
    cols, rows = (2, 2) if faces <= 4 else (4, 2)
    cw, ch = w // cols, h // rows
    out, heads = [], []
    looks = _heads()
    for k in range(frames):
        frame = _scene(w, h).copy()
        where = {}
        for i in range(faces):
            r, c = divmod(i, cols)
            dx = int(round(4 * np.sin(2 * np.pi * (k / 30.0 + i / 7.0))))
            rect = _paste(frame, looks[i % 3], c * cw + dx, r * ch + (ch - int(cw * 0.75)) // 2, cw)
            if rect is not None:
                where[i] = rect
        out.append(frame)
        heads.append(where)
    return PeopleClip(out, heads, fps)


def moving_clip(scenario: str, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> PeopleClip:
    """A clip of people moving (see :data:`SCENARIOS`); about 2-3 s at 30 fps."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}")
    w, h = size
    tile_w = 200
    looks = _heads()
    frames = 90
    out, heads = [], []
    for k in range(frames):
        frame = _scene(w, h).copy()
        where: dict[int, tuple[int, int, int, int]] = {}
        u = k / (frames - 1)
        if scenario == "two":
            spots = {0: (int(20 + 140 * u), 40), 1: (int(420 - 120 * u), 260)}
        elif scenario == "three":
            spots = {0: (int(10 + 100 * u), 20), 1: (int(420 - 80 * u), 30), 2: (int(220 + 60 * np.sin(3 * u)), 300)}
        elif scenario == "crossing":
            # 0 walks right, 1 walks left in front of it at nearly the same height.
            spots = {0: (int(-20 + 460 * u), 140), 1: (int(440 - 460 * u), 160)}
        else:  # leave-return: 1 steps out of view for 12 frames (0.4 s) and comes back where it left
            spots = {0: (40, 120)}
            if not 40 <= k < 52:
                spots[1] = (int(360 + 60 * u), 150)
        order = sorted(spots)  # later ids are drawn in front
        for i in order:
            x, y = spots[i]
            rect = _paste(frame, looks[i % 3], x, y, tile_w)
            if rect is not None:
                where[i] = rect
        # A person more than half hidden by someone in front is not visible.
        for i in order:
            for j in order:
                if j > i and i in where and j in where and _cover(where[i], where[j]) > 0.5:
                    del where[i]
                    break
        out.append(frame)
        heads.append(where)
    return PeopleClip(out, heads, fps)


def _cover(back: tuple[int, ...], front: tuple[int, ...]) -> float:
    iw = max(0, min(back[2], front[2]) - max(back[0], front[0]))
    ih = max(0, min(back[3], front[3]) - max(back[1], front[1]))
    area = (back[2] - back[0]) * (back[3] - back[1])
    return iw * ih / area if area else 1.0


def person_of(box: tuple[float, ...], heads: dict[int, tuple[int, int, int, int]]) -> int | None:
    """The person whose head rectangle holds the centre of a face ``box`` (the front one when several do)."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    inside = [i for i, (x1, y1, x2, y2) in heads.items() if x1 <= cx <= x2 and y1 <= cy <= y2]
    return max(inside) if inside else None


def id_switches(tracks: list[dict[int, tuple[float, ...]]], heads: list[dict[int, tuple[int, int, int, int]]]) -> int:
    """How many times a person's track id changed (MOT's IDSW): ``tracks`` is, per frame, {track id: box}."""
    last: dict[int, int] = {}
    switches = 0
    for boxes, truth in zip(tracks, heads):
        for tid, box in boxes.items():
            person = person_of(box, truth)
            if person is None:
                continue
            if person in last and last[person] != tid:
                switches += 1
            last[person] = tid
    return switches
