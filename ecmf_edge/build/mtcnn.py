"""Face detector export: MTCNN's three networks (P-, R-, O-Net) as three ONNX files.

The weights are the MTCNN state dicts that the ``facenet-pytorch`` package ships
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT licence; originally converted from
Zhang et al.'s Caffe models). The package itself is never imported (it needs
torchvision); the modules below are our own re-implementation of the same
conv + PReLU architecture, loaded with ``torch.load(..., weights_only=True)``.

The Caffe weights were trained on transposed images, so the dense layers of R-Net
and O-Net expect their input flattened in (W, H, C) order: the feature map is
permuted ``(0, 3, 2, 1)`` before flattening, exactly as facenet-pytorch does.

The runtime pipeline that uses these graphs is :mod:`ecmf_edge.vision.face_detector`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._resources import package_file
from ecmf_edge.build.common import ExportedModel, check_parity, onnx_export, onnx_io, package_provenance, require_torch
from ecmf_edge.errors import ModelError

__all__ = ["export_face_detector", "build_mtcnn", "load_mtcnn", "MTCNN_ATTRIBUTES", "PARITY_TOLERANCE"]

logger = logging.getLogger("ecmf_edge")

KEY = "face_detector"
PNET_FILE = "face_pnet.onnx"
RNET_FILE = "face_rnet.onnx"
ONET_FILE = "face_onet.onnx"
PARITY_TOLERANCE = 1e-4

# Everything the runtime needs besides the graphs (facenet-pytorch / MTCNN paper defaults).
MTCNN_ATTRIBUTES: dict[str, Any] = {
    "stage_files": {"pnet": PNET_FILE, "rnet": RNET_FILE, "onet": ONET_FILE},
    # Face-probability thresholds of P-, R- and O-Net.
    "thresholds": [0.6, 0.7, 0.7],
    # Smallest face searched, in pixels of the image the detector works on.
    "min_face_size": 20,
    # Ratio between consecutive image-pyramid scales.
    "pyramid_factor": 0.709,
    # IoU thresholds of the NMS steps; the last one uses the "min" overlap (intersection / smaller area).
    "nms_thresholds": {"pnet_scale": 0.5, "pnet_all": 0.7, "rnet": 0.7, "onet": 0.7},
    "onet_nms_method": "min",
    # P-Net sees the image with stride 2 through a 12x12 window.
    "pnet_stride": 2,
    "pnet_cell_size": 12,
    "landmarks": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
    # Names of the graphs' tensors (outputs: box regression, landmarks, softmax over [no face, face]).
    "io": {
        "pnet": {"input": "image", "reg": "reg", "prob": "prob"},
        "rnet": {"input": "image", "reg": "reg", "prob": "prob"},
        "onet": {"input": "image", "reg": "reg", "landmarks": "landmarks", "prob": "prob"},
    },
}

PREPROCESSING: dict[str, Any] = {
    "colour": "RGB",
    "layout": "NCHW",
    "dtype": "float32",
    "scale": "(x - 127.5) / 128",
    "mean": 127.5,
    "std": 128.0,
    "pnet_input": "whole image at each pyramid scale (H, W >= 12), cv2.INTER_AREA resize",
    "rnet_input": [24, 24],
    "onet_input": [48, 48],
    "crop": "square candidate box, zero padding outside the image, cv2.INTER_AREA resize",
}


def build_mtcnn():
    """The three MTCNN modules (untrained), as ``(pnet, rnet, onet)``.

    Raises:
        DependencyError: torch is not installed.
    """
    torch = require_torch()
    nn = torch.nn

    class PNet(nn.Module):
        """Proposal network: fully convolutional, 12x12 window, stride 2."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1 = nn.Conv2d(32, 2, 1)
            self.conv4_2 = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu2(self.conv2(x))
            x = self.prelu3(self.conv3(x))
            return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)

    class RNet(nn.Module):
        """Refinement network on 24x24 crops."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).flatten(1)  # Caffe (W, H, C) flatten order
            x = self.prelu4(self.dense4(x))
            return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)

    class ONet(nn.Module):
        """Output network on 48x48 crops: box regression, 5 landmarks, face probability."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).flatten(1)  # Caffe (W, H, C) flatten order
            x = self.prelu5(self.dense5(x))
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)

    return PNet(), RNet(), ONet()


def _weights_path(stage: str) -> Path:
    return package_file("facenet_pytorch", f"data/{stage}.pt")


