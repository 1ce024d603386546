"""The face branch's networks, in torch: fer's FER2013 mini-Xception and the choice of backbone.

The mini-Xception's source is a Keras 2.0.5 HDF5 file (``fer/data/emotion_model.hdf5``, MIT licence).
Keras/TensorFlow is not needed: the layer graph is read from the file's ``model_config``
attribute and the weights from its ``model_weights`` group with h5py, and the network is
re-implemented in torch:

* stem: two 3x3 'valid' convolutions (8 filters) + BatchNorm + ReLU (64 -> 62 -> 60);
* four residual modules (16, 32, 64, 128 filters): two separable 3x3 'same' convolutions
  with BatchNorm (ReLU between them), 3x3/2 max-pooling with TensorFlow 'same' padding,
  plus a strided 1x1 convolution + BatchNorm shortcut (60 -> 30 -> 15 -> 8 -> 4);
* classifier: a 3x3 'same' convolution to 7 channels (with bias), global average pooling
  and softmax.

The exported ``features`` are the global average of the last residual module's output
(128 values), i.e. the representation the classifier convolution reads. The
global average of the classifier convolution itself is only the 7 class logits, which is
exported as ``logits``.

Keras stores convolution kernels as HWIO and depthwise kernels as HWC1; torch wants
OIHW and C1HW. There is no Keras to compare against, so parity of the torch
re-implementation is checked against the TFLite conversion of the same network that
``fer`` also ships (int8 weights, float activations), on real faces.

:func:`build_face_network` builds either backbone the face branch can start from (the
EfficientNet-Lite0 one is :mod:`.face_lite`); the fine-tuned weights are read and written by
:mod:`.face_weights`, the test-time views are :mod:`.face_views`, and the bundle's
``face_encoder.onnx`` is exported by :mod:`.face_encoder`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._resources import package_file
from ecmf_edge.build.common import require_torch
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.labels import FER2013_LABELS

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "HDF5_FILE",
    "BACKBONES",
    "build_mini_xception",
    "build_face_network",
    "preprocess_faces",
    "cv2_grey64",
]

# The model's outputs are in FER2013_LABELS order (fer's ``FER._get_labels``).
INPUT_SIZE = 64
FEATURE_DIM = 128
HDF5_FILE = "data/emotion_model.hdf5"

# Networks the face branch can start from (``ecmf-edge train --branch face --backbone``).
BACKBONES = ("efficientnet_lite0", "mini_xception")


def _read_hdf5(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]], float]:
    """Layers of the Keras model config, weights by layer name, and the BatchNorm epsilon."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"]
            weights: dict[str, dict[str, np.ndarray]] = {}
            for layer in group:
                arrays: dict[str, np.ndarray] = {}
                group[layer].visititems(
                    lambda name, obj, arrays=arrays: arrays.__setitem__(name.split("/")[-1].split(":")[0], obj[()])
                    if hasattr(obj, "shape") else None
                )
                if arrays:
                    weights[layer] = arrays
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable Keras HDF5 model ({exc}): reinstall the 'fer' package") from None
    layers = config["config"]["layers"]
    eps = {l["config"]["epsilon"] for l in layers if l["class_name"] == "BatchNormalization"}
    if len(eps) != 1:
        raise ModelError(f"{path}: expected one BatchNorm epsilon, found {sorted(eps)}; the file is not fer's mini-Xception")
    return layers, weights, float(eps.pop())


