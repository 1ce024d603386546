"""Runtime of the local face branch: face crops -> emotion features and FER2013 probabilities.

The model is the ``face_encoder`` of a bundle (the fine-tuned face branch, or fer's pretrained
mini-Xception, exported by ``ecmf_edge.build.face_encoder``). Its manifest entry says how crops
are prepared (``preprocessing``: grey, its input size, (x/255 - 0.5) / 0.5) and what the outputs mean
(``attributes``: class labels, feature size); this module follows it and does not import torch.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["FaceEncoder", "FaceOutput", "as_image_list"]

logger = logging.getLogger("ecmf_edge")

# Faces per ONNX Runtime call; bounds memory for long lists of crops.
_CHUNK = 64

_SHAPES = "(H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA, or a batch (N, H, W[, 1|3|4]) or a list of those"


@dataclass(frozen=True)
class FaceOutput:
    """What :meth:`FaceEncoder.encode` returns for N face crops."""

    # (N, feature_dim) float32 embedding (global average of the last residual module).
    features: np.ndarray
    # (N, 7) float32 class probabilities, rows sum to 1, columns in the order of ``labels``.
    probs: np.ndarray
    # Class names of the columns of ``probs`` (FER2013 order).
    labels: tuple[str, ...]
    # (N, 7) float32 logits (log-probabilities up to a constant), or None if the model has no such output.
    logits: np.ndarray | None = None

    def top(self) -> list[str]:
        """The most probable label of each face."""
        return [self.labels[i] for i in np.argmax(self.probs, axis=1)]


def _check_pixels(image: np.ndarray, what: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind != "f":
        raise InputError(f"{what} has dtype {image.dtype}: pass uint8 (0..255) or float in [0, 1]")
    if not np.all(np.isfinite(image)):
        raise InputError(f"{what} contains NaN or infinite values: pass finite pixels (uint8 or float in [0, 1])")
    if image.size and (float(image.min()) < -1e-3 or float(image.max()) > 1.0 + 1e-3):
        raise InputError(f"{what} is float outside [0, 1] (range {float(image.min()):.3g}..{float(image.max()):.3g}): "
                         "scale it to [0, 1] or pass uint8")
    return image.astype(np.float32, copy=False)


def _check_one(image: Any, what: str) -> np.ndarray:
    image = np.asarray(image)
    ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if not ok:
        raise InputError(f"{what} has shape {image.shape}: expected {_SHAPES}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {image.shape}): pass a crop of at least 1x1 pixels")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return _check_pixels(image, what)


def as_image_list(images: Any, what: str = "image") -> list[np.ndarray]:
    """Split the accepted input forms into a list of validated (H, W), (H, W, 3) or (H, W, 4) arrays.

    A 2-D array is one grey image; a 3-D array whose last axis is at most 4 is one image
    (1, 3 or 4 channels; 2 is rejected), any other 3-D array a batch of grey images
    (N, H, W) with W > 4; a 4-D array is a batch (N, H, W, 1|3|4).
    uint8 arrays keep their dtype, float arrays become float32.

    Raises:
        InputError: empty input, a wrong shape or dtype, NaN/inf, or float values outside [0, 1].
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[2] <= 4):
            items: Sequence[Any] = [images]
        elif images.ndim in (3, 4):
            items = list(images)
        else:
            raise InputError(f"{what} array has shape {images.shape}: expected {_SHAPES}")
    elif isinstance(images, (list, tuple)):
        items = images
    else:
        raise InputError(f"{what} must be a numpy array or a list of arrays, not {type(images).__name__}: "
                         f"expected {_SHAPES}")
    if len(items) == 0:
        raise InputError(f"no {what} given (empty input): pass at least one {what}, {_SHAPES}")
    return [_check_one(item, f"{what} {i}") for i, item in enumerate(items)]


