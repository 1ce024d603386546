"""Runtime of the global frame branch: whole video frames -> 1280-d scene embeddings.

The model is the ``frame_encoder`` of a bundle (EfficientNet-Lite0, ImageNet weights,
exported by ``ecmf_edge.build.efficientnet_lite``). Frames are prepared as its manifest
entry says (RGB, whole frame resized to 224x224, (x/255 - mean) / std); torch is not imported.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ecmf_edge.errors import ModelError
from ecmf_edge.modalities import REBUILD_COMMAND
from ecmf_edge.vision.face_encoder import as_image_list

__all__ = ["FrameEncoder"]

logger = logging.getLogger("ecmf_edge")

# Frames per ONNX Runtime call.
_CHUNK = 16


class FrameEncoder:
    """Scene embeddings (and ImageNet logits) of whole frames, with ONNX Runtime."""

    def __init__(self, session: Any, spec: dict[str, Any]) -> None:
        """Wrap an ONNX Runtime session of ``frame_encoder.onnx`` and its manifest entry.

        Raises:
            ModelError: the session's inputs/outputs or the manifest entry do not match a frame encoder.
        """
        self._session = session
        inputs = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]
        if inputs != ["image"] or "features" not in self._outputs:
            raise ModelError(f"frame encoder model has inputs {inputs} and outputs {self._outputs}, expected input "
                             f"'image' and output 'features': run `{REBUILD_COMMAND}`")
        try:
            pre = spec["preprocessing"]
            self.feature_dim = int(spec["attributes"]["feature_dim"])
            height, width = (int(v) for v in pre["size"])
            self._size = (width, height)  # cv2 order
            self._scale = float(pre.get("scale", 1.0 / 255.0))
            self._mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, 1, -1)
            self._std = np.asarray(pre["std"], dtype=np.float32).reshape(1, 1, -1)
            self._rgb = str(pre.get("colour", "RGB")).upper() == "RGB"
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"frame_encoder manifest entry is incomplete ({exc!r}): run `{REBUILD_COMMAND}`") from None
        if self._mean.size not in (1, 3) or self._std.shape != self._mean.shape or np.any(self._std == 0):
            raise ModelError(f"frame_encoder manifest entry has a bad mean/std: run `{REBUILD_COMMAND}`")

    @classmethod
    def from_bundle(cls, bundle: Any) -> FrameEncoder:
        """The frame encoder of a loaded bundle (``bundle.spec('frame_encoder')``, ``bundle.session(file)``).

        Raises:
            ModelError: the bundle has no usable frame encoder.
        """
        spec = bundle.spec("frame_encoder")
        return cls(bundle.session(spec["file"]), spec)

    def preprocess(self, frames_bgr: Any) -> np.ndarray:
        """Frames in any accepted form -> (N, 3, H, W) float32 model input.

        Raises:
            InputError: see :func:`ecmf_edge.vision.face_encoder.as_image_list`.
        """
        import cv2

        frames = as_image_list(frames_bgr, "frame")
        width, height = self._size
        batch = np.empty((len(frames), 3, height, width), dtype=np.float32)
        for i, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            shrink = frame.shape[0] >= height and frame.shape[1] >= width
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB if self._rgb else cv2.COLOR_GRAY2BGR)
            elif frame.shape[2] == 4:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if self._rgb else cv2.COLOR_BGRA2BGR)
            elif self._rgb:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            scaled = frame.astype(np.float32) * self._scale if frame.dtype == np.uint8 else frame
            batch[i] = ((scaled - self._mean) / self._std).transpose(2, 0, 1)
        return batch

    def predict(self, frames_bgr: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``(features (N, 1280), logits (N, 1000) or None)`` of frames; see :meth:`encode` for the input.

        Raises:
            InputError: empty input, a wrong shape or dtype, NaN/inf, or float values outside [0, 1].
            ModelError: ONNX Runtime fails on the model.
        """
        batch = self.preprocess(frames_bgr)
        features, logits = [], []
        for start in range(0, len(batch), _CHUNK):
            try:
                outs = dict(zip(self._outputs, self._session.run(None, {"image": batch[start:start + _CHUNK]})))
            except Exception as exc:  # onnxruntime's own exception types
                raise ModelError(f"frame encoder failed in ONNX Runtime ({str(exc).splitlines()[0][:200]}): "
                                 f"run `{REBUILD_COMMAND}`") from None
            features.append(outs["features"])
            if "logits" in outs:
                logits.append(outs["logits"])
        return (np.concatenate(features).astype(np.float32, copy=False),
                np.concatenate(logits).astype(np.float32, copy=False) if logits else None)

    def encode(self, frames_bgr: Any) -> np.ndarray:
        """(N, 1280) float32 scene embeddings of whole frames.

        ``frames_bgr`` is one frame or several: BGR (H, W, 3), BGRA (H, W, 4) or grey (H, W),
        uint8 or float in [0, 1], any size (the whole frame is resized to 224x224, no crop);
        a batch array (N, H, W, 3) or a list of frames.

        Raises:
            InputError: empty input, a wrong shape or dtype, NaN/inf, or float values outside [0, 1].
            ModelError: ONNX Runtime fails on the model.
        """
        return self.predict(frames_bgr)[0]
