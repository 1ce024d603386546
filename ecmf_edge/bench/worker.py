"""Child-process entry of the benchmark: one task per process, so peak RSS and CPU time are its own.

    python -m ecmf_edge.bench.worker TASK ARGS.json OUT.json

Tasks: ``combo`` (stages + end to end of one backend x precision), ``peers`` and
``scaling``. The result (or ``{"status": "skipped", "reason": ...}`` when the
configuration cannot be loaded) is written to OUT.json.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ecmf_edge.bench.replay import ReplayClip
from ecmf_edge.bench.system import peak_rss_mb
from ecmf_edge.errors import EcmfError

__all__ = ["main", "run_task"]

logger = logging.getLogger("ecmf_edge")


def _clip(args: dict[str, Any]) -> ReplayClip:
    c = args["clip"]
    return ReplayClip(video=Path(c["video"]), audio=Path(c["audio"]), seconds=float(c["seconds"]), fps=float(c["fps"]),
                      size=tuple(c["size"]), sha256=dict(c["sha256"]))


def _recognizer(backend: str, precision: str, args: dict[str, Any]):
    from ecmf_edge.recognizer import Recognizer

    return Recognizer(backend=backend, precision=precision, bundle=args.get("bundle", "default"),
                      use_llm=bool(args.get("llm", False)), model_threads=int(args.get("threads", 1)))


def bundle_facts(bundle: Any) -> dict[str, Any]:
    """Root, precision and every file's sha256 from a loaded bundle's manifest."""
    files = bundle.manifest.get("files", {})
    return {"root": str(bundle.root), "name": bundle.name, "precision": bundle.precision,
            "version": bundle.manifest.get("version"),
            "files": {name: entry.get("sha256") for name, entry in sorted(files.items())}}


def _combo(args: dict[str, Any]) -> dict[str, Any]:
    from ecmf_edge.bench.endtoend import measure_end_to_end
    from ecmf_edge.bench.stages import measure_stages

    clip = _clip(args)
    try:
        recognizer = _recognizer(args["backend"], args["precision"], args)
    except (EcmfError, ImportError) as exc:
        return {"status": "skipped", "reason": str(exc)}
    with recognizer:
        out: dict[str, Any] = {"status": "measured", "bundle": bundle_facts(recognizer.bundle)}
        out["end_to_end"] = measure_end_to_end(recognizer, clip, repeats=int(args["repeats"]),
                                               warmup_s=float(args["warmup_s"]))
        out["peak_rss_mb_stream"] = peak_rss_mb()
        out["stages"] = measure_stages(recognizer, clip, repeats=int(args["stage_repeats"]), warmup=int(args["warmup"]),
                                       heavy_repeats=int(args["heavy_repeats"]), llm=bool(args.get("llm", False)))
        out["providers"] = sorted({p for s in _sessions(recognizer.bundle) for p in s}) or None
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _sessions(bundle: Any) -> list[list[str]]:
    """Execution providers of the sessions the bundle opened so far (best effort)."""
    sessions = getattr(bundle, "_sessions", {}) or {}
    found = []
    for session in sessions.values():
        get = getattr(session, "get_providers", None)
        if callable(get):
            found.append(list(get()))
    return found


def _peers(args: dict[str, Any]) -> dict[str, Any]:
    from ecmf_edge.bench.peers import measure_peers
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.runtime.sessions import SessionConfig

    bundles = {}
    for key in args["configs"]:
        backend, precision = key.split("-", 1)
        bundles[key] = load_bundle(args.get("bundle", "default"), backend=backend, precision=precision,
                                   session_config=SessionConfig(intra_op_threads=int(args.get("threads", 1))))
    out = measure_peers(bundles, _clip(args), max_faces=args.get("max_faces"), frames=int(args.get("frames", 30)))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _scaling(args: dict[str, Any]) -> dict[str, Any]:
    from ecmf_edge.bench.scaling import measure_scaling

    backend, precision = args["config"].split("-", 1)
    with _recognizer(backend, precision, {**args, "llm": False}) as recognizer:
        tables = measure_scaling(recognizer, repeats=int(args["repeats"]), warmup=int(args["warmup"]),
                                 asr=bool(args.get("asr", True)))
    return {"config": args["config"], "tables": tables}


def _streams(args: dict[str, Any]) -> dict[str, Any]:
    from ecmf_edge.bench.streams import measure_streams

    backend, precision = args["config"].split("-", 1)
    with _recognizer(backend, precision, args) as recognizer:
        result = measure_streams(recognizer, _clip(args), int(args["streams"]))
    return {"config": args["config"], **result}


_TASKS = {"combo": _combo, "peers": _peers, "scaling": _scaling, "streams": _streams}


def run_task(task: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one task in this process and return its result."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _TASKS[task](args)
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    notes = sorted({str(w.message) for w in caught})
    if notes:
        result["warnings"] = notes
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in _TASKS:
        print(f"usage: python -m ecmf_edge.bench.worker {{{','.join(_TASKS)}}} ARGS.json OUT.json", file=sys.stderr)
        return 2
    task, args_path, out_path = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    result = run_task(task, args)
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
