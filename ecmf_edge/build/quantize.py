"""``ecmf-edge quantize``: an INT8 or FP16 ONNX Runtime bundle derived from the fp32 one.

INT8, chosen per model by measurement (see :data:`INT8_SETTINGS`):

- the vision CNNs (face and frame encoders) use static QDQ quantization (per-channel QInt8
  weights, QUInt8 activations) calibrated on a calibration set
  (:mod:`ecmf_edge.build.calibration_set`), with the operators that quantized badly kept
  in float;
- the transformer encoders (Whisper speech encoder, MiniLM text encoder) use dynamic
  quantization of their MatMul/Gemm weights (per-channel QInt8; activations quantized at
  run time): on this CPU it was both faster and closer to fp32 than static QDQ
  (Whisper encoder, 4 s window: static QDQ 17.0 ms / cosine 0.974, dynamic 15.1 ms /
  cosine 0.999, fp32 28.4 ms).

FP16 converts weights and compute to float16 while keeping float32 inputs and outputs.
Only the models in :data:`CONVERTED_MODELS` are converted; each conversion must pass its
accuracy gate against fp32 on held-out real inputs (the held-out calibration split, never
used for calibration) or the fp32 model is kept (with a warning and the reason in the
manifest). Every other model is carried over as fp32, so the new bundle is complete.
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.build.calibration import CALIBRATION_KINDS, CalibrationBatcher, load_image_dir
from ecmf_edge.build.calibration_set import CalibrationSet, default_calibration_set, is_calibration_set, load_calibration_set
from ecmf_edge.build.common import link_or_copy, staged_dir
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.runtime.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from ecmf_edge.runtime.sessions import create_session

__all__ = ["quantize_bundle", "measure_gate", "resolve_calibration", "CONVERTED_MODELS", "INT8_DEFAULT_MODELS", "GATES", "INT8_SETTINGS", "KEPT_FP32"]

logger = logging.getLogger("ecmf_edge")

CONVERTED_MODELS = tuple(CALIBRATION_KINDS)
# Accuracy gates against fp32 on held-out real inputs. ``probs`` of the frame encoder is the
# softmax of its ImageNet logits (its ``features`` are unbounded, so they are gated by cosine).
# The speech and text encoders have no classifier of their own: their top-1 agreement is
# that of the bundle's fusion head fed that modality alone.
GATES: dict[str, dict[str, float]] = {
    "int8": {"min_top1_agreement": 0.98, "min_features_cosine": 0.98},
    "fp16": {"max_abs_diff": 1e-2, "min_features_cosine": 0.999},
}
# INT8 settings per model, chosen by measurement (nodes kept float are named exactly or by the end of
# their name; see _excluded_nodes).
INT8_SETTINGS: dict[str, dict[str, Any]] = {
    # Face encoder. The mini-Xception (ten views, as measured then): top-1 agreement with fp32 on 2000 FER2013
    # training faces / the held-out gate faces: softmax float 98.2 % / 97.2 %; head float 98.1 % / 97.2 %; conv1 +
    # head float 97.8 % / 96.7 %; last block + head float 98.5 % / 97.2 %; symmetric activations 98.1 % / 94.8 %.
    # The EfficientNet-Lite0 branch (80 px, crop + mirror), softmax float: 91.5 % on the gate faces. Both are
    # below the 98 % gate, so `--models face_encoder` keeps fp32.
    "face_encoder": {"nodes_to_exclude": ["/Softmax"], "reduce_range": True},
    "frame_encoder": {"nodes_to_exclude": ["/stem/conv/Conv", "/fc/Gemm"], "reduce_range": False},
    # Whisper encoder: the second feed-forward MatMul of each layer stays float (mean cosine with fp32
    # on 319 training clips 0.99936 -> 0.99982; 4 s window 13.5 -> 14.4 ms, fp32 ~28 ms).
    "audio_encoder": {"dynamic": True, "op_types": ["MatMul", "Gemm"],
                      "nodes_to_exclude": [f"/layers.{layer}/fc2/MatMul" for layer in range(6)]},
    # MiniLM: the weights of the first two layers stay float (min cosine on held-out sentences
    # 0.977 with every layer quantized, 0.990 with layers 0-1 kept float).
    "text_encoder": {"dynamic": True, "op_types": ["MatMul", "Gemm"], "nodes_to_exclude": [
        f"/layers.{layer}/{part}/MatMul" for layer in (0, 1) for part in ("key", "query", "value", "attn_out", "up", "down")]},
    # The fine-tuned text branch (frozen layers 0-1, fine-tuned "/top/" layers 2-5; a name matches the end
    # of a node's name, so "/layers.2/" finds "/top/layers.2/"): layers 0-2 stay float. Top-1 agreement
    # with fp32 on 10 % held-out MELD training dialogues: layers 0-1 float 97.8 %, layers 0-2 float 99.0 %
    # (6.6 ms per utterance on one thread, fp32 9.8 ms), layers 0-3 float 99.2 % (7.6 ms).
    "text_branch": {"dynamic": True, "op_types": ["MatMul", "Gemm"], "nodes_to_exclude": [
        f"/layers.{layer}/{part}/MatMul" for layer in (0, 1, 2) for part in ("key", "query", "value", "attn_out", "up", "down")]},
}
# What ``quantize --precision int8`` converts by default, and why the vision encoders stay fp32 there
# (both are still converted when named in ``models``; TensorRT INT8 engines calibrate them).
INT8_DEFAULT_MODELS = ("audio_encoder", "text_encoder", "text_branch")
INT8_KEPT_FP32 = {
    "face_encoder": "INT8 is not faster than fp32 for this small CNN on the CPU, and static QDQ agreed with fp32 on "
                    "98.1-98.5 % of 2000 real FER2013 training faces but 94.8-97.2 % of the held-out gate faces for "
                    "every setting tried",
    "frame_encoder": "INT8 fails the top-1 gate (0.938 on held-out photographs) and is not faster on the CPU",
}
# Why the other models stay fp32 in a converted bundle.
KEPT_FP32 = {
    "face_detector": "MTCNN cascade: its thresholds are tuned on fp32 scores and it is a small share of the frame time",
    "vad": "Silero VAD: stateful LSTM with a 512-sample input; already fast, and its state must stay exact",
    "fusion_head": "fusion head: tiny, trained in fp32; conversion gains nothing measurable",
}


def quantize_bundle(
    src_bundle: Bundle | str | Path,
    precision: str,
    out_dir: str | Path,
    *,
    calibration: str | Path | CalibrationSet | None = None,
    models: Sequence[str] | None = None,
) -> Path:
    """Write a ``precision`` bundle converted from the fp32 bundle ``src_bundle`` into ``out_dir``.

    Args:
        src_bundle: a loaded fp32 bundle, or its name or folder.
        precision: ``"int8"`` or ``"fp16"``.
        out_dir: the new bundle folder, e.g. ``<engines>/default/onnxruntime-int8``.
        calibration: a calibration set (folder written by ``ecmf-edge calibrate``), or a folder
            of the user's own images (used for both vision encoders); default: the default
            calibration set, built offline on first use.
        models: convert only these models (default: :data:`INT8_DEFAULT_MODELS` for int8,
            :data:`CONVERTED_MODELS` for fp16); others stay fp32.

    Raises:
        InputError: unknown precision or model, or an empty/undecodable calibration set.
        ModelError: the source bundle is missing or corrupt.
    """
    if precision not in GATES:
        raise InputError(f"unknown precision '{precision}' for quantize: use int8 or fp16")
    bundle = src_bundle if isinstance(src_bundle, Bundle) else load_bundle(src_bundle)
    if bundle.precision != "fp32":
        raise InputError(f"bundle at {bundle.root} is {bundle.precision}: quantize from the fp32 bundle")
    wanted = tuple(models) if models is not None else (INT8_DEFAULT_MODELS if precision == "int8" else CONVERTED_MODELS)
    unknown = [m for m in wanted if m not in CONVERTED_MODELS]
    if unknown:
        raise InputError(f"cannot convert {', '.join(unknown)}: choose from {', '.join(CONVERTED_MODELS)}")
    bundle.verify()
    source = resolve_calibration(calibration) if precision == "int8" else None
    out = Path(out_dir)
    with staged_dir(out) as partial:
        manifest = _convert_all(bundle, precision, partial, wanted, source)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("%s bundle written to %s", precision, out)
    return out


def resolve_calibration(calibration: str | Path | CalibrationSet | None) -> CalibrationSet:
    """The calibration set to read: given, loaded from a set folder, wrapped around an image folder, or the default."""
    if isinstance(calibration, CalibrationSet):
        return calibration
    if calibration is None:
        return default_calibration_set("calibration")
    if is_calibration_set(calibration):
        return load_calibration_set(calibration)
    images = load_image_dir(calibration)
    return CalibrationSet(root=Path(calibration), manifest={"name": Path(calibration).name, "sources": {
        "faces": f"image folder {calibration}", "frames": f"image folder {calibration}"}}, faces=images, frames=images)


def _convert_all(bundle: Bundle, precision: str, partial: Path, wanted: Sequence[str],
                 source: CalibrationSet | None) -> dict[str, Any]:
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest.update(precision=precision, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    rebuild=f"ecmf-edge quantize --precision {precision}", derived_from=str(bundle.root))
    held_out = default_calibration_set("held_out")
    for key, spec in manifest["models"].items():
        converted = None
        if key in wanted:
            converted = _convert_one(bundle, key, spec, precision, partial, source, held_out)
        if converted is None or "kept_fp32" in converted:
            spec["precision"] = "fp32"
            reasons = {**KEPT_FP32, **INT8_KEPT_FP32} if precision == "int8" else KEPT_FP32
            spec["quantization"] = converted or {"kept_fp32": reasons.get(key, "not selected for conversion")}
            for relative in [spec["file"], *spec.get("extra_files", [])]:
                link_or_copy(bundle.path(relative), partial / relative)
        else:
            spec["precision"], spec["quantization"] = precision, converted
            token_file = spec.get("attributes", {}).get("token_file")
            for relative in spec.get("extra_files", []):
                if relative == token_file:  # the truncated graph: same weights, same conversion, the same token
                    _convert_file(bundle.path(relative), partial / relative, precision,
                                  _settings_up_to(INT8_SETTINGS[key], int(spec["attributes"]["token_layer"])))
                else:
                    link_or_copy(bundle.path(relative), partial / relative)
    manifest["files"] = {rel: {"sha256": sha256_file(partial / rel), "bytes": (partial / rel).stat().st_size}
                         for rel in manifest["files"]}
    return manifest


def _settings_up_to(settings: dict[str, Any], last_layer: int) -> dict[str, Any]:
    """The settings for a graph cut after layer ``last_layer``: the float-kept nodes of later layers are not in it."""
    import re

    def keep(name: str) -> bool:
        found = re.search(r"/layers\.(\d+)/", name)
        return found is None or int(found.group(1)) <= last_layer

    return {**settings, "nodes_to_exclude": [n for n in settings.get("nodes_to_exclude", []) if keep(n)]}


def _convert_file(model_path: Path, target: Path, precision: str, settings: dict[str, Any]) -> None:
    """Convert a second graph of a model the way its main graph was (dynamic INT8 or FP16); its gate is the
    main graph's, whose first layers it shares exactly."""
    if precision == "int8":
        if not settings.get("dynamic"):
            raise InputError(f"{model_path.name}: only dynamically quantized models may carry a second graph")
        _quantize_dynamic(model_path, target, settings)
    else:
        _convert_fp16(model_path, target)


