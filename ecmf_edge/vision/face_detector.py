"""Face detection with five landmarks: the MTCNN cascade on ONNX Runtime and numpy.

The three graphs come from :func:`ecmf_edge.build.mtcnn.export_face_detector`:
P-Net proposes candidate windows over an image pyramid, R-Net rejects most of them on
24x24 crops, O-Net scores 48x48 crops and places the five landmarks. Every stage
refines the boxes with its regression output and removes duplicates with NMS.

For speed on small devices the frame is first shrunk so its longer side is at most
``max_side`` pixels (default :data:`DEFAULT_MAX_SIDE`); boxes and landmarks are mapped
back to the input's pixels. ``min_face_size`` is measured in that working image, so
with ``max_side=320`` a 640x480 frame and ``min_face_size=20`` finds faces of about
40 px and larger in the frame.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.events import Box, as_box
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["Face", "FaceDetector", "as_bgr", "nms", "DEFAULT_MAX_SIDE", "MODEL_KEY"]

logger = logging.getLogger("ecmf_edge")

MODEL_KEY = "face_detector"
STAGES = ("pnet", "rnet", "onet")
# Longer side of the working image; None keeps the input size.
DEFAULT_MAX_SIDE = 320
# Most crops sent to R-Net / O-Net in one session call.
_CHUNK = 512
# A frame whose grey levels span less than this has no structure (black, blank): no faces.
_FLAT_RANGE = 6
_ACCEPTED = "uint8 arrays of shape (H, W, 3) BGR, (H, W) or (H, W, 1) grey, or (H, W, 4) BGRA"
_DEFAULT_IO = {
    "pnet": {"reg": "reg", "prob": "prob"},
    "rnet": {"reg": "reg", "prob": "prob"},
    "onet": {"reg": "reg", "landmarks": "landmarks", "prob": "prob"},
}

# (x1, y1, x2, y2): left, top, right, bottom edges in pixels.
@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in pixels of the image given to :meth:`FaceDetector.detect`."""

    # (x1, y1, x2, y2): left, top, right, bottom edges; may extend past the image edges.
    box: Box
    # O-Net face probability, 0..1.
    score: float
    # (5, 2) float32 x, y: left eye, right eye, nose, mouth left, mouth right ("left" as seen in the image).
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0


def as_bgr(image: Any) -> np.ndarray:
    """A BGR uint8 (H, W, 3) view or copy of a BGR, grey or BGRA uint8 image.

    Raises:
        InputError: not a numpy array, not uint8, empty, or of another shape.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}: pass {_ACCEPTED}")
    if image.dtype != np.uint8:
        raise InputError(f"image dtype {image.dtype} is not supported: pass {_ACCEPTED} (convert with .astype(np.uint8))")
    if image.size == 0:
        raise InputError(f"image of shape {image.shape} is empty: pass {_ACCEPTED}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)
    raise InputError(f"image of shape {image.shape} is not supported: pass {_ACCEPTED}")


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``boxes`` are (N, 4) inclusive pixel boxes; ``method`` is "union" (IoU) or "min"
    (intersection over the smaller area).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * denom]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares around their centres (MTCNN's ``rerec``)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply R-/O-Net box regression (offsets relative to the inclusive box size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return out


def _normalise(batch_rgb: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> float32 NCHW, (x - 127.5) / 128."""
    x = (batch_rgb.astype(np.float32) - 127.5) * np.float32(0.0078125)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """size x size crops of 1-based inclusive boxes, zero padded outside the image; (crops, valid mask)."""
    h, w = rgb.shape[:2]
    ints = np.trunc(boxes[:, :4]).astype(np.int64)
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    valid = np.zeros(len(boxes), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(ints):
        x0, y0 = x1 - 1, y1 - 1  # 0-based start, x2/y2 are the exclusive ends
        if x2 <= x0 or y2 <= y0 or x0 >= w or y0 >= h or x2 <= 0 or y2 <= 0:
            continue
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x2, w), min(y2, h)
        region = rgb[sy0:sy1, sx0:sx1]
        if (sx0, sy0, sx1, sy1) != (x0, y0, x2, y2):
            region = cv2.copyMakeBorder(region, sy0 - y0, y2 - sy1, sx0 - x0, x2 - sx1, cv2.BORDER_CONSTANT, value=0)
        out[k] = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)
        valid[k] = True
    return out, valid


