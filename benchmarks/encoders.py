"""Per-encoder latency (ONNX Runtime on the CPU unless told otherwise): p50, p95, fps and peak RSS.

Real inputs: the astronaut photograph in a 640x480 frame, its aligned face crop,
espeak-ng speech from ``ecmf_edge/assets``, and an English sentence. Warm-up calls are
excluded from the figures.

    python benchmarks/encoders.py [--bundle default] [--backend onnxruntime] [--precision fp32] [--repeats 50]
                                  [--threads 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.stats import measure
from ecmf_edge.bench.system import peak_rss_mb
from ecmf_edge.modalities import BACKENDS, PRECISIONS


def build_cases(bundle) -> list:
    import cv2

    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import SPEECH_TARGET_DBFS, load_audio, normalize_loudness
    from ecmf_edge.audio.prosody import prosody_features
    from ecmf_edge.audio.speech_encoder import SpeechEncoder, combine_pooled
    from ecmf_edge.audio.vad import VoiceActivityDetector
    from ecmf_edge.text.text_encoder import TextEncoder
    from ecmf_edge.vision.alignment import align_face
    from ecmf_edge.vision.face_detector import FaceDetector
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = photo[:480]
    detector = FaceDetector.from_bundle(bundle)
    faces = detector.detect(frame)
    if not faces:
        raise SystemExit("benchmark input: no face found in the reference frame")
    face_encoder = FaceEncoder.from_bundle(bundle)
    face_size = face_encoder.input_size
    crop = align_face(frame, faces[0], size=face_size)
    frame_encoder = FrameEncoder.from_bundle(bundle)
    vad = VoiceActivityDetector.from_bundle(bundle)
    speech_encoder = SpeechEncoder.from_bundle(bundle)  # runs the truncated token graph where the bundle has one
    spec = bundle.spec("audio_encoder")
    full_encoder = SpeechEncoder(bundle.session(spec["file"]), spec)  # all six Whisper layers (the token read at layer 1)
    text_encoder = TextEncoder.from_bundle(bundle)
    speech = load_audio(asset_path("speech_en.wav"))
    one_s, four_s = speech[16000:32000], np.resize(speech, 64000)
    chunk = speech[16000:16512]
    earlier = np.stack([speech_encoder.encode(four_s[i * 16000:(i + 1) * 16000], 16000) for i in range(3)])

    def hop() -> None:
        """What the live loop does every 1 s hop of a long utterance: the new second through the encoder, the
        last four chunks' statistics combined, prosody over the 4 s window."""
        token = speech_encoder.encode(normalize_loudness(four_s[48000:], SPEECH_TARGET_DBFS), 16000)
        combine_pooled(np.concatenate([earlier, token[None]]), np.ones(4), speech_encoder.block)
        prosody_features(normalize_loudness(four_s, SPEECH_TARGET_DBFS), 16000)

    def whole_window_hop() -> None:
        """The same hop when the whole 4 s window went through the encoder every time (before chunking)."""
        window = normalize_loudness(four_s, SPEECH_TARGET_DBFS)
        speech_encoder.encode(window, 16000)
        prosody_features(window, 16000)
    sentence = "I can't believe we finally made it, this is wonderful!"
    return [
        ("face_detector", "640x480 frame, 1 face", lambda: detector.detect(frame)),
        ("face_align", "5-point similarity warp", lambda: align_face(frame, faces[0], size=face_size)),
        ("face_encoder", f"1 face {face_size}x{face_size}", lambda: face_encoder.encode([crop])),
        ("vision_path", "detect + align + face encoder", lambda: face_encoder.encode([align_face(frame, detector.detect(frame)[0], size=face_size)])),
        ("frame_encoder", "640x480 frame -> 224x224", lambda: frame_encoder.encode([frame])),
        ("vad", "one 32 ms chunk", lambda: vad.chunk_probability(chunk)),
        ("audio_encoder_1s", "1 s speech window", lambda: speech_encoder.encode(one_s, 16000)),
        ("audio_encoder_4s", "4 s speech window", lambda: speech_encoder.encode(four_s, 16000)),
        ("audio_encoder_full_1s", "1 s window, all 6 layers", lambda: full_encoder.encode(one_s, 16000)),
        ("audio_encoder_full_4s", "4 s window, all 6 layers", lambda: full_encoder.encode(four_s, 16000)),
        ("prosody_1s", "1 s speech window", lambda: prosody_features(one_s, 16000)),
        ("speech_hop", "1 s hop, 4 s window: new chunk only", hop),
        ("speech_hop_whole_window", "1 s hop, 4 s window re-encoded", whole_window_hop),
        ("text_encoder", "one sentence", lambda: text_encoder.encode(sentence)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="default", help="bundle name or folder")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="inference backend")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bundle precision")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    parser.add_argument("--json", default="bench-out/encoders.json", help="where to write the JSON results")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.runtime.sessions import SessionConfig

    bundle = load_bundle(args.bundle, backend=args.backend, precision=args.precision,
                         session_config=SessionConfig(intra_op_threads=args.threads))
    rss_before = peak_rss_mb()
    results = []
    for name, what, fn in build_cases(bundle):
        row = {"stage": name, "input": what, **measure(fn, args.repeats, args.warmup)}
        row["fps"] = round(1000.0 / row["p50_ms"], 1) if row["p50_ms"] > 0 else None
        results.append(row)
    print_table(results, [("stage", "stage", ""), ("input", "input", ""), ("p50_ms", "p50 ms", ".2f"),
                          ("p95_ms", "p95 ms", ".2f"), ("fps", "fps", ".1f")])
    print(f"peak RSS: {peak_rss_mb()} MiB  ({args.backend}, onnxruntime {ort.__version__}, {bundle.precision}, "
          f"intra-op threads {args.threads or 'auto'})")
    out = write_report(args.json, {
        "benchmark": "encoders",
        "backend": args.backend, "precision": bundle.precision,
        "intra_op_threads": args.threads,
        "bundle": {"root": str(bundle.root), "files": {k: v["sha256"][:16] for k, v in bundle.manifest["files"].items()}},
        "peak_rss_mb": peak_rss_mb(), "peak_rss_mb_after_load": rss_before,
        "results": results,
    })
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