def _convert_one(bundle: Bundle, key: str, spec: dict[str, Any], precision: str, partial: Path,
                 source: CalibrationSet | None, held_out: CalibrationSet) -> dict[str, Any]:
    """Convert one model into ``partial``; its quantization record, with ``kept_fp32`` (and no
    converted file left behind) when it could not be converted or failed its gate.

    Raises:
        InputError: the calibration set is empty or unusable.
    """
    model_path = bundle.path(spec["file"])
    target = partial / spec["file"]
    settings = INT8_SETTINGS[key]
    try:
        if precision == "int8" and settings.get("dynamic"):
            _quantize_dynamic(model_path, target, settings)
            record: dict[str, Any] = {
                "method": "onnxruntime dynamic quantization, per-channel QInt8 weights of "
                          + "/".join(settings["op_types"]) + ", activations quantized at run time (no calibration)",
                "settings": settings,
            }
        elif precision == "int8":
            assert source is not None
            reader = CalibrationBatcher.from_set(bundle, key, source)
            _quantize_int8(model_path, target, reader, settings)
            record = {
                "method": "onnxruntime static QDQ, per-channel, weights QInt8, activations QUInt8, MinMax calibration",
                "settings": settings,
                "calibration": f"{source.name}: {source.manifest.get('sources', {}).get(CALIBRATION_KINDS[key], '?')}",
                "calibration_inputs": len(reader.inputs),
            }
        else:
            _convert_fp16(model_path, target)
            record = {"method": "onnxconverter_common float16, keep_io_types=True"}
        gate = measure_gate(bundle, key, target, precision, held_out)
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
        top1 = "n/a" if gate["top1_agreement"] is None else f"{gate['top1_agreement']:.3f}"
        diff = "n/a" if gate["probs_max_abs_diff"] is None else f"{gate['probs_max_abs_diff']:.4f}"
        warnings.warn(f"{key} {precision} failed its accuracy gate (top-1 {top1}, features cosine "
                      f"{gate['features_min_cosine']:.4f}, probs diff {diff}); the fp32 model is kept", RuntimeWarning, stacklevel=3)
        target.unlink()
        return {"kept_fp32": f"{precision} failed its accuracy gate against fp32 on held-out real inputs", "tried": record}
    return record


