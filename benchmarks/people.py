"""Several people: the face path's cost per frame over a 30 fps clip (0-8 faces, detection on every frame
vs amortised by tracking) and id switches on moving, crossing and returning people.

    python benchmarks/people.py [--backend onnxruntime] [--precision fp32] [--threads 1] [--frames 90] [--json bench-out/people.json]

The face path is the stream's own (``ecmf_edge.vision.face_path.FacePath``): finding the faces
(full detection or tracking), aligning them and encoding the faces that are due. "detect every frame"
is how the stream worked before tracking: every face detected and encoded on every frame.
"""
from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime", choices=BACKEND_CHOICES, help="inference backend")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model (the stream's default: 1)")
    parser.add_argument("--frames", type=int, default=90, help="frames per clip (30 fps)")
    parser.add_argument("--json", default="bench-out/people.json")
    args = parser.parse_args(argv)

    from ecmf_edge import Recognizer
    from ecmf_edge.bench.scaling import people_cost, people_tracking

    with Recognizer(bundle=args.bundle, precision=args.precision, backend=args.backend, model_threads=args.threads,
                    text=False, use_llm=False) as rec:
        detector, encoder = rec.models.get("face_detector"), rec.models.get("face_encoder")
        people_cost(detector, encoder, frames=10)  # warm-up: first runs allocate
        cost = people_cost(detector, encoder, frames=args.frames)
        tracking = people_tracking(detector, encoder)
    print(f"\nface path per frame, averaged over a {args.frames}-frame 30 fps clip ({args.backend}, {args.precision}, "
          f"{args.threads} thread(s)):")
    print_table(cost, [(k, k, ".2f" if isinstance(cost[0][k], float) else "") for k in cost[0]])
    print("\ntracking moving people:")
    print_table(tracking, [(k, k, "") for k in tracking[0]])
    out = write_report(args.json, {"benchmark": "people", "backend": args.backend, "precision": args.precision, "threads": args.threads,
                                   "cost": cost, "tracking": tracking, "peak_rss_mb": peak_rss_mb()})
    print(f"\npeak RSS {peak_rss_mb():.0f} MiB; written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
