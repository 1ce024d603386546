"""Runs a whole benchmark: replay clip, every configuration, peers, scaling, then JSON, tables and plots.

Each configuration, the peer comparison and the scaling tables run in a child process
of their own (:mod:`ecmf_edge.bench.worker`), one after the other, so their figures do not
disturb each other and peak RSS is per configuration. A configuration that cannot be
loaded (no int8 bundle built, no TensorRT ...) is reported as skipped with the error's
message; one whose child process fails is reported as failed with the last error line.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ecmf_edge.bench.combos import Combo, plan_combos
from ecmf_edge.bench.replay import build_replay_clip
from ecmf_edge.bench.report import SCHEMA, check_report, measured, write_json
from ecmf_edge.bench.system import machine, versions
from ecmf_edge.errors import InputError

__all__ = ["BenchOptions", "BenchResult", "run_bench"]


@dataclass(frozen=True)
class BenchOptions:
    """What a benchmark run measures and where it writes."""

    # Backends and precisions ("all" = every one); unavailable combinations are skipped with the reason.
    backends: tuple[str, ...] = ("all",)
    precisions: tuple[str, ...] = ("all",)
    # Length of the replay clip, seconds (each end-to-end repeat streams all of it at camera rate).
    seconds: float = 10.0
    # Timed end-to-end streams per configuration (after one untimed warm-up stream of warmup_s seconds).
    repeats: int = 3
    warmup_s: float = 2.0
    # Timed calls per stage (fast stages), per slow stage (ASR, LLM), and untimed warm-up calls.
    stage_repeats: int = 30
    heavy_repeats: int = 3
    warmup: int = 3
    # ONNX Runtime threads per model (1 = what the live loop uses).
    threads: int = 1
    # Output folder: bench.json, bench.txt, latency.png, stages.png, logs/.
    out: Path = Path("bench-out")
    # Run the peer comparison, the scaling tables, and the LLM (context enrichment) stage and stream path.
    peers: bool = True
    scaling: bool = True
    llm: bool = False
    # Bundle name or folder.
    bundle: str = "default"
    # Where the replay clip is cached (default: <engines>/bench).
    cache_dir: Path | None = None
    # Longest a child process may run, seconds.
    timeout_s: float = 1800.0
    # Fewer faces and frames in the peer comparison (None = all), fewer scaling repeats.
    peer_faces: int | None = None
    peer_frames: int = 30
    scaling_repeats: int = 10
    # Time ASR against clip length in the scaling tables (a few seconds per length).
    scaling_asr: bool = True
    # Live streams at once to try (1, 2 ... up to this, stopping where the machine no longer keeps up); 0 skips.
    streams: int = 0

    def __post_init__(self) -> None:
        if not 1.0 <= float(self.seconds) <= 600.0:
            raise InputError(f"seconds={self.seconds!r} is invalid: use a clip length from 1 to 600 seconds")
        for name in ("repeats", "stage_repeats", "heavy_repeats", "scaling_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r} is invalid: use a whole number of at least 1")
        from ecmf_edge.bench.streams import MAX_STREAMS

        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or not 0 <= self.streams <= MAX_STREAMS:
            raise InputError(f"streams={self.streams!r} is invalid: use 1 to {MAX_STREAMS} (or 0 to skip)")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise InputError(f"threads={self.threads!r} is invalid: use 1 (default), another count, or 0 for ONNX Runtime's choice")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """A run of a few seconds per configuration: for checking that everything works, not for figures."""
        base = dict(seconds=3.0, repeats=1, warmup_s=1.0, stage_repeats=5, heavy_repeats=1, warmup=1, peer_faces=24,
                    peer_frames=5, scaling_repeats=2, scaling_asr=False)
        base.update(overrides)
        return cls(**base)


@dataclass
class BenchResult:
    """The report and the files written."""

    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _child(task: str, name: str, args: dict[str, Any], logs: Path, timeout: float) -> dict[str, Any]:
    """Run one worker task in a child process; a failure comes back as ``{"status": "failed", "reason"}``."""
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args_path, out_path = Path(tmp) / "args.json", Path(tmp) / "out.json"
        args_path.write_text(json.dumps(args), encoding="utf-8")
        log_path = logs / f"{name}.log"
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                proc = subprocess.run([sys.executable, "-m", "ecmf_edge.bench.worker", task, str(args_path), str(out_path)],
                                      stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"did not finish within {timeout:g} s (see {log_path})"}
        if proc.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            return {"status": "failed", "reason": f"{last} (full log: {log_path})"}
        return json.loads(out_path.read_text(encoding="utf-8"))


def _combo_entry(combo: Combo, result: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": combo.key, "backend": combo.backend, "precision": combo.precision}
    if combo.skip_reason:
        entry.update(status="skipped", reason=combo.skip_reason)
        if combo.same_as:
            entry["same_as"] = combo.same_as
        return entry
    entry.update(result or {"status": "failed", "reason": "no result"})
    return entry


def _scaling_config(done: list[dict[str, Any]]) -> str | None:
    keys = [c["key"] for c in done if c["backend"] != "tensorrt"]
    for preferred in ("onnxruntime-int8", "onnxruntime-fp32"):
        if preferred in keys:
            return preferred
    return keys[0] if keys else None


def run_bench(options: BenchOptions | None = None, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run the benchmark and write ``bench.json``, ``bench.txt`` and the plots into ``options.out``.

    Raises:
        InputError: an unknown backend or precision, or an invalid option.
    """
    from ecmf_edge.bench.plots import cpu_share_png, latency_cdf_png, stage_bars_png, streams_png
    from ecmf_edge.bench.report import format_tables
    from ecmf_edge.errors import DependencyError

    opts = options or BenchOptions()
    say = progress or (lambda message: None)
    started = time.perf_counter()
    combos = plan_combos(opts.backends, opts.precisions)
    out = Path(opts.out)
    logs = out / "logs"
    say(f"building the replay clip ({opts.seconds:g} s)")
    clip = build_replay_clip(opts.seconds, opts.cache_dir)
    clip_args = {"video": str(clip.video), "audio": str(clip.audio), "seconds": clip.seconds, "fps": clip.fps,
                 "size": list(clip.size), "sha256": clip.sha256}
    common = {"clip": clip_args, "bundle": opts.bundle, "threads": opts.threads, "llm": opts.llm}
    entries = []
    for combo in combos:
        result = None
        if combo.skip_reason is None:
            say(f"measuring {combo.key}")
            result = _child("combo", combo.key, {**common, "backend": combo.backend, "precision": combo.precision,
                                                 "repeats": opts.repeats, "warmup_s": opts.warmup_s,
                                                 "stage_repeats": opts.stage_repeats, "heavy_repeats": opts.heavy_repeats,
                                                 "warmup": opts.warmup}, logs, opts.timeout_s)
        entry = _combo_entry(combo, result)
        if entry["status"] != "measured":
            say(f"  {combo.key}: {entry['status']}: {entry['reason']}")
        entries.append(entry)
    done = [e for e in entries if e["status"] == "measured"]
    bundles = {e["key"]: e.pop("bundle") for e in done}
    peers: dict[str, Any] = {"skipped": "turned off (--no-peers)"}
    ort_configs = [e["key"] for e in done if e["backend"] == "onnxruntime"]
    if opts.peers and ort_configs:
        say("comparing with peer packages")
        peers = _child("peers", "peers", {**common, "configs": ort_configs, "max_faces": opts.peer_faces,
                                          "frames": opts.peer_frames}, logs, opts.timeout_s)
        if peers.get("status") == "failed":
            peers = {"skipped": f"failed: {peers['reason']}"}
    elif opts.peers:
        peers = {"skipped": "no onnxruntime configuration was measured"}
    scaling: dict[str, Any] = {"skipped": "turned off (--no-scaling)"}
    config = _scaling_config(done)
    if opts.scaling and config is not None:
        say(f"scaling tables ({config})")
        scaling = _child("scaling", "scaling", {**common, "config": config, "repeats": opts.scaling_repeats,
                                                "warmup": min(opts.warmup, 2), "asr": opts.scaling_asr}, logs,
                         opts.timeout_s)
        if scaling.get("status") == "failed":
            scaling = {"skipped": f"failed: {scaling['reason']}"}
    elif opts.scaling:
        scaling = {"skipped": "no configuration was measured"}
    streams: dict[str, Any] = {"skipped": "not asked for (--streams N)"}
    if opts.streams and config is not None:
        say(f"streams at once, up to {opts.streams} ({config})")
        streams = _child("streams", "streams", {**common, "config": config, "streams": opts.streams}, logs,
                         opts.timeout_s)
        if streams.get("status") == "failed":
            streams = {"skipped": f"failed: {streams['reason']}"}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    settings["backends"], settings["precisions"] = list(opts.backends), list(opts.precisions)
    report: dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(), "settings": settings, "clip": clip.to_dict(),
        "bundles": bundles, "configurations": entries, "peers": peers, "scaling": scaling, "streams": streams,
    }
    files: dict[str, Path] = {}
    if measured(report):
        try:
            files["latency_png"] = latency_cdf_png({c["key"]: c["end_to_end"]["latency_samples_ms"]
                                                    for c in measured(report)}, out / "latency.png")
            files["stages_png"] = stage_bars_png({c["key"]: {n: (s["p50_ms"], s["p95_ms"]) for n, s in c["stages"].items()
                                                             if "p50_ms" in s} for c in measured(report)},
                                                 out / "stages.png")
            shares = {c["key"]: c["end_to_end"]["cpu_per_stream_s"] for c in measured(report)
                      if c["end_to_end"].get("cpu_per_stream_s")}
            if shares:
                files["cpu_png"] = cpu_share_png(shares, out / "cpu.png")
            if streams.get("rows"):
                files["streams_png"] = streams_png(streams, out / "streams.png")
        except DependencyError as exc:  # the tables and JSON do not need matplotlib
            report["plots_skipped"] = str(exc)
    report["plots"] = {k: p.name for k, p in files.items()}
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    check_report(report)
    files["json"] = write_json(report, out / "bench.json")
    files["text"] = out / "bench.txt"
    files["text"].write_text(format_tables(report) + "\n", encoding="utf-8")
    return BenchResult(report=report, files=files)

