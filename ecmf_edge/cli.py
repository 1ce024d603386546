"""The ``ecmf-edge`` command line.

Every :class:`EcmfError` is printed as one line (``ecmf-edge: error: ...``) with exit
status 2; there is no traceback for a problem the user can fix.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import EcmfError, InputError

__all__ = ["main", "build_parser"]


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.bundle import export_bundle
    from .runtime.bundle import DEFAULT_BUNDLE, bundle_dir

    target = Path(args.out) if args.out else bundle_dir(DEFAULT_BUNDLE)
    path = export_bundle(target, force=args.force, progress=not args.quiet)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    print(f"bundle: {path}")
    for key, spec in manifest["models"].items():
        parity = spec.get("parity", {})
        diff = parity.get("max_abs_diff")
        diff_text = f"{diff:.2e}" if isinstance(diff, (int, float)) else "-"
        print(f"  {key:<14} {spec['file']:<22} parity vs {parity.get('reference', '?')}: max abs diff {diff_text}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from .features import FeatureExtractor, FeatureOptions
    from .runtime.bundle import load_bundle

    if not (args.video or args.audio or args.text is not None):
        raise InputError("nothing to extract: give --video FILE, --audio FILE and/or --text TEXT")
    bundle = load_bundle(args.bundle)
    extractor = FeatureExtractor(bundle, FeatureOptions(sample_fps=args.fps, max_frames=args.max_frames))
    features = extractor.extract(video=args.video, audio=args.audio, text=args.text)
    out = features.save_npz(args.out)
    for name, present in features.present.items():
        vector = getattr(features, name)
        reason = features.info.get(f"{name}_absent", "")
        print(f"{name:<6} {'present' if present else 'absent '}  {f'dim {vector.shape[0]}' if present else reason}")
    if features.face_probs is not None and features.info.get("face_labels"):
        labels = features.info["face_labels"]
        top = int(features.face_probs.argmax())
        print(f"face expression (FER2013 classes): {labels[top]} {features.face_probs[top]:.2f}")
    print(f"written: {out}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import format_table, run_checks

    rows = run_checks(args.bundle, verify=not args.no_verify)
    print(format_table(rows))
    failed = [r for r in rows if r.required and not r.ok]
    if failed:
        print(f"\n{len(failed)} required check(s) failed: " + "; ".join(f"{r.item}: {r.detail}" for r in failed))
        return 1 if args.check else 0
    print("\nall required checks passed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecmf-edge", description="On-device multimodal emotion recognition (ECMF).")
    parser.add_argument("--version", action="version", version=f"ecmf-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and parity figures")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="convert the pretrained weights of installed packages into the ONNX bundle")
    p.add_argument("--out", help="bundle folder (default: $ECMF_EDGE_ENGINES/default/onnxruntime-fp32)")
    p.add_argument("--force", action="store_true", help="rebuild even if the bundle exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("features", help="extract per-modality feature vectors into an .npz file")
    p.add_argument("--video", help="video file (frame and face features)")
    p.add_argument("--audio", help="WAV file (speech features; any rate, resampled to 16 kHz)")
    p.add_argument("--text", help="transcript or text (text features)")
    p.add_argument("--out", required=True, help="output .npz path")
    p.add_argument("--bundle", default="default", help="bundle name or folder")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second sampled from the video")
    p.add_argument("--max-frames", type=int, default=150, help="at most this many sampled frames")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("doctor", help="report Python, packages, providers, devices and bundle verification")
    p.add_argument("--bundle", default="default", help="bundle name or folder to verify")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 verification of bundle files")
    p.add_argument("--check", action="store_true", help="exit non-zero when a required check fails")
    p.set_defaults(func=_cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except EcmfError as exc:
        print(f"ecmf-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecmf-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
