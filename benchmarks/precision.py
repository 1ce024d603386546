"""fp32 vs fp16 vs int8 bundles on the CPU: per model median/p95 latency, speed-up, size, peak RSS.

All precisions are measured in the same run, each (model, precision) in its own child
process so its peak RSS is its own. Real inputs: the astronaut face crop (face encoder) and
the astronaut photograph in a 640x480 frame (frame encoder). Missing int8/fp16 bundles are
built first with ``quantize_bundle``. A model that a bundle keeps in fp32 (failed gate) is
reported with its actual precision.

    python benchmarks/precision.py [--bundle default] [--repeats 100] [--threads 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import numpy as np

from _common import measure, peak_rss_mb, print_table, write_report

MODELS = ("face_encoder", "frame_encoder")
PRECISIONS = ("fp32", "fp16", "int8")


def child(bundle_name: str, precision: str, model: str, repeats: int, warmup: int, threads: int) -> dict:
    """Time one model of one bundle in this process; returns the row."""
    import cv2

    from ecmf_edge._assets import asset_path
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.runtime.sessions import SessionConfig
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

    rss_before = peak_rss_mb()
    bundle = load_bundle(bundle_name, precision=precision, session_config=SessionConfig(intra_op_threads=threads))
    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    spec = bundle.spec(model)
    if model == "face_encoder":
        encoder = FaceEncoder.from_bundle(bundle)
        crop = photo[60:200, 160:260].copy()
        fn, what = (lambda: encoder.encode([crop])), "1 face crop -> 64x64"
    else:
        frame = np.full((480, 640, 3), 90, np.uint8)
        frame[:, 64:576] = photo[:480]
        encoder = FrameEncoder.from_bundle(bundle)
        fn, what = (lambda: encoder.encode([frame])), "640x480 frame -> 224x224"
    stats = measure(fn, repeats, warmup)
    return {"model": model, "bundle": precision, "precision": spec["precision"], "input": what, **stats,
            "size_mb": round(bundle.manifest["files"][spec["file"]]["bytes"] / 2**20, 2), "peak_rss_mb": peak_rss_mb(),
            "rss_model_mb": round(peak_rss_mb() - rss_before, 1)}


def ensure_bundles(bundle_name: str) -> None:
    """Build the int8/fp16 bundles from the fp32 one when they are missing."""
    from ecmf_edge.export.quantize import quantize_bundle
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
            base = row["median_ms"] if precision == "fp32" else base
            row["speedup"] = round(base / row["median_ms"], 2) if base and row["median_ms"] else None
            rows.append(row)
    print_table(rows, [("model", "model", ""), ("bundle", "bundle", ""), ("precision", "runs as", ""),
                       ("median_ms", "median ms", ".3f"), ("p95_ms", "p95 ms", ".3f"), ("speedup", "speed-up", ".2f"),
                       ("size_mb", "size MiB", ".2f"), ("peak_rss_mb", "peak RSS MiB", ".1f"),
                       ("rss_model_mb", "+RSS model MiB", ".1f")])
    out = write_report(args.json, {
        "benchmark": "precision",
        "versions": {"ecmf_edge": __version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
        "backend": "onnxruntime", "providers": ["CPUExecutionProvider"], "intra_op_threads": args.threads,
        "repeats": args.repeats, "warmup": args.warmup,
        "notes": ("speed-up = fp32 median / this median; peak RSS of a child process that loads the bundle and runs one "
                  "model; +RSS model = growth of the peak RSS from loading the session and running it"),
        "results": rows,
    })
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
