"""Peer comparison: per-face / per-frame latency and top-1 agreement with other expression packages.

Runs fer (its own ``FER`` class with its TFLite model) on the same real face crops and
replay frames as our face path of each given precision, and lists the peers that cannot
run here with the reason (see ``ecmf_edge/bench/peers.py``).

    python benchmarks/peers.py [--backend onnxruntime] [--precision fp32 --precision int8] [--faces N] [--frames 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import write_report
from ecmf_edge.modalities import BACKENDS, PRECISIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="our inference backend")
    parser.add_argument("--precision", action="append", choices=PRECISIONS,
                        help="our precisions to compare (default: every built one)")
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--seconds", type=float, default=10.0, help="replay clip length (frames are taken from it)")
    parser.add_argument("--faces", type=int, help="use only the first N face crops (default all 412)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--json", default="bench-out/peers.json")
    args = parser.parse_args(argv)

    from ecmf_edge.bench.replay import build_replay_clip
    from ecmf_edge.bench.report import peer_rows, text_table
    from ecmf_edge.bench.worker import run_task
    from ecmf_edge.runtime.bundle import MANIFEST, bundle_dir

    precisions = args.precision or [p for p in PRECISIONS if (bundle_dir(args.bundle, args.backend, p) / MANIFEST).is_file()]
    clip = build_replay_clip(args.seconds)
    task_args = {"clip": {"video": str(clip.video), "audio": str(clip.audio), "seconds": clip.seconds, "fps": clip.fps,
                          "size": list(clip.size), "sha256": clip.sha256},
                 "bundle": args.bundle, "configs": [f"{args.backend}-{p}" for p in precisions],
                 "max_faces": args.faces, "frames": args.frames}
    result = run_task("peers", task_args)
    print(text_table(*peer_rows({"peers": result})))
    for peer in result["unavailable"]:
        print(f"not run: {peer['name']}: {peer['reason']}")
    out = write_report(args.json, {"benchmark": "peers", "clip": clip.to_dict(), **result})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