def _plan(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Names of the Keras layers in the order the torch module uses them, checked against the graph."""
    by_name = {l["name"]: l for l in layers}
    consumers: dict[str, list[str]] = {}
    for l in layers:
        for node in l["inbound_nodes"]:
            for src in node:
                consumers.setdefault(src[0], []).append(l["name"])

    def bn_after(name: str) -> str:
        bns = [c for c in consumers.get(name, []) if by_name[c]["class_name"] == "BatchNormalization"]
        if len(bns) != 1:
            raise ModelError(f"layer {name} is not followed by one BatchNormalization: not fer's mini-Xception")
        return bns[0]

    convs = [l for l in layers if l["class_name"] == "Conv2D"]
    seps = [l for l in layers if l["class_name"] == "SeparableConv2D"]
    if len(convs) != 7 or len(seps) != 8 or convs[-1]["config"]["filters"] != len(FER2013_LABELS):
        raise ModelError("the HDF5 layer graph is not the 7-class mini-Xception fer ships: reinstall 'fer'")
    stem = [(c["name"], bn_after(c["name"])) for c in convs[:2]]
    modules = []
    for i in range(4):
        a, b, res = seps[2 * i], seps[2 * i + 1], convs[2 + i]
        if a["inbound_nodes"][0][0][0] != res["inbound_nodes"][0][0][0]:
            raise ModelError("unexpected residual wiring in the mini-Xception HDF5: reinstall 'fer'")
        modules.append({"sep_a": (a["name"], bn_after(a["name"])), "sep_b": (b["name"], bn_after(b["name"])),
                        "res": (res["name"], bn_after(res["name"])), "filters": int(res["config"]["filters"])})
    return {"stem": stem, "modules": modules, "head": convs[-1]["name"]}


def build_mini_xception(hdf5_path: Path | None = None):
    """The torch re-implementation of fer's mini-Xception with the HDF5 weights loaded (eval mode).

    ``forward(x)`` takes (N, 1, 64, 64) normalised grey faces and returns
    ``(features (N, 128), logits (N, 7), probs (N, 7))``.

    Raises:
        DependencyError: torch is not installed.
        ModelError: the HDF5 file is missing or is not the expected network.
    """
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional

    path = Path(hdf5_path) if hdf5_path else package_file("fer", HDF5_FILE)
    layers, weights, eps = _read_hdf5(path)
    plan = _plan(layers)

    def bn(channels: int, keras_name: str):
        layer = nn.BatchNorm2d(channels, eps=eps)
        w = weights[keras_name]
        layer.weight.data = torch.from_numpy(w["gamma"]).float()
        layer.bias.data = torch.from_numpy(w["beta"]).float()
        layer.running_mean.data = torch.from_numpy(w["moving_mean"]).float()
        layer.running_var.data = torch.from_numpy(w["moving_variance"]).float()
        return layer

    def conv(keras_name: str, stride: int = 1, padding: int = 0):
        w = weights[keras_name]
        kernel = torch.from_numpy(w["kernel"]).float().permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        layer = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]), stride=stride,
                          padding=padding, bias="bias" in w)
        layer.weight.data = kernel
        if "bias" in w:
            layer.bias.data = torch.from_numpy(w["bias"]).float()
        return layer

    def separable(keras_name: str):
        w = weights[keras_name]
        depth = torch.from_numpy(w["depthwise_kernel"]).float().permute(2, 3, 0, 1).contiguous()  # HWC1 -> C1HW
        point = torch.from_numpy(w["pointwise_kernel"]).float().permute(3, 2, 0, 1).contiguous()
        channels = depth.shape[0]
        dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        pw = nn.Conv2d(channels, point.shape[0], 1, bias=False)
        dw.weight.data, pw.weight.data = depth, point
        return nn.Sequential(dw, pw)

    class XceptionModule(nn.Module):
        def __init__(self, spec: dict[str, Any], in_size: int) -> None:
            super().__init__()
            f = spec["filters"]
            self.sep_a, self.bn_a = separable(spec["sep_a"][0]), bn(f, spec["sep_a"][1])
            self.sep_b, self.bn_b = separable(spec["sep_b"][0]), bn(f, spec["sep_b"][1])
            self.res, self.bn_res = conv(spec["res"][0], stride=2), bn(f, spec["res"][1])
            # TensorFlow 'same' max-pooling 3x3/2: output ceil(n/2), padding (total//2 before, rest
            # after) ignored by the max. An extra "after" pixel is torch's ceil_mode, so this stays
            # one ONNX MaxPool.
            total = max((-(-in_size // 2) - 1) * 2 + 3 - in_size, 0)
            if total - 2 * (total // 2) not in (0, 1):
                raise ModelError(f"unsupported pooling size {in_size} in mini-Xception")
            self.pool = nn.MaxPool2d(3, 2, padding=total // 2, ceil_mode=total % 2 == 1)

        def forward(self, x):
            y = F.relu(self.bn_a(self.sep_a(x)))
            y = self.bn_b(self.sep_b(y))
            y = self.pool(y)
            return y + self.bn_res(self.res(x))

    class MiniXception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            (c1, b1), (c2, b2) = plan["stem"]
            self.conv1, self.bn1 = conv(c1), bn(8, b1)
            self.conv2, self.bn2 = conv(c2), bn(8, b2)
            size, blocks = INPUT_SIZE - 4, []
            for spec in plan["modules"]:
                blocks.append(XceptionModule(spec, size))
                size = -(-size // 2)
            self.blocks = nn.ModuleList(blocks)
            self.head = conv(plan["head"], padding=1)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            for block in self.blocks:
                x = block(x)
            features = x.mean(dim=(2, 3))
            logits = self.head(x).mean(dim=(2, 3))
            return features, logits, torch.softmax(logits, dim=1)

    model = MiniXception().eval()
    if model.blocks[-1].bn_res.num_features != FEATURE_DIM:
        raise ModelError(f"mini-Xception feature size is {model.blocks[-1].bn_res.num_features}, expected {FEATURE_DIM}")
    return model


def preprocess_faces(crops: list[np.ndarray]) -> np.ndarray:
    """Grey uint8 (or [0, 1] float) crops -> (N, 1, 64, 64) float32 in [-1, 1], as in :data:`ecmf_edge.build.face_encoder.PREPROCESSING`
    (resized before scaling, like fer and :class:`ecmf_edge.vision.face_encoder.FaceEncoder`)."""
    import cv2

    out = np.empty((len(crops), 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, crop in enumerate(crops):
        crop = cv2.resize(np.ascontiguousarray(crop), (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        crop = crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else crop.astype(np.float32)
        out[i, 0] = (crop - 0.5) / 0.5
    return out


def cv2_grey64(crop: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A crop as grey uint8 ``size`` x ``size`` (default 64, the mini-Xception's input)."""
    import cv2

    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_LINEAR)


def build_face_network(backbone: str, size: int, dropout: float = 0.3, weights_path=None):
    """The untrained-head network of ``backbone`` for ``size`` x ``size`` crops (torch); ``weights_path``: the
    pretrained trunk's weight file when not read from its package (EfficientNet-Lite0 only).

    Raises:
        InputError: an unknown backbone, or mini-Xception at a size other than 64.
    """
    if backbone == "efficientnet_lite0":
        from ecmf_edge.build.face_lite import build_face_lite0

        return build_face_lite0(size, dropout, weights_path)
    if backbone == "mini_xception":
        if size != INPUT_SIZE:
            raise InputError(f"mini_xception reads {INPUT_SIZE}x{INPUT_SIZE} faces, not {size}: drop --size or use "
                             "--backbone efficientnet_lite0")
        return build_mini_xception()
    raise InputError(f"unknown face backbone '{backbone}': use one of {', '.join(BACKBONES)}")
