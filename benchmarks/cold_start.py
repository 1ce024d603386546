"""Cold start: process start to the first event from a prebuilt bundle, LLM on and off.

Each repeat is a fresh Python process that imports ecmf_edge, opens ``Recognizer(bundle=DIR)``
and plays the shipped speech with the astronaut photograph through ``stream()`` in fast
playback; the time is measured from just before the process is spawned to the first event
it prints, plus the time to the first event that carries a transcript (what the text path
pays for opening Whisper and the LLM). Peak RSS of the child is reported too.

    python benchmarks/cold_start.py [--bundle DIR] [--backend onnxruntime] [--repeats 5] [--json bench-out/cold_start.json]
    PYTHONPATH=/path/to/other/checkout python benchmarks/cold_start.py ...   # the same for another version
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.modalities import BACKEND_CHOICES

CHILD = r'''
import json, resource, sys, time
import cv2, numpy as np
t_import = time.time()
from ecmf_edge import Recognizer
from ecmf_edge._assets import asset_path
bundle, video, use_llm, backend = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
first = first_text = None
with Recognizer(bundle=bundle, backend=backend, use_llm=use_llm) as rec:
    t_loaded = time.time()
    for event in rec.stream(video=video, audio=str(asset_path("speech_en.wav")), realtime=False):
        now = time.time()
        first = first or now
        if event.transcript and first_text is None:
            first_text = now
    llm = rec.models.is_loaded("enricher") if hasattr(rec.models, "is_loaded") else "enricher" in rec.models._cache
import ecmf_edge
print(json.dumps({"package": ecmf_edge.__file__, "import": t_import, "loaded": t_loaded, "first": first, "first_text": first_text, "llm_opened": llm,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
'''


def replay_video(folder: Path) -> Path:
    """4 s at 10 fps of the astronaut photograph panning in a 640x480 frame (MJPG AVI)."""
    import cv2

    from ecmf_edge._assets import asset_path

    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    path = folder / "replay.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for i in range(40):
        frame = np.full((480, 640, 3), 90, np.uint8)
        x = 40 + 2 * i
        frame[:, x:x + 512] = photo[:480]
        writer.write(frame)
    writer.release()
    return path


def run_once(bundle: str, video: Path, use_llm: bool, backend: str = "onnxruntime") -> dict:
    started = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, bundle, str(video), "1" if use_llm else "0", backend],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"),
                          cwd=str(video.parent))  # not the checkout: PYTHONPATH decides which ecmf_edge runs
    if done.returncode != 0:
        raise SystemExit(f"cold-start child failed: {done.stderr.strip().splitlines()[-1:]}")
    t = json.loads(done.stdout.strip().splitlines()[-1])
    return {"import_s": t["import"] - started, "loaded_s": t["loaded"] - started, "first_event_s": t["first"] - started,
            "first_transcript_s": (t["first_text"] - started) if t["first_text"] else None,
            "llm_opened": t["llm_opened"], "peak_rss_mb": t["peak_rss_mb"], "package": t["package"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: the default fp32 bundle)")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKEND_CHOICES, help="inference backend")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="bench-out/cold_start.json")
    args = parser.parse_args(argv)
    from ecmf_edge.runtime.bundle import bundle_dir

    bundle = args.bundle or str(bundle_dir("default"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = replay_video(Path(tmp))
        # warm the file cache: every configuration then starts equally cold; it also says which ecmf_edge runs
        packages = [run_once(bundle, video, False, args.backend)["package"]]
        for use_llm in (False, True):
            runs = [run_once(bundle, video, use_llm, args.backend) for _ in range(args.repeats)]
            row = {"configuration": "LLM on" if use_llm else "LLM off", "repeats": args.repeats,
                   "llm_opened": runs[-1]["llm_opened"]}
            for key in ("import_s", "loaded_s", "first_event_s", "first_transcript_s", "peak_rss_mb"):
                values = [r[key] for r in runs if r[key] is not None]
                row[f"{key}_median"] = round(float(np.median(values)), 3) if values else None
                row[f"{key}_p95"] = round(float(np.percentile(values, 95)), 3) if values else None
            rows.append(row)
    print_table(rows, [("configuration", "configuration", ""), ("llm_opened", "LLM opened", ""),
                       ("import_s_median", "import s", ".2f"), ("loaded_s_median", "Recognizer s", ".2f"),
                       ("first_event_s_median", "first event s", ".2f"), ("first_event_s_p95", "p95", ".2f"),
                       ("first_transcript_s_median", "first transcript s", ".2f"),
                       ("peak_rss_mb_median", "peak RSS MiB", ".0f")])
    out = write_report(args.json, {"benchmark": "cold_start", "bundle": bundle, "backend": args.backend, "package": packages[0] if packages else None, "rows": rows})
    print(f"ecmf_edge from {packages[0]}; written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
