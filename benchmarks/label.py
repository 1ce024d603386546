"""Labelling recorded sessions: files per minute and real-time factor of ``ecmf-edge label`` at 1 and 2
local workers and on a local Ray instance, measured in the same run.

A folder of N generated clips is built first: the package's astronaut photograph moving in a 640x480
frame at 10 fps, with espeak-ng speech as 44.1 kHz AAC inside an MP4 (as a recorded session has it;
needs ffmpeg and espeak-ng). Each configuration labels the whole folder into a fresh output folder
through :func:`ecmf_edge.batch.label.label_paths` (plots on, LLM as the bundle uses it). Peak RSS is
the largest VmHWM of any process that labelled (the driver for one worker, the worker processes or
Ray actors otherwise), sampled from /proc.

    python benchmarks/label.py [--clips 8] [--seconds 8] [--bundle DIR] [--no-ray] [--json bench-out/label.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report

SENTENCES = ["I am so happy that you came to visit me today.", "This is really frustrating, nothing works at all.",
             "I think I understand the second part of the exercise now.", "Oh no, I lost all of my work again.",
             "Wait, what just happened? I did not expect that.", "Let us try the next question together."]


def make_clips(folder: Path, count: int, seconds: float) -> list[Path]:
    import cv2

    from ecmf_edge._assets import asset_path

    if not shutil.which("ffmpeg") or not shutil.which("espeak-ng"):
        raise SystemExit("benchmarks/label.py needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng)")
    photo = cv2.imread(str(asset_path("astronaut.jpg")))
    clips = []
    for k in range(count):
        video = folder / f"frames{k}.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
        for i in range(int(seconds * 10)):
            frame = np.full((480, 640, 3), 60 + 10 * k, np.uint8)
            x = 20 + (3 * i + 7 * k) % 100
            frame[:, x:x + 512] = photo[:480]
            writer.write(frame)
        writer.release()
        speech = folder / f"speech{k}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(speech), SENTENCES[k % len(SENTENCES)]], check=True,
                       capture_output=True)
        clip = folder / "clips" / f"session{k:03d}.mp4"
        clip.parent.mkdir(exist_ok=True)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-itsoffset", "0.5",
                        "-i", str(speech), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-ar", "44100", "-af", "apad", "-t", str(seconds), str(clip)],
                       check=True, capture_output=True)
        video.unlink()
        speech.unlink()
        clips.append(clip)
    return clips


class PeakRss:
    """Largest VmHWM (MiB) of this process and of its descendants, sampled while running."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _descendants(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        found, frontier = [], [os.getpid()]
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            frontier += [child for child, parent in parents.items() if parent == pid]
        return found

    def _sample(self) -> None:
        for pid in self._descendants():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peaks[pid] = (max(self.peaks.get(pid, (0.0, ""))[0], int(line.split()[1]) / 1024.0), name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def worker_peak(self, workers: bool) -> float:
        """The driver's peak (one worker), or the largest of the processes that hold models (several)."""
        if not workers:
            return round(self.peaks.get(os.getpid(), (0.0, ""))[0], 1)
        held = [mb for pid, (mb, name) in self.peaks.items() if pid != os.getpid()
                and ("spawn_main" in name or "ray::" in name or "default_worker" in name)]
        return round(max(held, default=0.0), 1)


def run_config(name: str, clips_dir: Path, out: Path, bundle: str, workers: int, ray: bool) -> dict:
    from ecmf_edge.batch.label import LabelOptions, label_paths

    options = LabelOptions(bundle=bundle)
    with PeakRss() as rss:
        started = time.perf_counter()
        summaries = label_paths([clips_dir], out, options, workers=workers, use_ray=ray, progress=False)
        wall = time.perf_counter() - started
    media = sum(s.duration_s for s in summaries)
    failed = [s for s in summaries if s.status != "ok"]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} files failed, e.g. {failed[0].file}: {failed[0].status}")
    return {"config": name, "workers": workers, "files": len(summaries), "media_s": round(media, 1), "wall_s": round(wall, 2),
            "files_per_min": round(60.0 * len(summaries) / wall, 2), "real_time_factor": round(wall / media, 3),
            "peak_rss_mb": rss.worker_peak(workers > 1 or ray)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray configuration")
    parser.add_argument("--json", default="bench-out/label.json")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="ecmf-label-bench-") as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips, args.seconds)
        configs = [("1 worker", 1, False), ("2 workers", 2, False)]
        if not args.no_ray:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                print("Ray is not installed (pip install 'ecmf-edge[cluster]'): its row is left out")
            else:
                configs.append(("Ray, 2 actors", 2, True))
        timelines = {}
        for name, workers, ray in configs:
            out = folder / f"out-{workers}-{int(ray)}"
            rows.append(run_config(name, clips[0].parent, out, args.bundle, workers, ray))
            timelines[name] = {p.name: p.read_text() for p in sorted(out.glob("*.timeline.csv"))}
        base = rows[0]["wall_s"]
        for row in rows:
            row["speed_up"] = round(base / row["wall_s"], 2)
            row["timelines_identical"] = timelines[row["config"]] == timelines[rows[0]["config"]]
    print(f"{args.clips} clips of {args.seconds:.0f} s (MP4, H.264 + AAC 44.1 kHz), bundle {args.bundle}, {os.cpu_count()} CPUs")
    print_table(rows, [("config", "config", ""), ("files", "files", "d"), ("wall_s", "wall s", ".1f"),
                       ("files_per_min", "files/min", ".1f"), ("real_time_factor", "RTF", ".3f"),
                       ("speed_up", "speed-up", ".2f"), ("peak_rss_mb", "peak RSS MiB/worker", ".0f"),
                       ("timelines_identical", "same timelines", "")])
    print(f"written: {write_report(args.json, {'clips': args.clips, 'seconds': args.seconds, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
