"""Scaling tables: cost vs frame size, faces per frame, audio window length, transcript length, ASR clip length.

    python benchmarks/scaling.py [--precision fp32] [--repeats 10] [--no-asr] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.modalities import BACKENDS, PRECISIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-asr", action="store_true", help="skip ASR cost vs clip length")
    parser.add_argument("--json", default="bench-out/scaling.json")
    args = parser.parse_args(argv)

    from ecmf_edge.bench.worker import run_task

    result = run_task("scaling", {"config": f"{args.backend}-{args.precision}", "bundle": args.bundle,
                                  "repeats": args.repeats, "warmup": 2, "threads": args.threads, "asr": not args.no_asr})
    for name, rows in result["tables"].items():
        if isinstance(rows, list) and rows:
            print(f"\n{name} ({result['config']}):")
            print_table(rows, [(k, k, ".2f" if isinstance(rows[0][k], float) else "") for k in rows[0]])
        else:
            print(f"\n{name}: {rows}")
    out = write_report(args.json, {"benchmark": "scaling", **result})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