# The output whose top-1 is gated, and the features output, per converted model.
_OUTPUTS = {"face_encoder": ("probs", "features"), "frame_encoder": ("logits", "features"),
            "audio_encoder": (None, "pooled"), "text_encoder": (None, "embedding"), "text_branch": ("probs", "embedding")}


def measure_gate(bundle: Bundle, key: str, converted_path: Path, precision: str,
                 held_out: CalibrationSet | None = None) -> dict[str, Any]:
    """Compare a converted model with the fp32 model of ``bundle`` on held-out real inputs.

    Returns the input count, top-1 agreement and max/mean abs diff of the probabilities
    (for the speech and text encoders: of the bundle's fusion head fed that modality alone),
    min cosine and max abs diff of the features, and whether the precision's gate passed.

    Raises:
        ModelError: a model cannot be loaded by ONNX Runtime.
    """
    held_out = held_out or default_calibration_set("held_out")
    batcher = CalibrationBatcher.from_set(bundle, key, held_out, batch_size=16)
    ref, new = create_session(bundle.path(bundle.spec(key)["file"])), create_session(converted_path)
    top, feat = _OUTPUTS[key]
    if key == "audio_encoder":  # the pooled output that is the audio token (a middle layer in this version's bundles)
        feat = bundle.spec(key).get("attributes", {}).get("token_output", feat)
    names = [n for n in (top, feat) if n]
    outs: list[dict[str, list[np.ndarray]]] = [{n: [] for n in names}, {n: [] for n in names}]
    for feed in batcher.feeds():
        for store, session in zip(outs, (ref, new)):
            for n, v in zip(names, session.run(names, feed)):
                store[n].append(v.astype(np.float32))
    a, b = ({n: np.concatenate(v) for n, v in store.items()} for store in outs)
    fa, fb = a[feat], b[feat]
    if top is None:
        head_probs = _head_probs(bundle, key, (fa, fb), held_out)
        if head_probs is None:  # a model no classifier of this bundle reads (text_encoder beside a text branch)
            pa = pb = None
            probs = "not applicable: no classifier of this bundle reads this model's output"
        else:
            pa, pb = head_probs
            probs = ("speech branch probabilities (population speaker statistics)" if key == "audio_encoder" and bundle.has("speech_head")
                     else "fusion head probabilities with only this modality present")
    else:
        pa, pb = (x[top] if top == "probs" else _softmax(x[top]) for x in (a, b))
        probs = "probs output" if top == "probs" else "softmax of the ImageNet logits"
    cosine = (fa * fb).sum(1) / np.maximum(np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12)
    diff = None if pa is None else np.abs(pa - pb)
    gate: dict[str, Any] = {
        "held_out": f"{held_out.name}: {held_out.manifest.get('sources', {}).get(CALIBRATION_KINDS[key], '?')}",
        "inputs": int(len(fa)),
        "top1_agreement": None if pa is None else float(np.mean(pa.argmax(1) == pb.argmax(1))),
        "probs_max_abs_diff": None if diff is None else float(diff.max()),
        "probs_mean_abs_diff": None if diff is None else float(diff.mean()),
        "probs": probs,
        "features_min_cosine": float(cosine.min()),
        "features_max_abs_diff": float(np.abs(fa - fb).max()),
        "thresholds": dict(GATES[precision]),
    }
    if precision == "int8" and top is None:
        # Held-out speech is synthetic and the sentences are neutral to mildly emotional: the
        # head's answers on them are near ties, so its top-1 agreement is recorded, not gated;
        # the classifier check on real labelled speech and dialogue is benchmarks/precision_accuracy.py.
        gate["top1_agreement_gated"] = False
        gate["passed"] = gate["features_min_cosine"] >= GATES["int8"]["min_features_cosine"]
    elif precision == "int8":
        gate["passed"] = (gate["top1_agreement"] >= GATES["int8"]["min_top1_agreement"]
                          and gate["features_min_cosine"] >= GATES["int8"]["min_features_cosine"])
    elif top is None:
        gate["passed"] = gate["features_min_cosine"] >= GATES["fp16"]["min_features_cosine"]
    else:
        gate["passed"] = gate["probs_max_abs_diff"] <= GATES["fp16"]["max_abs_diff"]
    return gate


