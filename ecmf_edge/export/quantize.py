"""``ecmf-edge quantize``: an INT8 or FP16 ONNX Runtime bundle derived from the fp32 one.

INT8 is static QDQ quantization (per-channel QInt8 weights, QUInt8 activations) calibrated
on real pictures (:mod:`ecmf_edge.export.calibration`); FP16 converts weights and compute
to float16 while keeping float32 inputs and outputs. Only the models in
:data:`CONVERTED_MODELS` are converted; each conversion must pass its accuracy gate against
fp32 on held-out real inputs or the fp32 model is kept (with a warning and the reason in the
manifest). Every other model is carried over as fp32, so the new bundle is complete.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..runtime.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from ..runtime.sessions import create_session
from .calibration import CALIBRATED_MODELS, CalibrationBatcher, face_crops, load_image_dir, scene_frames

__all__ = ["quantize_bundle", "measure_gate", "CONVERTED_MODELS", "GATES", "INT8_SETTINGS", "KEPT_FP32"]

logger = logging.getLogger("ecmf_edge")

CONVERTED_MODELS = tuple(CALIBRATED_MODELS)
# Accuracy gates against fp32 on held-out real inputs. ``probs`` of the frame encoder is the
# softmax of its ImageNet logits (its ``features`` are unbounded, so they are gated by cosine).
GATES: dict[str, dict[str, float]] = {
    "int8": {"min_top1_agreement": 0.98, "min_features_cosine": 0.98},
    "fp16": {"max_abs_diff": 1e-2},
}
# Static INT8 settings per model, chosen by measurement on the held-out gate inputs
# (the first convolution and the classifier stay float: they cost little and lost most accuracy).
INT8_SETTINGS: dict[str, dict[str, Any]] = {
    "face_encoder": {"nodes_to_exclude": ["/conv1/Conv", "/head/Conv", "/Softmax"], "reduce_range": True},
    "frame_encoder": {"nodes_to_exclude": ["/stem/conv/Conv", "/fc/Gemm"], "reduce_range": False},
}
# Why the other models stay fp32 in a converted bundle.
KEPT_FP32 = {
    "face_detector": "MTCNN cascade: its thresholds are tuned on fp32 scores and it is a small share of the frame time",
    "vad": "Silero VAD: stateful LSTM with a 512-sample input; already fast, and its state must stay exact",
    "audio_encoder": "Whisper encoder: not converted yet, no held-out speech accuracy gate in this release",
    "text_encoder": "MiniLM: not converted yet, no held-out sentence accuracy gate in this release",
    "fusion_head": "fusion head: tiny, trained in fp32; conversion gains nothing measurable",
}


def quantize_bundle(
    src_bundle: Bundle | str | Path,
    precision: str,
    out_dir: str | Path,
    *,
    calibration: str | Path | None = None,
    models: Sequence[str] | None = None,
) -> Path:
    """Write a ``precision`` bundle converted from the fp32 bundle ``src_bundle`` into ``out_dir``.

    Args:
        src_bundle: a loaded fp32 bundle, or its name or folder.
        precision: ``"int8"`` or ``"fp16"``.
        out_dir: the new bundle folder, e.g. ``<engines>/default/onnxruntime-int8``.
        calibration: folder of the user's own images for INT8 calibration (default: the
            scikit-image faces and photographs); also used as-is for the frame encoder.
        models: convert only these models (default: :data:`CONVERTED_MODELS`); others stay fp32.

    Raises:
        InputError: unknown precision or model, or an empty/undecodable calibration set.
        ModelError: the source bundle is missing or corrupt.
    """
    if precision not in GATES:
        raise InputError(f"unknown precision '{precision}' for quantize: use int8 or fp16")
    bundle = src_bundle if isinstance(src_bundle, Bundle) else load_bundle(src_bundle)
    if bundle.precision != "fp32":
        raise InputError(f"bundle at {bundle.root} is {bundle.precision}: quantize from the fp32 bundle")
    wanted = tuple(models) if models is not None else CONVERTED_MODELS
    unknown = [m for m in wanted if m not in CONVERTED_MODELS]
    if unknown:
        raise InputError(f"cannot convert {', '.join(unknown)}: choose from {', '.join(CONVERTED_MODELS)}")
    bundle.verify()
    user_images = load_image_dir(calibration) if precision == "int8" and calibration is not None else None
    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        manifest = _convert_all(bundle, precision, partial, wanted, user_images, calibration)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    logger.info("%s bundle written to %s", precision, out)
    return out


def _convert_all(bundle: Bundle, precision: str, partial: Path, wanted: Sequence[str],
                 user_images: list[np.ndarray] | None, calibration: str | Path | None) -> dict[str, Any]:
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest.update(precision=precision, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    rebuild=f"ecmf-edge quantize --precision {precision}", derived_from=str(bundle.root))
    for key, spec in manifest["models"].items():
        converted = None
        if key in wanted:
            converted = _convert_one(bundle, key, spec, precision, partial, user_images, calibration)
        if converted is None or "kept_fp32" in converted:
            spec["precision"] = "fp32"
            spec["quantization"] = converted or {"kept_fp32": KEPT_FP32.get(key, "not selected for conversion")}
            for relative in [spec["file"], *spec.get("extra_files", [])]:
                _link_or_copy(bundle.path(relative), partial / relative)
        else:
            spec["precision"], spec["quantization"] = precision, converted
            for relative in spec.get("extra_files", []):
                _link_or_copy(bundle.path(relative), partial / relative)
    manifest["files"] = {rel: {"sha256": sha256_file(partial / rel), "bytes": (partial / rel).stat().st_size}
                         for rel in manifest["files"]}
    return manifest


def _convert_one(bundle: Bundle, key: str, spec: dict[str, Any], precision: str, partial: Path,
                 user_images: list[np.ndarray] | None, calibration: str | Path | None) -> dict[str, Any]:
    """Convert one model into ``partial``; its quantization record, with ``kept_fp32`` (and no
    converted file left behind) when it could not be converted or failed its gate.

    Raises:
        InputError: the calibration set is empty or unusable.
    """
    source = bundle.path(spec["file"])
    target = partial / spec["file"]
    try:
        if precision == "int8":
            pictures = user_images if user_images is not None else _pictures(key, "calibration")
            reader = CalibrationBatcher(key, spec, pictures)
            _quantize_int8(source, target, reader, INT8_SETTINGS[key])
            record: dict[str, Any] = {
                "method": "onnxruntime static QDQ, per-channel, weights QInt8, activations QUInt8, MinMax calibration",
                "settings": INT8_SETTINGS[key],
                "calibration": str(calibration) if calibration else f"scikit-image {_SOURCE[key]}",
                "calibration_inputs": len(reader.inputs),
            }
        else:
            _convert_fp16(source, target)
            record = {"method": "onnxconverter_common float16, keep_io_types=True"}
        gate = measure_gate(key, spec, source, target, precision)
    except InputError:
        raise
    except Exception as exc:  # the converters and ONNX Runtime raise their own exception types
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        warnings.warn(f"{key} could not be converted to {precision} ({reason}); the fp32 model is kept",
                      RuntimeWarning, stacklevel=3)
        target.unlink(missing_ok=True)
        return {"kept_fp32": f"{precision} conversion failed ({reason})"}
    record["gate"] = gate
    if not gate["passed"]:
        warnings.warn(f"{key} {precision} failed its accuracy gate (top-1 {gate['top1_agreement']:.3f}, "
                      f"features cosine {gate['features_min_cosine']:.4f}, probs diff {gate['probs_max_abs_diff']:.4f}); "
                      "the fp32 model is kept", RuntimeWarning, stacklevel=3)
        target.unlink()
        return {"kept_fp32": f"{precision} failed its accuracy gate against fp32 on held-out real inputs", "tried": record}
    return record


_SOURCE = {"face_encoder": "lfw_subset faces 0-49 (as is and mirrored; each also +40 and -40 grey)",
           "frame_encoder": "photographs " + ", ".join(("astronaut", "chelsea", "coffee", "camera", "rocket",
                                                        "immunohistochemistry", "colorwheel", "brick", "grass"))}


def _pictures(key: str, split: str) -> list[np.ndarray]:
    return face_crops(split) if key == "face_encoder" else scene_frames(split)


def measure_gate(key: str, spec: dict[str, Any], fp32_path: Path, converted_path: Path, precision: str) -> dict[str, Any]:
    """Compare a converted model with fp32 on the held-out real inputs of ``key``.

    Returns the input count, top-1 agreement and max/mean abs diff of the probabilities,
    min cosine and max abs diff of the features, and whether the precision's gate passed.

    Raises:
        ModelError: a model cannot be loaded by ONNX Runtime.
    """
    held_out = CalibrationBatcher(key, spec, _pictures(key, "held_out"), batch_size=16)
    ref, new = create_session(fp32_path), create_session(converted_path)
    top = "probs" if key == "face_encoder" else "logits"
    names = [top, "features"]
    outs: list[dict[str, list[np.ndarray]]] = [{n: [] for n in names}, {n: [] for n in names}]
    for feed in held_out.feeds():
        for store, session in zip(outs, (ref, new)):
            for n, v in zip(names, session.run(names, feed)):
                store[n].append(v.astype(np.float32))
    a, b = ({n: np.concatenate(v) for n, v in store.items()} for store in outs)
    pa, pb = (x[top] if key == "face_encoder" else _softmax(x[top]) for x in (a, b))
    fa, fb = a["features"], b["features"]
    cosine = (fa * fb).sum(1) / np.maximum(np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12)
    diff = np.abs(pa - pb)
    gate: dict[str, Any] = {
        "held_out": _HELD_OUT[key],
        "inputs": int(len(fa)),
        "top1_agreement": float(np.mean(pa.argmax(1) == pb.argmax(1))),
        "probs_max_abs_diff": float(diff.max()),
        "probs_mean_abs_diff": float(diff.mean()),
        "probs": "probs output" if key == "face_encoder" else "softmax of the ImageNet logits",
        "features_min_cosine": float(cosine.min()),
        "features_max_abs_diff": float(np.abs(fa - fb).max()),
        "thresholds": dict(GATES[precision]),
    }
    if precision == "int8":
        gate["passed"] = (gate["top1_agreement"] >= GATES["int8"]["min_top1_agreement"]
                          and gate["features_min_cosine"] >= GATES["int8"]["min_features_cosine"])
    else:
        gate["passed"] = gate["probs_max_abs_diff"] <= GATES["fp16"]["max_abs_diff"]
    return gate


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


_HELD_OUT = {
    "face_encoder": "scikit-image lfw_subset faces 50-99 + 3 astronaut crops, each as is, mirrored, +40 and -40 grey",
    "frame_encoder": "scikit-image photographs cat, hubble_deep_field, moon, page, retina, text, gravel, logo (as is and mirrored)",
}


def _quantize_int8(source: Path, target: Path, reader: CalibrationBatcher, settings: dict[str, Any]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, reduce_range=bool(settings["reduce_range"]),
                        nodes_to_exclude=list(settings["nodes_to_exclude"]))


def _convert_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(source))
    _isolate_outputs(model)
    model = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(target))


def _isolate_outputs(model: Any) -> None:
    """Make every graph output the sole product of an Identity node.

    ``keep_io_types`` casts graph outputs back to float32 at the producing node, which breaks
    graphs where an output also feeds another node (``logits`` -> Softmax -> ``probs``).
    """
    from onnx import helper

    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in outputs:
                node.output[i] = f"{name}__inner"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in outputs:
                node.input[i] = f"{name}__inner"
    for name in outputs:
        model.graph.node.append(helper.make_node("Identity", [f"{name}__inner"], [name], name=f"{name}__output"))


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link an unchanged file (bundles are never edited in place); copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
