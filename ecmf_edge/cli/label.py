"""``ecmf-edge label PATH...``: recorded sessions -> timelines, a summary and plots (see :mod:`ecmf_edge.batch.label`)."""
from __future__ import annotations

import argparse
from typing import Any

from ecmf_edge.cli.common import add_llm_switch
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS

__all__ = ["add_parsers"]


def _cmd_label(args: argparse.Namespace) -> int:
    from ecmf_edge.batch.label import LabelOptions, label_paths

    if args.llm:  # an explicit GGUF is checked at start-up, not in each worker at the first utterance
        from ecmf_edge.text.llm_context import check_gguf

        check_gguf(args.llm)
    options = LabelOptions(step=args.step, format=args.format, plot=not args.no_plot, bundle=args.bundle,
                           backend="onnxruntime" if args.backend == "auto" else args.backend, precision=args.precision,
                           use_llm=args.llm is not None, llm_path=args.llm or None, model_threads=args.model_threads)
    summaries = label_paths(args.paths, args.out, options, workers=args.workers, use_ray=args.ray is not None,
                            ray_address=args.ray or None, cpus_per_worker=args.cpus_per_worker,
                            gpus_per_worker=args.gpus_per_worker, progress=not args.quiet)
    failed = [s for s in summaries if s.status != "ok"]
    for s in summaries:
        shown = f"{s.label} {s.confidence:.2f}" if s.status == "ok" and s.label else ("no label" if s.status == "ok" else "FAILED")
        print(f"{shown:<16} {s.duration:7.1f} s  {s.file}" + ("" if s.status == "ok" else f"  ({s.status})"))
    print(f"{len(summaries) - len(failed)} labelled, {len(failed)} failed; written to {args.out}/ (summary.{args.format})")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``ecmf-edge label``."""
    p = sub.add_parser("label", help="label recorded files and folders: a timeline, a plot per file and a summary")
    p.add_argument("paths", nargs="+", metavar="PATH", help="media files, or folders searched recursively for them")
    p.add_argument("--out", default="labels", help="output folder (default ./labels); a re-run skips files done there")
    p.add_argument("--step", type=float, default=1.0, help="timeline step in seconds (default 1)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="timeline and summary format")
    p.add_argument("--no-plot", action="store_true", help="no PNG per file")
    add_llm_switch(p)
    p.add_argument("--workers", type=int, default=1, help="files labelled at once (processes, or Ray actors with --ray)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray: a local instance, or the cluster at ADDRESS ('auto', 'ray://host:10001')")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves per actor (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs Ray reserves per actor (default 0)")
    p.add_argument("--bundle", default="default", help="bundle name or folder")
    p.add_argument("--backend", default="onnxruntime", choices=BACKEND_CHOICES, help="inference backend")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bundle precision")
    p.add_argument("--model-threads", type=int, default=1, help="ONNX Runtime threads per model in each worker")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_label)
