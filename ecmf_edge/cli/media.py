"""``ecmf-edge features`` and ``transcribe``: per-modality features and speech recognition of files."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ecmf_edge.cli.common import add_bundle_option, add_llm_options, given, make_enricher, with_default
from ecmf_edge.errors import InputError

__all__ = ["add_parsers", "feature_options"]

_FEATURES = "ecmf_edge.features:FeatureOptions"


def feature_options(args: argparse.Namespace):
    """The FeatureOptions of ``ecmf-edge features`` (only the options given; the rest: FeatureOptions')."""
    from ecmf_edge.features import FeatureOptions

    return FeatureOptions(**given(args, fps="sample_fps", max_frames="max_frames"))


def _cmd_features(args: argparse.Namespace) -> int:
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.runtime.bundle import load_bundle

    if not (args.video or args.audio or args.text is not None):
        raise InputError("nothing to extract: give --video FILE, --audio FILE and/or --text TEXT")
    if args.transcribe and not args.audio:
        raise InputError("--transcribe needs --audio FILE (the speech to transcribe)")
    bundle = load_bundle(**given(args, bundle="source"))
    wants_text = args.text is not None or args.transcribe
    extractor = FeatureExtractor(bundle, feature_options(args),
                                 enricher=make_enricher(args) if wants_text else None)
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
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.text.asr import AsrOptions, SpeechRecognizer

    pcm = load_audio(args.audio)
    bundle = load_bundle(**given(args, bundle="source"))
    recognizer = SpeechRecognizer.from_bundle(bundle, AsrOptions(language=args.language, threads=args.threads,
                                                                       word_timestamps=True))
    transcript = recognizer.transcribe(pcm)
    result = None
    if not transcript.is_empty:
        enricher = make_enricher(args)
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


def add_parsers(sub: Any) -> None:
    """Register the media commands."""
    p = sub.add_parser("features", help="extract per-modality feature vectors into an .npz file")
    p.add_argument("--video", help="video file (frame and face features)")
    p.add_argument("--audio", help="audio or video file (speech features; any container and rate, resampled to 16 kHz)")
    p.add_argument("--text", help="transcript or text (text features)")
    p.add_argument("--out", required=True, help="output .npz path")
    add_bundle_option(p)
    p.add_argument("--fps", type=float, help=with_default("frames per second sampled from the video", _FEATURES, "sample_fps"))
    p.add_argument("--max-frames", type=int, help=with_default("at most this many sampled frames", _FEATURES, "max_frames"))
    p.add_argument("--transcribe", action="store_true", help="text features from speech recognition of --audio")
    add_llm_options(p)
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("transcribe", help="speech recognition (Whisper base, CPU) + LLM emotional context of a WAV file")
    p.add_argument("--audio", required=True, help="audio or video file (wav, mp3, m4a, flac, ogg, webm, mp4 ...; any rate)")
    p.add_argument("--language", help="language code (e.g. en); default: detect")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the recogniser")
    add_bundle_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_llm_options(p)
    p.set_defaults(func=_cmd_transcribe)