def _head_probs(bundle: Bundle, key: str, feature_sets: Sequence[np.ndarray], held_out: CalibrationSet) -> list[np.ndarray] | None:
    """Probabilities for each feature row of each set: the speech branch's for the speech encoder, else the
    fusion head's with only this modality present; None when no classifier of the bundle reads the output."""
    from ecmf_edge.runtime.fusion_head import FusionHead

    if key == "audio_encoder":
        from ecmf_edge.audio.prosody import prosody_features
        from ecmf_edge.audio.speech_branch import SpeechBranch
        from ecmf_edge.audio.speech_encoder import audio_token

        prosody = [prosody_features(np.asarray(w, np.float32)) for w in held_out.speech]  # the same for every set
        branch = SpeechBranch.from_bundle(bundle)
        if branch is not None:  # the speech branch is a classifier: its own probabilities (population statistics)
            return [np.stack([branch(audio_token(row, prosody[i]), observe=False)[1] for i, row in enumerate(rows)])
                    for rows in feature_sets]
        head = FusionHead.from_bundle(bundle)

        def token(row: np.ndarray, i: int) -> dict[str, np.ndarray]:
            return {"audio": audio_token(row, prosody[i])}
    else:
        head = FusionHead.from_bundle(bundle)
        if head.dims["text"] != 2 * feature_sets[0].shape[1]:
            return None  # the fusion head reads the text branch's embedding, not this encoder's
        half = head.dims["text"] // 2  # [enriched context; transcript]: the sentence stands for both

        def token(row: np.ndarray, i: int) -> dict[str, np.ndarray]:
            return {"text": np.concatenate([row[:half], row[:half]])}
    return [np.stack([head.predict(token(row, i)).probabilities for i, row in enumerate(rows)]) for rows in feature_sets]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _excluded_nodes(source: Path, settings: dict[str, Any]) -> list[str]:
    """The model's names of the nodes the settings keep float.

    A setting names a node exactly or by the end of its name (``/conv1/Conv`` is ``/net/conv1/Conv`` when the
    export wraps the network), matching one node. A name matching none or several is refused: a renamed node
    would otherwise silently be quantized.
    """
    import onnx

    names = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node]
    present, resolved = set(names), []
    for wanted in settings.get("nodes_to_exclude", []):
        found = [wanted] if wanted in present else [n for n in names if n.endswith(wanted if wanted.startswith("/") else "/" + wanted)]
        if len(found) != 1:
            problem = "no node" if not found else f"{len(found)} nodes ending in"
            raise ModelError(f"{source.name} has {problem} {wanted} (a node its INT8 settings keep float): the export "
                             "renamed it; update INT8_SETTINGS in ecmf_edge/build/quantize.py")
        resolved.append(found[0])
    return resolved


def _quantize_dynamic(source: Path, target: Path, settings: dict[str, Any]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    excluded = _excluded_nodes(source, settings)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(settings["op_types"]),
                         nodes_to_exclude=excluded)


def _quantize_int8(source: Path, target: Path, reader: CalibrationBatcher, settings: dict[str, Any]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    excluded = _excluded_nodes(source, settings)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, reduce_range=bool(settings["reduce_range"]),
                        nodes_to_exclude=excluded)


def _convert_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(source))
    _isolate_outputs(model)
    # The converter retypes a Cast-to-float's output without changing its ``to``: keep those in float.
    casts = [n.name for n in model.graph.node if n.op_type == "Cast"
             and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)
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