class FaceDetector:
    """MTCNN face detector on three ONNX Runtime sessions.

    Raises (constructor):
        ModelError: a stage session is missing or lacks the expected outputs.
        InputError: an option is out of range.
    """

    def __init__(
        self,
        sessions: Mapping[str, Any],
        spec: Mapping[str, Any],
        *,
        max_side: int | None = DEFAULT_MAX_SIDE,
        min_face_size: int | None = None,
        thresholds: tuple[float, float, float] | None = None,
    ) -> None:
        missing = [s for s in STAGES if s not in sessions]
        if missing:
            raise ModelError(f"face detector needs sessions for {', '.join(STAGES)} (missing: {', '.join(missing)}): "
                             f"run `{REBUILD_COMMAND}`")
        attrs = dict(spec.get("attributes", {}))
        io = {**_DEFAULT_IO, **attrs.get("io", {})}
        self._sessions = {s: sessions[s] for s in STAGES}
        self._inputs: dict[str, str] = {}
        self._outputs: dict[str, list[str]] = {}
        for stage in STAGES:
            session = self._sessions[stage]
            names = [io[stage][k] for k in _DEFAULT_IO[stage]]
            have = {o.name for o in session.get_outputs()}
            if not set(names) <= have:
                raise ModelError(f"face detector {stage} graph lacks outputs {sorted(set(names) - have)}: "
                                 f"run `{REBUILD_COMMAND}`")
            self._inputs[stage] = session.get_inputs()[0].name
            self._outputs[stage] = names
        if max_side is not None and (not isinstance(max_side, int) or max_side < 24):
            raise InputError(f"max_side={max_side!r} is invalid: use an integer >= 24 (e.g. 320 or 480) or None")
        self.max_side = max_side
        self.min_face_size = int(min_face_size if min_face_size is not None else attrs.get("min_face_size", 20))
        if self.min_face_size < 12:
            raise InputError(f"min_face_size={self.min_face_size} is too small: use 12 or more (P-Net's window)")
        self.thresholds = tuple(float(t) for t in (thresholds or attrs.get("thresholds", (0.6, 0.7, 0.7))))
        if len(self.thresholds) != 3 or not all(0.0 <= t < 1.0 for t in self.thresholds):
            raise InputError(f"thresholds={thresholds!r} are invalid: give three probabilities in [0, 1)")
        self.factor = float(attrs.get("pyramid_factor", 0.709))
        nms_t = {"pnet_scale": 0.5, "pnet_all": 0.7, "rnet": 0.7, "onet": 0.7, **attrs.get("nms_thresholds", {})}
        self.nms_thresholds = {k: float(v) for k, v in nms_t.items()}
        self.stride = int(attrs.get("pnet_stride", 2))
        self.cell = int(attrs.get("pnet_cell_size", 12))

    @classmethod
    def from_bundle(cls, bundle: Any, **options: Any) -> FaceDetector:
        """Detector over the bundle's ``face_detector`` graphs; options as for the constructor.

        Raises:
            ModelError: the bundle lacks the model or one of its files, or a file is corrupt.
        """
        spec = bundle.spec(MODEL_KEY)
        files = dict(spec.get("attributes", {}).get("stage_files", {}))
        if not files:
            extra = list(spec.get("extra_files", []))
            if len(extra) < 2:
                raise ModelError(f"face_detector in the bundle manifest lists no R-Net/O-Net files: run `{REBUILD_COMMAND}`")
            files = {"pnet": spec["file"], "rnet": extra[0], "onet": extra[1]}
        return cls({stage: bundle.session(files[stage]) for stage in STAGES}, spec, **options)

    def _run(self, stage: str, x: np.ndarray) -> list[np.ndarray]:
        session, feed, names = self._sessions[stage], self._inputs[stage], self._outputs[stage]
        parts = [session.run(names, {feed: x[i:i + _CHUNK]}) for i in range(0, len(x), _CHUNK)]
        return [np.concatenate(outs, axis=0) for outs in zip(*parts)]

    def _pnet(self, rgb: np.ndarray) -> np.ndarray:
        """Stage 1: candidate squares (N, 5) = 1-based x1, y1, x2, y2, score."""
        h, w = rgb.shape[:2]
        scale = 12.0 / self.min_face_size
        shortest = min(h, w) * scale
        found = []
        while shortest >= 12:
            size = (int(w * scale + 1), int(h * scale + 1))
            resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            reg, prob = self._sessions["pnet"].run(self._outputs["pnet"], {self._inputs["pnet"]: _normalise(resized[None])})
            ys, xs = np.nonzero(prob[0, 1] >= self.thresholds[0])
            if len(ys):
                cells = np.stack([xs, ys], axis=1).astype(np.float32)
                q1 = np.floor((self.stride * cells + 1) / scale)
                q2 = np.floor((self.stride * cells + self.cell) / scale)
                boxes = np.hstack([q1, q2, prob[0, 1, ys, xs][:, None], reg[0][:, ys, xs].T])
                found.append(boxes[nms(boxes[:, :4], boxes[:, 4], self.nms_thresholds["pnet_scale"])])
            scale *= self.factor
            shortest *= self.factor
        if not found:
            return np.zeros((0, 5), dtype=np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], self.nms_thresholds["pnet_all"])]
        w_b, h_b = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        refined = boxes[:, :4] + boxes[:, 5:9] * np.stack([w_b, h_b, w_b, h_b], axis=1)
        return _square(np.hstack([refined, boxes[:, 4:5]]))

    def _rnet(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: keep candidates R-Net scores as faces, refine and square them."""
        crops, valid = _crops(rgb, boxes, 24)
        boxes, crops = boxes[valid], crops[valid]
        if not len(boxes):
            return boxes
        reg, prob = self._run("rnet", _normalise(crops))
        keep = prob[:, 1] > self.thresholds[1]
        boxes, reg = boxes[keep].copy(), reg[keep]
        boxes[:, 4] = prob[keep, 1]
        pick = nms(boxes[:, :4], boxes[:, 4], self.nms_thresholds["rnet"])
        return _square(_regress(boxes[pick], reg[pick]))

    def _onet(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 3: final boxes (1-based inclusive) and 0-based landmark pixels."""
        crops, valid = _crops(rgb, boxes, 48)
        boxes, crops = boxes[valid], crops[valid]
        if not len(boxes):
            return boxes, np.zeros((0, 5, 2), dtype=np.float32)
        reg, marks, prob = self._run("onet", _normalise(crops))
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, marks = boxes[keep].copy(), reg[keep], marks[keep]
        boxes[:, 4] = prob[keep, 1]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = w * marks[:, :5] + boxes[:, 0:1] - 1
        ys = h * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([xs, ys], axis=2)
        boxes = _regress(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], self.nms_thresholds["onet"], method="min")
        return boxes[pick], points[pick]

    def _working(self, bgr: np.ndarray) -> np.ndarray:
        """The frame shrunk so its longer side is at most ``max_side`` (the image the networks read)."""
        h, w = bgr.shape[:2]
        if self.max_side is not None and max(h, w) > self.max_side:
            ratio = self.max_side / max(h, w)
            return cv2.resize(bgr, (max(1, round(w * ratio)), max(1, round(h * ratio))), interpolation=cv2.INTER_AREA)
        return bgr

    @staticmethod
    def _to_face(box: np.ndarray, marks: np.ndarray, sx: float, sy: float) -> Face:
        # 1-based inclusive pixels -> edge coordinates; landmark pixel centres scale about +0.5.
        edges = ((box[0] - 1) * sx, (box[1] - 1) * sy, box[2] * sx, box[3] * sy)
        lm = np.empty((5, 2), dtype=np.float32)
        lm[:, 0] = (marks[:, 0] + 0.5) * sx - 0.5
        lm[:, 1] = (marks[:, 1] + 0.5) * sy - 0.5
        lm.setflags(write=False)
        return Face(box=as_box(edges), score=float(box[4]), landmarks=lm)

    def refine(self, image_bgr: np.ndarray, boxes: Any) -> list[Face | None]:
        """Re-place known faces cheaply: O-Net alone on each (x1, y1, x2, y2) box (e.g. a tracker's prediction).

        Returns, per box, the refined face with fresh landmarks, or None where O-Net no longer sees a face
        there (the face left, turned away or was covered). About one O-Net crop per box instead of the
        whole P-Net/R-Net cascade.

        Raises:
            InputError: the image is not an accepted uint8 array.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            return []
        bgr = as_bgr(image_bgr)
        # Crops come straight from the full frame (no pyramid, no whole-frame resize): edge coordinates ->
        # 1-based inclusive pixels, squared as O-Net expects.
        cand = np.zeros((len(boxes), 5))
        cand[:, 0], cand[:, 1] = boxes[:, 0] + 1, boxes[:, 1] + 1
        cand[:, 2], cand[:, 3] = boxes[:, 2], boxes[:, 3]
        cand = _square(cand)
        crops, valid = _crops(bgr, cand, 48)
        crops = crops[..., ::-1]  # BGR -> RGB
        out: list[Face | None] = [None] * len(boxes)
        index = np.flatnonzero(valid)
        if not len(index):
            return out
        reg, marks, prob = self._run("onet", _normalise(crops[index]))
        for j, i in enumerate(index):
            if prob[j, 1] <= self.thresholds[2]:
                continue
            box = cand[i].copy()
            box[4] = prob[j, 1]
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            points = np.stack([w * marks[j, :5] + box[0] - 1, h * marks[j, 5:10] + box[1] - 1], axis=1)
            out[i] = self._to_face(_regress(box[None], reg[j:j + 1])[0], points, 1.0, 1.0)
        return out

    def detect(self, image_bgr: np.ndarray, max_faces: int | None = None) -> list[Face]:
        """Faces in a BGR (or grey, or BGRA) uint8 frame, largest first.

        Raises:
            InputError: the image is not a uint8 (H, W, 3) / (H, W) / (H, W, 4) array, or max_faces < 1.
        """
        if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, (int, np.integer))
                                      or max_faces < 1):
            raise InputError(f"max_faces={max_faces!r} is invalid: use a positive integer or None")
        bgr = as_bgr(image_bgr)
        h, w = bgr.shape[:2]
        work = self._working(bgr)
        if min(work.shape[:2]) < 12 or int(work.max()) - int(work.min()) < _FLAT_RANGE:
            return []
        rgb = cv2.cvtColor(work, cv2.COLOR_BGR2RGB)
        boxes = self._pnet(rgb)
        if len(boxes):
            boxes = self._rnet(rgb, boxes)
        if not len(boxes):
            return []
        boxes, points = self._onet(rgb, boxes)
        sx, sy = w / work.shape[1], h / work.shape[0]
        faces = [self._to_face(box, marks, sx, sy) for box, marks in zip(boxes, points)]
        faces.sort(key=lambda f: f.area, reverse=True)
        logger.debug("face detector: %d face(s) in %dx%d frame (working %dx%d)", len(faces), w, h, work.shape[1], work.shape[0])
        return faces[:max_faces] if max_faces is not None else faces
