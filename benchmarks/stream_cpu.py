"""CPU per stream, step by step: what each way of spending less CPU saves, and whether the labels change.

    python benchmarks/stream_cpu.py [--seconds 10] [--repeats 2] [--json bench-out/stream_cpu.json]

The replay clip (real frames + speech, ``ecmf_edge/bench/replay.py``) plays in real time through
the stream loop (fp32, ONNX Runtime, 1 thread per model) once per configuration, each change added
to the one before (the last step, a slower scene encoder, starts from the defaults again); the LLM is off except in one step (the shipped text branch does not read its
answer, so the stream does not run it: that step shows it costs nothing). Per configuration: CPU-seconds
per stream-second by stage and in total, capture -> event p95, events/s, dropped frames, and the
share of events whose label equals the first configuration's at the same stream time. A second
run of the first configuration gives the agreement two identical runs reach (real-time runs are
not bit-identical: which frame a tick sees depends on timing), so a change is judged against it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb
from ecmf_edge.modalities import BACKENDS, PRECISIONS


def agreement(a: list, b: list) -> float | None:
    """Share of stream times present in both runs whose labels are equal."""
    first = dict((round(t, 1), label) for t, label in a)
    pairs = [(first[round(t, 1)], label) for t, label in b if round(t, 1) in first]
    return round(sum(x == y for x, y in pairs) / len(pairs), 3) if pairs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="inference backend")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bundle precision")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--face-hz", type=float, default=15.0, help="face path rate of the fifth step")
    parser.add_argument("--scene-change", type=float, default=1.0, help="scene reuse threshold of the fifth step")
    parser.add_argument("--scene-hz", type=float, default=2.5, help="scene encoder rate of the last step (default: 5)")
    parser.add_argument("--json", default="bench-out/stream_cpu.json")
    args = parser.parse_args(argv)

    from ecmf_edge import Recognizer
    from ecmf_edge.bench.endtoend import measure_end_to_end
    from ecmf_edge.bench.replay import build_replay_clip
    from ecmf_edge.stream.options import StreamOptions
    from ecmf_edge.text.asr import AsrOptions

    clip = build_replay_clip(args.seconds)
    base = StreamOptions()
    steps = [
        ("former: ASR with word times, 30 s window", AsrOptions(word_timestamps=True), base, False),
        ("former, run again (noise floor)", AsrOptions(word_timestamps=True), base, False),
        ("ASR text only, fitted window (the defaults)", AsrOptions(), base, False),
        ("the defaults with the LLM on", AsrOptions(), base, True),
        (f"+ face path at {args.face_hz:g} Hz", AsrOptions(), replace(base, face_path_hz=args.face_hz), False),
        (f"+ still scene reuses its embedding (<= {args.scene_change:g} grey levels)", AsrOptions(),
         replace(base, face_path_hz=args.face_hz, scene_change=args.scene_change), False),
        (f"the defaults, scene encoder at {args.scene_hz:g} Hz", AsrOptions(), replace(base, frame_encoder_hz=args.scene_hz), False),
    ]
    recognizers: dict[tuple[bool, bool], Recognizer] = {}
    results = []
    for name, asr, options, llm in steps:
        key = (asr.word_timestamps, llm)
        if key not in recognizers:
            recognizers[key] = Recognizer(backend=args.backend, precision=args.precision, bundle=args.bundle, use_llm=llm,
                                          asr_options=asr, model_threads=1)
        recognizer = recognizers[key]
        recognizer.options = options
        print(f"running: {name}", file=sys.stderr)
        results.append((name, measure_end_to_end(recognizer, clip, repeats=args.repeats)))
    reference = results[0][1]["labels_per_run"]
    rows, report_rows = [], []
    for name, r in results:
        shares = r["cpu_per_stream_s"]
        agree = [agreement(ref, run) for ref, run in zip(reference, r["labels_per_run"])]
        agree = [a for a in agree if a is not None]
        row = {"step": name, "total": shares["total"], "face": shares.get("face"), "frame": shares.get("frame"),
               "audio": shares.get("audio"), "text": shares.get("text"), "other": shares.get("other"),
               "p95": r["capture_to_event"]["p95_ms"], "eps": r["events_per_s"]["median"],
               "dropped": r["frames"]["dropped_at_source"] + r["frames"]["dropped_in_face_queue"],
               "agree": round(sum(agree) / len(agree), 3) if agree else None}
        rows.append(row)
        report_rows.append({"step": name, **{k: v for k, v in r.items() if k not in ("latency_samples_ms",)}, "agreement": row["agree"]})
    print(f"replay clip {clip.seconds:g} s x {args.repeats} runs per step; CPU-seconds per stream-second (1.0 = one core)")
    print_table(rows, [("step", "step", ""), ("total", "total", ".3f"), ("face", "face", ".3f"), ("frame", "frame", ".3f"),
                       ("audio", "audio", ".3f"), ("text", "text", ".3f"), ("other", "other", ".3f"), ("p95", "p95 ms", ".0f"),
                       ("eps", "events/s", ".1f"), ("dropped", "dropped", "d"), ("agree", "same label", ".3f")])
    out = write_report(args.json, {"benchmark": "stream_cpu", "backend": args.backend, "precision": args.precision, "seconds": args.seconds, "repeats": args.repeats,
                                   "rows": rows, "results": report_rows, "peak_rss_mb": peak_rss_mb()})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
