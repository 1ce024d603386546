"""Face crops for the expression models: landmark alignment and a box-crop fallback.

:func:`align_face` maps a face's five landmarks onto a canonical five-point template
with a similarity transform (rotation, uniform scale, translation; Umeyama's least
squares solution) and returns a ``size x size`` BGR crop. The template is the widely
used ArcFace 112x112 layout, scaled to ``size``; ``padding`` zooms out around it.
When the landmarks are unusable (not finite, collapsed, or far outside the box),
:func:`crop_box` is used instead: a square crop around the box with a margin.

Large faces are first shrunk with area interpolation, so small crops do not alias.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.vision.face_detector import Face, as_bgr

__all__ = ["align_face", "crop_box", "face_template", "similarity_transform", "TEMPLATE_112"]

logger = logging.getLogger("ecmf_edge")

# Left eye, right eye, nose tip, mouth left, mouth right in a 112x112 crop (ArcFace / InsightFace).
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 4096:
        raise InputError(f"crop size={size!r} is invalid: use an integer between 8 and 4096 (e.g. 64)")
    return int(size)


def face_template(size: int, padding: float = 0.0) -> np.ndarray:
    """The five template points for a ``size x size`` crop; ``padding`` > 0 shows more around the face.

    Raises:
        InputError: size outside 8..4096 or padding outside -0.5..2.
    """
    size = _check_size(size)
    if not -0.5 <= float(padding) <= 2.0:
        raise InputError(f"padding={padding!r} is invalid: use a value between -0.5 and 2 (0 = ArcFace crop)")
    unit = (TEMPLATE_112 / 112.0 - 0.5) / (1.0 + float(padding)) + 0.5
    return unit * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (no reflection) mapping ``src`` points onto ``dst`` (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / var_s) if var_s > 0 else 0.0
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warpAffine to size x size with zero borders; shrinks the source region first when zooming out."""
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.75:
        h, w = image.shape[:2]
        inv = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64) @ inv[:, :2].T + inv[:, 2]
        x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(axis=0))
        x1, y1 = min(w, int(np.ceil(corners[:, 0].max())) + 2), min(h, int(np.ceil(corners[:, 1].max())) + 2)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((size, size, 3), dtype=np.uint8)
        rw, rh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
        small = cv2.resize(image[y0:y1, x0:x1], (rw, rh), interpolation=cv2.INTER_AREA)
        kx, ky = rw / (x1 - x0), rh / (y1 - y0)
        # pixel centres: source = (small + 0.5) / k - 0.5 + offset
        back = np.array([[1 / kx, 0, 0.5 / kx - 0.5 + x0], [0, 1 / ky, 0.5 / ky - 0.5 + y0], [0, 0, 1]])
        matrix = (np.vstack([matrix, [0, 0, 1]]) @ back)[:2]
        image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _box_of(box: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"box {box!r} is invalid: give four numbers x1, y1, x2, y2") from None
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise InputError(f"box {box!r} is invalid: need finite x1 < x2 and y1 < y2")
    return x1, y1, x2, y2


def crop_box(image: np.ndarray, box: Sequence[float], size: int = 64, margin: float = 0.2) -> np.ndarray:
    """Square ``size x size`` BGR crop centred on ``box``, its side the box's longer side times ``1 + margin``.

    Parts outside the image are black.

    Raises:
        InputError: bad image (see :func:`~ecmf_edge.vision.face_detector.as_bgr`), box, size or margin.
    """
    image = as_bgr(image)
    size = _check_size(size)
    x1, y1, x2, y2 = _box_of(box)
    if not -0.5 < float(margin) <= 3.0:
        raise InputError(f"margin={margin!r} is invalid: use a value between -0.5 and 3 (e.g. 0.2)")
    side = max(x2 - x1, y2 - y1) * (1.0 + float(margin))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    k = size / side
    # edge coordinates -> pixel centres: dst + 0.5 = k * (src + 0.5 - (c - side / 2))
    matrix = np.array([[k, 0, k * (0.5 - cx + side / 2) - 0.5], [0, k, k * (0.5 - cy + side / 2) - 0.5]])
    return _warp(image, matrix, size)


def _landmarks_usable(points: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        return False
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    eye_distance = float(np.linalg.norm(points[1] - points[0]))
    inside = (points[:, 0] > x1 - 0.5 * side) & (points[:, 0] < x2 + 0.5 * side)
    inside &= (points[:, 1] > y1 - 0.5 * side) & (points[:, 1] < y2 + 0.5 * side)
    return bool(inside.all()) and eye_distance >= max(2.0, 0.1 * side)


def align_face(image_bgr: np.ndarray, face: Face, size: int = 64, padding: float = 0.0) -> np.ndarray:
    """``size x size`` BGR crop with the face's landmarks moved onto :func:`face_template`.

    Falls back to :func:`crop_box` (margin 0.2) when the landmarks are unusable.

    Raises:
        InputError: bad image, face box, size or padding.
    """
    image = as_bgr(image_bgr)
    template = face_template(size, padding)
    box = _box_of(face.box)
    points = np.asarray(face.landmarks, dtype=np.float64)
    if _landmarks_usable(points, box):
        matrix = similarity_transform(points, template)
        if np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix[:, :2])) > 1e-8:
            return _warp(image, matrix, int(size))
    logger.debug("face landmarks unusable for alignment; cropping the box instead")
    return crop_box(image, box, size, margin=0.2)
