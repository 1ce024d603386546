"""``ecmf-edge export``, ``quantize``, ``calibrate`` and ``build-engine``: thin commands over :mod:`ecmf_edge.build`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parsers"]


def _cmd_export(args: argparse.Namespace) -> int:
    from ecmf_edge.build.bundle import export_bundle
    from ecmf_edge.runtime.bundle import DEFAULT_BUNDLE, bundle_dir

    target = Path(args.out) if args.out else bundle_dir(DEFAULT_BUNDLE)
    path = export_bundle(target, force=args.force, progress=not args.quiet, head_dir=Path(args.head) if args.head else None,
                         branches_dir=Path(args.branches) if args.branches else None)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    print(f"bundle: {path}")
    for key, spec in manifest["models"].items():
        parity = spec.get("parity", {})
        diff = parity.get("max_abs_diff")
        diff_text = f"{diff:.2e}" if isinstance(diff, (int, float)) else "-"
        print(f"  {key:<14} {spec['file']:<22} parity vs {parity.get('reference', '?')}: max abs diff {diff_text}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from ecmf_edge.build.quantize import quantize_bundle
    from ecmf_edge.runtime.bundle import bundle_dir, load_bundle

    source = load_bundle(args.bundle)
    target = Path(args.out) if args.out else bundle_dir(args.bundle, "onnxruntime", args.precision)
    path = quantize_bundle(source, args.precision, target, calibration=args.calibration, models=args.models)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    print(f"bundle: {path}")
    for key, spec in manifest["models"].items():
        record = spec.get("quantization", {})
        gate = record.get("gate") or record.get("tried", {}).get("gate")
        detail = ((f"top-1 agreement {gate['top1_agreement']:.3f}, probs max abs diff {gate['probs_max_abs_diff']:.2e}, "
                   if gate.get("top1_agreement") is not None else "")
                  + f"features cosine >= {gate['features_min_cosine']:.4f} on {gate['inputs']} held-out inputs") if gate else ""
        reason = record.get("kept_fp32", "")
        print(f"  {key:<14} {spec['precision']:<5} {detail}{' (' + reason + ')' if reason and detail else reason}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ecmf_edge.build.calibration_set import build_calibration_set, load_calibration_set
    from ecmf_edge.runtime.bundle import load_bundle

    needs_bundle = bool(args.video or args.audio)
    path = build_calibration_set(args.out, split=args.split, videos=args.video or (), audios=args.audio or (),
                                 texts=args.texts, bundle=load_bundle(args.bundle) if needs_bundle else None,
                                 frames_per_video=args.frames_per_video, max_faces=args.max_faces,
                                 max_windows=args.max_windows)
    loaded = load_calibration_set(path)
    print(f"calibration set: {path}")
    for kind in ("faces", "frames", "speech", "texts"):
        print(f"  {kind:<7} {len(getattr(loaded, kind)):>4}  from {loaded.manifest['sources'].get(kind, '-')}")
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from ecmf_edge.build.tensorrt_build import build_engine_bundle

    path = build_engine_bundle(args.bundle, args.precision, Path(args.out) if args.out else None,
                               workspace_mb=args.workspace, calibration=args.calibration, models=args.models)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    key = manifest["engine_key"]
    print(f"engines: {path}  (TensorRT {key['tensorrt']}, {key['gpu']}, compute capability {key['compute_capability']})")
    for name, spec in manifest["models"].items():
        engines = spec.get("tensorrt", {}).get("engines")
        detail = (", ".join(f"{e['source']} {e['precision']} {e['build_seconds']} s" for e in engines) if engines
                  else spec.get("tensorrt", {}).get("kept", ""))
        print(f"  {name:<14} {detail}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register the build commands."""
    p = sub.add_parser("export", help="convert the pretrained weights of installed packages into the ONNX bundle")
    p.add_argument("--out", help="bundle folder (default: $ECMF_EDGE_ENGINES/default/onnxruntime-fp32)")
    p.add_argument("--force", action="store_true", help="rebuild even if the bundle exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--head", help="folder of a fusion head trained with `ecmf-edge train` (default: the shipped one)")
    p.add_argument("--branches", help="folder with branches trained with `ecmf-edge train --branch face|speech|text` "
                   "(default: the shipped ones)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("quantize", help="derive an INT8 or FP16 ONNX Runtime bundle from the fp32 one, with accuracy gates")
    p.add_argument("--precision", required=True, choices=("int8", "fp16"), help="target precision")
    p.add_argument("--bundle", default="default", help="fp32 bundle name or folder")
    p.add_argument("--calibration", metavar="DIR", help="calibration set from `ecmf-edge calibrate`, or a folder of images "
                   "(default: the default set: scikit-image faces and photos, espeak-ng speech, packaged sentences)")
    p.add_argument("--models", nargs="+", help="convert only these models (default for int8: audio_encoder text_encoder; "
                   "for fp16: the four encoders)")
    p.add_argument("--out", help="bundle folder (default: $ECMF_EDGE_ENGINES/<bundle>/onnxruntime-<precision>)")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("calibrate", help="sample a versioned calibration set (faces, frames, speech, texts) for INT8")
    p.add_argument("--out", required=True, help="folder for the set, e.g. calibration/mydevice-v1")
    p.add_argument("--video", action="append", help="video clip to sample frames and faces from (repeatable)")
    p.add_argument("--audio", action="append", help="audio or video file to cut speech windows from (repeatable)")
    p.add_argument("--texts", help="UTF-8 file with one sentence per line")
    p.add_argument("--split", default="calibration", choices=("calibration", "held_out"),
                   help="which default sources fill the kinds not given")
    p.add_argument("--bundle", default="default", help="bundle whose face detector and VAD sample the clips")
    p.add_argument("--frames-per-video", type=int, default=24)
    p.add_argument("--max-faces", type=int, default=400)
    p.add_argument("--max-windows", type=int, default=120, help="most speech windows")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("build-engine", help="build TensorRT 10 engines for this GPU from the fp32 bundle")
    p.add_argument("--precision", required=True, choices=("fp16", "int8"), help="engine precision")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace memory limit")
    p.add_argument("--bundle", default="default", help="fp32 bundle name or folder")
    p.add_argument("--calibration", metavar="DIR", help="calibration set for int8 (default: the default set)")
    p.add_argument("--models", nargs="+", help="build only these models (the others stay on ONNX Runtime)")
    p.add_argument("--out", help="bundle folder (default: $ECMF_EDGE_ENGINES/<bundle>/tensorrt-<precision>)")
    p.set_defaults(func=_cmd_build_engine)