def load_mtcnn():
    """The three MTCNN modules with facenet-pytorch's pretrained weights, in eval mode.

    Raises:
        DependencyError: torch is not installed.
        ModelError: facenet-pytorch is not installed, or a weight file does not match the architecture.
    """
    torch = require_torch()
    modules = build_mtcnn()
    for stage, module in zip(("pnet", "rnet", "onet"), modules):
        path = _weights_path(stage)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            module.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{path} does not match the MTCNN {stage} architecture ({first[:160]}): "
                "reinstall it with `pip install --force-reinstall --no-deps facenet-pytorch`"
            ) from None
        module.eval()
    return modules


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB images (or a batch of them) -> float32 NCHW, (x - 127.5) / 128."""
    batch = rgb[None] if rgb.ndim == 3 else rgb
    return ((batch.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2).copy()


def _parity_inputs() -> dict[str, np.ndarray]:
    """Real image data for each stage: skimage photographs and crops of them."""
    import cv2
    from skimage import data

    astronaut, coffee, chelsea = data.astronaut(), data.coffee(), data.chelsea()
    pnet_input = _normalise(cv2.resize(astronaut, (203, 187), interpolation=cv2.INTER_AREA))
    # Crops on and off faces: the astronaut's face, her flag patch, the cat, the coffee cup.
    boxes = [
        (astronaut, 150, 50, 280, 180), (astronaut, 170, 80, 250, 160), (astronaut, 0, 0, 128, 128),
        (astronaut, 300, 300, 500, 500), (chelsea, 100, 20, 300, 220), (coffee, 150, 50, 450, 350),
    ]
    crops24 = np.stack([cv2.resize(img[y1:y2, x1:x2], (24, 24), interpolation=cv2.INTER_AREA) for img, x1, y1, x2, y2 in boxes])
    crops48 = np.stack([cv2.resize(img[y1:y2, x1:x2], (48, 48), interpolation=cv2.INTER_AREA) for img, x1, y1, x2, y2 in boxes])
    return {"pnet": pnet_input, "rnet": _normalise(crops24), "onet": _normalise(crops48)}


def _check_stage(stage: str, module, path: Path, x: np.ndarray, output_names: list[str]) -> dict[str, float]:
    """Run torch and ONNX Runtime on the same input; max abs diff per output (ModelError above tolerance)."""
    import onnxruntime as ort

    torch = require_torch()
    with torch.no_grad():
        reference = [t.numpy() for t in module(torch.from_numpy(x))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    candidate = session.run(output_names, {"image": x})
    return {
        name: check_parity(f"{KEY}/{stage}/{name}", ref, cand, PARITY_TOLERANCE)
        for name, ref, cand in zip(output_names, reference, candidate)
    }


def export_face_detector(out_dir: Path) -> ExportedModel:
    """Export MTCNN as ``face_pnet.onnx`` (main file), ``face_rnet.onnx`` and ``face_onet.onnx``.

    Raises:
        DependencyError: torch (or scikit-image, for the parity inputs) is not installed.
        ModelError: facenet-pytorch's weights are missing or mismatched, or ONNX parity fails.
    """
    torch = require_torch()
    out_dir = Path(out_dir)
    pnet, rnet, onet = load_mtcnn()
    inputs = _parity_inputs()
    stages = {
        "pnet": (pnet, PNET_FILE, ["reg", "prob"], (1, 3, 64, 80),
                 {"image": {0: "batch", 2: "height", 3: "width"}, "reg": {0: "batch", 2: "map_height", 3: "map_width"},
                  "prob": {0: "batch", 2: "map_height", 3: "map_width"}}),
        "rnet": (rnet, RNET_FILE, ["reg", "prob"], (2, 3, 24, 24),
                 {"image": {0: "batch"}, "reg": {0: "batch"}, "prob": {0: "batch"}}),
        "onet": (onet, ONET_FILE, ["reg", "landmarks", "prob"], (2, 3, 48, 48),
                 {"image": {0: "batch"}, "reg": {0: "batch"}, "landmarks": {0: "batch"}, "prob": {0: "batch"}}),
    }
    diffs: dict[str, dict[str, float]] = {}
    for stage, (module, file, outputs, dummy_shape, dynamic_axes) in stages.items():
        path = out_dir / file
        dummy = torch.zeros(dummy_shape, dtype=torch.float32)
        onnx_export(module, (dummy,), path, ["image"], outputs, dynamic_axes)
        diffs[stage] = _check_stage(stage, module, path, inputs[stage], outputs)
    attributes = dict(MTCNN_ATTRIBUTES)
    attributes["stage_io"] = {stage: dict(zip(("inputs", "outputs"), onnx_io(out_dir / file)))
                              for stage, file in MTCNN_ATTRIBUTES["stage_files"].items()}
    parity = {
        "reference": "torch modules with facenet-pytorch MTCNN weights",
        "inputs": {
            "pnet": f"skimage astronaut resized to 203x187, shape {list(inputs['pnet'].shape)}",
            "rnet": f"{len(inputs['rnet'])} crops of skimage astronaut/chelsea/coffee at 24x24",
            "onet": f"{len(inputs['onet'])} crops of skimage astronaut/chelsea/coffee at 48x48",
        },
        "max_abs_diff": max(max(d.values()) for d in diffs.values()),
        "per_output": diffs,
        "tolerance": PARITY_TOLERANCE,
    }
    logger.info("exported %s: max abs diff %.3g", KEY, parity["max_abs_diff"])
    return ExportedModel.from_onnx(
        KEY, out_dir / PNET_FILE,
        preprocessing=dict(PREPROCESSING),
        provenance=package_provenance("facenet-pytorch", "facenet_pytorch/data/pnet.pt, rnet.pt, onet.pt", "MIT",
                                      "MTCNN P-Net / R-Net / O-Net (Zhang et al. 2016), conv + PReLU"),
        parity=parity,
        extra_files=[RNET_FILE, ONET_FILE],
        attributes=attributes,
    )
