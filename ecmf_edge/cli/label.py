"""``ecmf-edge label PATH...``: recorded sessions -> timelines, a summary and plots (see :mod:`ecmf_edge.batch.label`)."""
from __future__ import annotations

import argparse
from typing import Any

from ecmf_edge.cli.common import add_llm_switch, given, with_default
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS

__all__ = ["add_parsers", "label_options"]

_LABEL = "ecmf_edge.batch.label:LabelOptions"
_PATHS = "ecmf_edge.batch.label:label_paths"


def label_options(args: argparse.Namespace):
    """The LabelOptions of ``ecmf-edge label`` (only the options given; the rest: LabelOptions')."""
    from ecmf_edge.batch.label import LabelOptions

    chosen = given(args, step="step", format="format", bundle="bundle", backend="backend", precision="precision",
                   model_threads="model_threads")
    if chosen.get("backend") == "auto":  # files are labelled on ONNX Runtime unless TensorRT is asked for
        chosen["backend"] = "onnxruntime"
    return LabelOptions(**chosen, plot=not args.no_plot, use_llm=args.llm is not None, llm_path=args.llm or None)


def _cmd_label(args: argparse.Namespace) -> int:
    from ecmf_edge.batch.label import label_paths

    if args.llm:  # an explicit GGUF is checked at start-up, not in each worker at the first utterance
        from ecmf_edge.text.llm_context import check_gguf

        check_gguf(args.llm)
    options = label_options(args)
    summaries = label_paths(args.paths, args.out, options, use_ray=args.ray is not None, ray_address=args.ray or None,
                            progress=not args.quiet,
                            **given(args, workers="workers", cpus_per_worker="cpus_per_worker", gpus_per_worker="gpus_per_worker"))
    failed = [s for s in summaries if s.status != "ok"]
    for s in summaries:
        shown = f"{s.label} {s.confidence:.2f}" if s.status == "ok" and s.label else ("no label" if s.status == "ok" else "FAILED")
        print(f"{shown:<16} {s.duration_s:7.1f} s  {s.file}" + ("" if s.status == "ok" else f"  ({s.status})"))
    skipped = getattr(summaries, "skipped", 0)
    print(f"{len(summaries) - len(failed) - skipped} labelled, {skipped} skipped (done before), {len(failed)} failed; "
          f"written to {args.out}/ (summary.{options.format})")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``ecmf-edge label``."""
    p = sub.add_parser("label", help="label recorded files and folders: a timeline, a plot per file and a summary")
    p.add_argument("paths", nargs="+", metavar="PATH", help="media files, or folders searched recursively for them")
    p.add_argument("--out", default="labels", help="output folder (default ./labels); a re-run skips files done there")
    p.add_argument("--step", type=float, help=with_default("timeline step in seconds", _LABEL, "step"))
    p.add_argument("--format", choices=("csv", "jsonl"), help=with_default("timeline and summary format", _LABEL, "format"))
    p.add_argument("--no-plot", action="store_true", help="no PNG per file")
    add_llm_switch(p)
    p.add_argument("--workers", type=int,
                   help=with_default("files labelled at once (processes, or Ray actors with --ray)", _PATHS, "workers"))
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray: a local instance, or the cluster at ADDRESS ('auto', 'ray://host:10001')")
    p.add_argument("--cpus-per-worker", type=float, help=with_default("CPUs Ray reserves per actor", _PATHS, "cpus_per_worker"))
    p.add_argument("--gpus-per-worker", type=float, help=with_default("GPUs Ray reserves per actor", _PATHS, "gpus_per_worker"))
    p.add_argument("--bundle", help=with_default("bundle name or folder", _LABEL, "bundle"))
    p.add_argument("--backend", choices=BACKEND_CHOICES, help=with_default("inference backend; auto = onnxruntime", _LABEL, "backend"))
    p.add_argument("--precision", choices=PRECISIONS, help=with_default("bundle precision", _LABEL, "precision"))
    p.add_argument("--model-threads", type=int,
                   help=with_default("ONNX Runtime threads per model in each worker", _LABEL, "model_threads"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_label)
