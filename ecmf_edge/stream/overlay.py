"""The overlay drawn by ``ecmf-edge run``: a pure function from (frame, event) to an annotated copy.

It shows every tracked face (box in the colour of its own label, track id, label; the focus
person's box thicker and marked *), the fused label and its confidence, a bar per label, a bar per
modality weight (absent modalities greyed, with the reason), the latest transcript,
and frames per second and capture-to-event latency.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecmf_edge.events import EmotionEvent
from ecmf_edge.labels import LABELS
from ecmf_edge.modalities import MODALITIES

__all__ = ["draw_overlay", "LABEL_COLOURS"]

# BGR colour per default label (others fall back to grey).
LABEL_COLOURS: dict[str, tuple[int, int, int]] = {
    "neutral": (200, 200, 200), "angry": (40, 40, 230), "happy": (60, 200, 60),
    "sad": (200, 120, 40), "worried": (40, 160, 230), "surprise": (200, 60, 200),
}
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255), thick: int = 1) -> None:
    import cv2

    cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, thick, cv2.LINE_AA)


def _fit(text: str, width_px: int, scale: float) -> str:
    """Cut ``text`` (with an ellipsis) so it fits in ``width_px`` at ``scale``."""
    import cv2

    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width_px:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, 1)[0][0] > width_px:
        text = text[:-1]
    return text + "..."


def draw_overlay(frame: np.ndarray, event: EmotionEvent | None, *, fps: float | None = None,
                 labels: Sequence[str] | None = None) -> np.ndarray:
    """Annotated copy of a BGR (or grey) uint8 frame; ``frame`` itself is not modified.

    Raises:
        InputError: the frame is not a uint8 image.
    """
    import cv2

    from ecmf_edge.vision.face_detector import as_bgr

    img = as_bgr(frame).copy()
    h, w = img.shape[:2]
    s = max(0.35, min(h, w) / 480.0)  # scale for fonts and spacing
    line = int(22 * s)
    if event is None:
        _text(img, "waiting for the first event...", (int(10 * s), int(30 * s)), 0.7 * s)
        return img
    drawn = False
    for person in event.people:  # every tracked face: box in its own label's colour, id and label
        focus = person.id == event.focus_id
        x1, y1, x2, y2 = (int(round(v)) for v in person.box)
        colour = LABEL_COLOURS.get(person.label, (0, 255, 255))
        cv2.rectangle(img, (max(x1, 0), max(y1, 0)), (min(x2, w - 1), min(y2, h - 1)), colour,
                      max(1, int((3 if focus else 1.5) * s)))
        tag = f"#{person.id} {person.label} {person.confidence:.2f}" + (" *" if focus else "")
        _text(img, tag, (max(x1, 0), max(int(14 * s), y1 - int(5 * s))), 0.45 * s, colour)
        drawn = drawn or focus
    if event.face_box is not None and not drawn:
        x1, y1, x2, y2 = (int(round(v)) for v in event.face_box)
        colour = LABEL_COLOURS.get(event.label or "", (0, 255, 255))
        cv2.rectangle(img, (max(x1, 0), max(y1, 0)), (min(x2, w - 1), min(y2, h - 1)), colour, max(1, int(2 * s)))
    heading = f"{event.label}  {event.confidence:.2f}" if event.label else "no signal"
    if event.focus_id is not None and len(event.people) > 1:
        heading += f"  (#{event.focus_id})"
    _text(img, heading, (int(10 * s), int(34 * s)), 0.9 * s, LABEL_COLOURS.get(event.label or "", (255, 255, 255)), 2)
    # Right-hand panel: probabilities, then modality weights.
    names = list(labels or event.probabilities.keys() or LABELS)
    panel_w = int(min(0.42 * w, 230 * s))
    x0 = w - panel_w
    rows = len(names) + len(MODALITIES) + 2
    panel_h = min(h, int(rows * line + 12 * s))
    shade = img[0:panel_h, x0:w].astype(np.float32) * 0.35
    img[0:panel_h, x0:w] = shade.astype(np.uint8)
    label_w = int(75 * s)
    bar_x, bar_max = x0 + label_w, panel_w - label_w - int(8 * s)
    y = int(line * 0.9)
    _text(img, "probabilities", (x0 + 4, y), 0.45 * s, (220, 220, 220))
    for name in names:
        y += line
        p = float(event.probabilities.get(name, 0.0))
        _text(img, _fit(name, label_w - 4, 0.42 * s), (x0 + 4, y), 0.42 * s)
        cv2.rectangle(img, (bar_x, y - int(12 * s)), (bar_x + max(1, int(bar_max * p)), y - int(2 * s)),
                      LABEL_COLOURS.get(name, (160, 160, 160)), -1)
    y += line
    _text(img, "modality weights", (x0 + 4, y), 0.45 * s, (220, 220, 220))
    for modality in MODALITIES:
        y += line
        if modality in event.modality_weights:
            weight = float(event.modality_weights[modality])
            _text(img, modality, (x0 + 4, y), 0.42 * s)
            cv2.rectangle(img, (bar_x, y - int(12 * s)), (bar_x + max(1, int(bar_max * weight)), y - int(2 * s)),
                          (255, 170, 60), -1)
        else:
            reason = event.absent.get(modality, "absent")
            _text(img, modality, (x0 + 4, y), 0.42 * s, (120, 120, 120))
            _text(img, _fit(reason, bar_max, 0.33 * s), (bar_x, y - int(2 * s)), 0.33 * s, (150, 150, 150))
    # Bottom lines: transcript, then speed.
    if event.transcript:
        _text(img, _fit(f'"{event.transcript}"', w - int(20 * s), 0.5 * s), (int(10 * s), h - int(36 * s)), 0.5 * s,
              (255, 255, 200))
    latency = event.latency_ms.get("capture_to_event")
    parts = [f"t {event.timestamp:.1f} s"]
    if fps is not None:
        parts.append(f"{fps:.1f} events/s")
    if latency is not None:
        parts.append(f"latency {latency:.0f} ms")
    _text(img, "  ".join(parts), (int(10 * s), h - int(12 * s)), 0.45 * s, (200, 255, 200))
    return img