class FaceEncoder:
    """Emotion features and FER2013 probabilities of face crops, with ONNX Runtime."""

    def __init__(self, session: Any, spec: dict[str, Any]) -> None:
        """Wrap an ONNX Runtime session of ``face_encoder.onnx`` and its manifest entry.

        Raises:
            ModelError: the session's inputs/outputs or the manifest entry do not match a face encoder.
        """
        self._session = session
        inputs = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]
        if inputs != ["face"] or not {"features", "probs"} <= set(self._outputs):
            raise ModelError(f"face encoder model has inputs {inputs} and outputs {self._outputs}, expected input "
                             f"'face' and outputs 'features', 'probs': run `{REBUILD_COMMAND}`")
        try:
            pre = spec["preprocessing"]
            attrs = spec["attributes"]
            self.labels: tuple[str, ...] = tuple(attrs["labels"])
            self.feature_dim = int(attrs["feature_dim"])
            height, width = (int(v) for v in pre["size"])
            self._size = (width, height)  # cv2 order
            self._scale = float(pre.get("scale", 1.0 / 255.0))
            self._mean = float(np.asarray(pre["mean"], dtype=np.float64).reshape(-1)[0])
            self._std = float(np.asarray(pre["std"], dtype=np.float64).reshape(-1)[0])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"face_encoder manifest entry is incomplete ({exc!r}): run `{REBUILD_COMMAND}`") from None
        from ecmf_edge.vision.resting_face import RestingFaceStats

        # The training population's token statistics for per-person resting-face calibration (None: none shipped).
        self.resting_face = RestingFaceStats.from_spec(spec.get("attributes", {}))
        if pre.get("colour", "grey") != "grey" or self._std == 0:
            raise ModelError(f"face_encoder manifest entry expects non-grey or unscaled input: run `{REBUILD_COMMAND}`")

    @classmethod
    def from_bundle(cls, bundle: Any) -> FaceEncoder:
        """The face encoder of a loaded bundle (``bundle.spec('face_encoder')``, ``bundle.session(file)``).

        Raises:
            ModelError: the bundle has no usable face encoder.
        """
        spec = bundle.spec("face_encoder")
        return cls(bundle.session(spec["file"]), spec)

    @property
    def input_size(self) -> int:
        """Side of the square face crop the model reads (aligned crops are made at this size)."""
        return int(self._size[1])

    def preprocess(self, faces: Any) -> np.ndarray:
        """Face crops in any accepted form -> (N, 1, H, W) float32 model input.

        Raises:
            InputError: see :func:`as_image_list`.
        """
        import cv2

        crops = as_image_list(faces, "face crop")
        height, width = self._size[1], self._size[0]
        batch = np.empty((len(crops), 1, height, width), dtype=np.float32)
        for i, crop in enumerate(crops):
            if crop.ndim == 3:
                crop = cv2.cvtColor(np.ascontiguousarray(crop),
                                    cv2.COLOR_BGR2GRAY if crop.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
            crop = cv2.resize(np.ascontiguousarray(crop), self._size, interpolation=cv2.INTER_LINEAR)
            scaled = crop.astype(np.float32) * self._scale if crop.dtype == np.uint8 else crop
            batch[i, 0] = (scaled - self._mean) / self._std
        return batch

    def encode(self, faces: Any) -> FaceOutput:
        """Features and emotion probabilities of face crops.

        ``faces`` is one crop or several: grey (H, W), BGR (H, W, 3) or BGRA (H, W, 4), uint8 or
        float in [0, 1], of any size (each is resized to the model's input size); a batch array
        (N, H, W[, C]) or a list of crops of different sizes.

        Raises:
            InputError: empty input, a wrong shape or dtype, NaN/inf, or float values outside [0, 1].
            ModelError: ONNX Runtime fails on the model.
        """
        batch = self.preprocess(faces)
        results: dict[str, list[np.ndarray]] = {name: [] for name in self._outputs}
        for start in range(0, len(batch), _CHUNK):
            try:
                outs = self._session.run(None, {"face": batch[start:start + _CHUNK]})
            except Exception as exc:  # onnxruntime's own exception types
                raise ModelError(f"face encoder failed in ONNX Runtime ({str(exc).splitlines()[0][:200]}): "
                                 f"run `{REBUILD_COMMAND}`") from None
            for name, value in zip(self._outputs, outs):
                results[name].append(value)
        merged = {name: np.concatenate(values).astype(np.float32, copy=False) for name, values in results.items()}
        return FaceOutput(features=merged["features"], probs=merged["probs"], labels=self.labels,
                          logits=merged.get("logits"))
