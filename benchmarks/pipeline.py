"""End to end + per stage, for every backend x precision (``ecmf-edge bench`` without peers and scaling).

The replay clip (real frames + speech, see ``ecmf_edge/bench/replay.py``) plays through the
real stream loop at camera rate; each configuration runs in its own child process.

    python benchmarks/pipeline.py [--backend all] [--precision all] [--seconds 10] [--repeats 3]
                                  [--llm] [--quick] [--out bench-out/pipeline]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help="auto/onnxruntime/tensorrt/all (repeatable)")
    parser.add_argument("--precision", action="append", help="fp32/fp16/int8/all (repeatable)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--llm", action="store_true", help="also run the local LLM (off by default, as everywhere)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out/pipeline")
    args = parser.parse_args(argv)

    from ecmf_edge.bench.report import format_tables
    from ecmf_edge.bench.runner import BenchOptions, run_bench

    given = dict(backends=tuple(args.backend or ["all"]), precisions=tuple(args.precision or ["all"]),
                 seconds=args.seconds, repeats=args.repeats, threads=args.threads, llm=args.llm,
                 peers=False, scaling=False, out=Path(args.out))
    options = BenchOptions.quick(**given) if args.quick else BenchOptions(**given)
    result = run_bench(options, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_tables(result.report))
    print(f"written: {', '.join(str(p) for p in result.files.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
