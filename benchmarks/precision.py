"""fp32 vs fp16 vs int8 bundles on the CPU: per model and whole pipeline, median/p95 latency,
speed-up, size, peak RSS; a table, JSON and a bar chart PNG.

All precisions are measured in the same run, each (model, precision) in its own child
process so its peak RSS is its own. Real inputs: the astronaut face crop (face encoder),
the astronaut photograph in a 640x480 frame (frame encoder), a 4 s window of the packaged
speech (speech encoder), a spoken sentence's transcript (text encoder); "pipeline" is one
full update: face detection + alignment + face encoder, frame encoder, speech encoder with
prosody, text encoder and fusion head. Missing int8/fp16 bundles are built first with
``quantize_bundle``. A model that a bundle keeps in fp32 (failed gate) is reported with its
actual precision.

    python benchmarks/precision.py [--bundle default] [--repeats 100] [--threads 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.stats import measure
from ecmf_edge.bench.system import peak_rss_mb

MODELS = ("face_encoder", "frame_encoder", "audio_encoder", "text_encoder", "text_branch", "pipeline")
PRECISIONS = ("fp32", "fp16", "int8")


def child(bundle_name: str, precision: str, model: str, repeats: int, warmup: int, threads: int) -> dict:
    """Time one model of one bundle in this process; returns the row."""
    import cv2

    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.audio.speech_encoder import SpeechEncoder
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.runtime.sessions import SessionConfig
    from ecmf_edge.text.text_encoder import TextEncoder
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

    rss_before = peak_rss_mb()
    bundle = load_bundle(bundle_name, precision=precision, session_config=SessionConfig(intra_op_threads=threads))
    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = photo[:480]
    speech = load_audio(asset_path("speech_en.wav"))[:64000]
    sentence = "Hello there. I am really happy to see you again today."
    if model == "face_encoder":
        encoder = FaceEncoder.from_bundle(bundle)
        crop = photo[60:200, 160:260].copy()
        fn, what = (lambda: encoder.encode([crop])), "1 face crop -> 64x64"
    elif model == "frame_encoder":
        encoder = FrameEncoder.from_bundle(bundle)
        fn, what = (lambda: encoder.encode([frame])), "640x480 frame -> 224x224"
    elif model == "audio_encoder":
        encoder = SpeechEncoder.from_bundle(bundle)
        fn, what = (lambda: encoder.encode(speech, 16000)), "4 s speech window"
    elif model == "text_encoder":
        encoder = TextEncoder.from_bundle(bundle)
        fn, what = (lambda: encoder.encode(sentence)), "12-word sentence"
    elif model == "text_branch":
        from ecmf_edge.text.text_branch import TextBranch

        branch = TextBranch.from_bundle(bundle)
        fn, what = (lambda: branch(sentence, ("How was your day?",))), "12-word sentence + one earlier utterance"
    else:
        fn, what = _pipeline(bundle, frame, speech, sentence), "640x480 frame + 4 s speech + sentence -> label"
    spec = bundle.spec("fusion_head" if model == "pipeline" else model)
    stats = measure(fn, repeats, warmup)
    if model == "pipeline":
        runs_as = "/".join(sorted({bundle.spec(k)["precision"] for k in _PIPELINE_MODELS}))
        size = sum(bundle.manifest["files"][f]["bytes"] for k in _PIPELINE_MODELS for f in bundle.model_files(k))
    else:
        runs_as, size = spec["precision"], bundle.manifest["files"][spec["file"]]["bytes"]
    return {"model": model, "bundle": precision, "precision": runs_as, "input": what, **stats,
            "size_mb": round(size / 2**20, 2), "peak_rss_mb": peak_rss_mb(),
            "rss_model_mb": round(peak_rss_mb() - rss_before, 1)}


_PIPELINE_MODELS = ("face_detector", "face_encoder", "frame_encoder", "audio_encoder", "speech_head", "text_branch", "fusion_head")


def _pipeline(bundle, frame, speech, sentence):
    """One full update of every model the live loop runs, as one callable."""
    from ecmf_edge.audio.prosody import prosody_features
    from ecmf_edge.audio.speech_branch import SpeechBranch
    from ecmf_edge.audio.speech_encoder import SpeechEncoder, audio_token
    from ecmf_edge.runtime.fusion_head import FusionHead
    from ecmf_edge.text.text_branch import TextBranch
    from ecmf_edge.text.text_encoder import TextEncoder
    from ecmf_edge.vision.alignment import align_face
    from ecmf_edge.vision.face_detector import FaceDetector
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

    detector, faces, frames = FaceDetector.from_bundle(bundle), FaceEncoder.from_bundle(bundle), FrameEncoder.from_bundle(bundle)
    speech_encoder, head = SpeechEncoder.from_bundle(bundle), FusionHead.from_bundle(bundle)
    speech_branch, text_branch = SpeechBranch.from_bundle(bundle), TextBranch.from_bundle(bundle)
    text_encoder = None if text_branch is not None else TextEncoder.from_bundle(bundle)

    def step():
        found = detector.detect(frame, max_faces=1)
        face = faces.encode([align_face(frame, found[0], size=64)]).features[0] if found else None
        scene = frames.encode([frame])[0]
        audio = audio_token(speech_encoder.encode(speech, 16000), prosody_features(speech))
        if speech_branch is not None:
            audio = speech_branch(audio, observe=False)[0]
        if text_branch is not None:
            text = text_branch(sentence)[0]
        else:
            text = np.concatenate([text_encoder.encode(sentence)] * 2)
        return head.predict({"frame": scene, "face": face, "audio": audio, "text": text})

    return step


def ensure_bundles(bundle_name: str) -> None:
    """Build the int8/fp16 bundles from the fp32 one when they are missing."""
    from ecmf_edge.build.quantize import quantize_bundle
    from ecmf_edge.runtime.bundle import MANIFEST, bundle_dir, load_bundle

    for precision in ("fp16", "int8"):
        target = bundle_dir(bundle_name, "onnxruntime", precision)
        if not (target / MANIFEST).is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                quantize_bundle(load_bundle(bundle_name), precision, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="default", help="bundle name (under $ECMF_EDGE_ENGINES)")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    parser.add_argument("--json", default="bench-out/precision.json", help="where to write the JSON results")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        ensure_bundles(args.bundle)
        return 0
    if args.child:
        print(json.dumps(child(args.bundle, args.child[1], args.child[0], args.repeats, args.warmup, args.threads)))
        return 0

    import onnxruntime as ort

    from ecmf_edge import __version__

    # In a child process too: Linux carries a parent's peak RSS over fork/exec into the children.
    subprocess.run([sys.executable, __file__, "--bundle", args.bundle, "--prepare"], check=True)
    rows = []
    for model in MODELS:
        base = None
        for precision in PRECISIONS:
            done = subprocess.run([sys.executable, __file__, "--bundle", args.bundle, "--repeats", str(args.repeats),
                                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--child", model, precision],
                                  capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            base = row["p50_ms"] if precision == "fp32" else base
            row["speedup"] = round(base / row["p50_ms"], 2) if base and row["p50_ms"] else None
            rows.append(row)
    print_table(rows, [("model", "model", ""), ("bundle", "bundle", ""), ("precision", "runs as", ""),
                       ("p50_ms", "p50 ms", ".3f"), ("p95_ms", "p95 ms", ".3f"), ("speedup", "speed-up", ".2f"),
                       ("size_mb", "size MiB", ".2f"), ("peak_rss_mb", "peak RSS MiB", ".1f"),
                       ("rss_model_mb", "+RSS model MiB", ".1f")])
    from pathlib import Path

    from ecmf_edge.bench.plots import stage_bars_png

    chart = stage_bars_png({p: {r["model"]: (r["p50_ms"], r["p95_ms"]) for r in rows if r["bundle"] == p} for p in PRECISIONS},
                           Path(args.json).with_suffix(".png"), "ONNX Runtime CPU: latency per model and precision (p50, p95)")
    out = write_report(args.json, {
        "benchmark": "precision",
        "versions": {"ecmf_edge": __version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
        "backend": "onnxruntime", "providers": ["CPUExecutionProvider"], "intra_op_threads": args.threads,
        "repeats": args.repeats, "warmup": args.warmup,
        "notes": ("speed-up = fp32 median / this median; peak RSS of a child process that loads the bundle and runs one "
                  "model; +RSS model = growth of the peak RSS from loading the session and running it"),
        "results": rows, "chart": str(chart),
    })
    print(f"written: {out}, {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
