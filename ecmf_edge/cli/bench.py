"""``ecmf-edge bench``: latency per stage and end to end, for every backend x precision, plus peers and scaling.

Writes ``bench.json`` (machine, versions, bundle sha256s, every figure), ``bench.txt``
(the tables printed), ``latency.png`` and ``stages.png`` into ``--out``. Combinations that
are not available here are listed as skipped with the reason. ``--quick`` is a smoke run
of a few seconds per configuration; its figures are not meant for comparison.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_bench_parser"]


def _options(args: argparse.Namespace):
    from ecmf_edge.bench.runner import BenchOptions

    given: dict[str, Any] = dict(backends=tuple(args.backend or ["all"]), precisions=tuple(args.precision or ["all"]),
                                 out=Path(args.out), peers=not args.no_peers, scaling=not args.no_scaling,
                                 llm=args.llm, bundle=args.bundle, threads=args.threads)
    if args.streams is not None:
        from ecmf_edge.bench.streams import MAX_STREAMS
        from ecmf_edge.errors import InputError

        if not 1 <= args.streams <= MAX_STREAMS:
            raise InputError(f"--streams {args.streams} is invalid: use 1 to {MAX_STREAMS} live streams at once")
        given["streams"] = args.streams
    if args.seconds is not None:
        given["seconds"] = args.seconds
    if args.repeats is not None:
        given["repeats"] = args.repeats
    return BenchOptions.quick(**given) if args.quick else BenchOptions(**given)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ecmf_edge.bench.readme import render_section, update_file
    from ecmf_edge.bench.report import format_tables
    from ecmf_edge.bench.runner import run_bench

    options = _options(args)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run_bench(options, progress=progress)
    print(format_tables(result.report))
    if args.readme:
        update_file(args.readme, render_section(result.report, json_name=str(result.files["json"])))
        result.files["readme"] = Path(args.readme)
    print("\nwritten: " + ", ".join(str(p) for p in result.files.values()), file=sys.stderr)
    return 0


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``ecmf-edge bench``."""
    from ecmf_edge.cli.common import add_retired_no_llm

    p = sub.add_parser("bench", help="measure latency per stage and end to end, against peers, with plots",
                       description="Measure latency per stage and end to end for every backend x precision, "
                                   "compare with peer packages, and write JSON, tables and PNG plots.")
    what = p.add_argument_group("what to measure")
    what.add_argument("--backend", action="append", metavar="NAME",
                      help="auto, onnxruntime, tensorrt or all (default all); repeatable or comma-separated")
    what.add_argument("--precision", action="append", metavar="NAME",
                      help="fp32, fp16, int8 or all (default all); repeatable or comma-separated")
    what.add_argument("--bundle", default="default", help="bundle name or folder")
    what.add_argument("--no-peers", action="store_true", help="skip the comparison with other packages")
    what.add_argument("--no-scaling", action="store_true", help="skip the scaling tables")
    what.add_argument("--llm", action="store_true",
                      help="also time the LLM stage and run it in the streams (off by default: the shipped models do "
                           "not read its answer)")
    add_retired_no_llm(what)
    what.add_argument("--streams", type=int, metavar="N",
                      help="also run 1, 2 ... N live streams at once and report how many this machine holds")
    how = p.add_argument_group("how")
    how.add_argument("--seconds", type=float, metavar="S", help="replay clip length (default 10; 3 with --quick)")
    how.add_argument("--repeats", type=int, metavar="N", help="timed end-to-end streams per configuration (default 3; 1 with --quick)")
    how.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model (default 1, as the live loop)")
    how.add_argument("--quick", action="store_true", help="a smoke run: short clip, few repeats (figures not comparable)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="bench-out", metavar="DIR", help="folder for bench.json, bench.txt and the PNGs")
    out.add_argument("--readme", metavar="FILE.md",
                     help="also write the results section between <!-- bench:begin --> and <!-- bench:end --> in FILE")
    p.set_defaults(func=_cmd_bench)
    return p
