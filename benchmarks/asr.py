"""What speech recognition costs per utterance, and what a shorter encoder window does to its words.

    python benchmarks/asr.py [--ravdess DIR] [--threads 2] [--json bench-out/asr.json]

Whisper is trained on 30 s windows, and faster-whisper pads every utterance to 30 s (and, with
the language unknown, runs the encoder a second time to detect it). For each way of decoding:
CPU-seconds and wall time per utterance (median, p95; CPU counts every thread of the process,
CTranslate2's included), CPU-seconds per second of speech, word error rate (jiwer, words
lower-cased without punctuation) and the share of utterances whose words equal those of the
former default, all measured in one run on one machine.

Utterances: espeak-ng sentences of 1 to 30 words (two voices, three speeds) and, with
``--ravdess``, real speech of RAVDESS *training* actors (folders ``Actor_NN``; the first repetition of
each sentence, emotion and intensity: 30 clips per actor; the sentence is in the file name). The window margin is chosen on the espeak-ng set and actors 01-02
(``choice``), then checked once on the remaining actors (``check``).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.stats import summarize
from ecmf_edge.bench.system import peak_rss_mb

SENTENCES = (
    "Yes.",
    "No way.",
    "Thank you.",
    "I see.",
    "Really?",
    "That is great news.",
    "Where are my keys?",
    "I did not expect that at all.",
    "Please close the window, it is cold.",
    "We won the game last night.",
    "I am so tired of waiting for the bus every morning.",
    "Could you tell me how to get to the train station?",
    "My sister is coming to visit us next weekend with her children.",
    "The meeting was moved to Thursday because the manager is travelling.",
    "I can't believe you forgot my birthday again after everything we talked about.",
    "The weather was lovely and we walked along the river all afternoon until the sun went down.",
    "When I finally opened the letter I realised that they had accepted my application and I started to cry.",
    "Honestly I think we should leave early tomorrow, pack the car tonight, and stop for breakfast somewhere on the motorway.",
)
VOICES = (("en-us", 175), ("en-us", 140), ("en-gb", 160))
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
CHOICE_ACTORS = ("01", "02")

# name -> AsrOptions keyword arguments; "former default" is what the live loop ran before.
VARIANTS = {
    "former default: faster-whisper, 30 s, word times": {"word_timestamps": True},
    "text only, 30 s window": {"window": "full"},
    "text only, fit +0.5 s (min 2 s)": {"window_margin_s": 0.5, "min_window_s": 2.0},
    "text only, fit +1 s (min 3 s)": {"window_margin_s": 1.0, "min_window_s": 3.0},
    "text only, fit +2 s (min 4 s)": {"window_margin_s": 2.0, "min_window_s": 4.0},
}
FORMER = next(iter(VARIANTS))


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split())


def espeak_set(folder: Path) -> list[tuple[str, str, Path]]:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: run `apt-get install espeak-ng`")
    items = []
    for i, sentence in enumerate(SENTENCES):
        for voice, speed in VOICES:
            path = folder / f"s{i:02d}-{voice}-{speed}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), sentence], check=True, capture_output=True)
            items.append(("espeak-ng", sentence, path))
    return items


def ravdess_set(root: Path) -> list[tuple[str, str, Path]]:
    items = []
    for path in sorted(root.rglob("Actor_*/03-01-*.wav")):
        parts = path.stem.split("-")
        if len(parts) != 7 or parts[4] not in RAVDESS_STATEMENTS or parts[5] != "01":
            continue  # the first repetition of each sentence: 30 clips per actor
        actor = parts[6]
        if int(actor) > 18:
            sys.exit(f"{path}: RAVDESS actors 19-24 are reserved for independent evaluation; pass training actors only")
        items.append((f"ravdess-{'choice' if actor in CHOICE_ACTORS else 'check'}", RAVDESS_STATEMENTS[parts[4]], path))
    if not items:
        sys.exit(f"no RAVDESS speech clips (Actor_NN/03-01-*.wav) under {root}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--ravdess", type=Path, help="folder holding RAVDESS Actor_NN folders (training actors 01-18 only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", action="append", metavar="TEXT",
                        help="run only the variants whose name contains TEXT (repeatable; the former default always runs)")
    parser.add_argument("--json", default="bench-out/asr.json")
    args = parser.parse_args(argv)
    variants = {name: kw for name, kw in VARIANTS.items()
                if name == FORMER or not args.variant or any(v in name for v in args.variant)}
    try:
        import jiwer
    except ImportError:
        sys.exit("jiwer is not installed: run `pip install 'ecmf-edge[test]'`")

    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.text.asr import AsrOptions, SpeechRecognizer

    bundle = load_bundle(args.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        items = espeak_set(Path(tmp))
        if args.ravdess:
            items += ravdess_set(args.ravdess)
        audio = [(group, text, load_audio(path)) for group, text, path in items]
    groups = sorted({g for g, _, _ in audio})
    recognizers = {name: SpeechRecognizer.from_bundle(bundle, AsrOptions(threads=args.threads, language=None, **kw))
                   for name, kw in variants.items()}
    hyps = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    wall = {name: [] for name in variants}
    for rec in recognizers.values():  # one warm-up each
        rec.transcribe(audio[0][2])
    # Interleave the variants per utterance so a machine that gets busier affects all alike.
    for i, (_, _, pcm) in enumerate(audio):
        for name, rec in recognizers.items():
            c0, w0 = time.process_time(), time.perf_counter()
            hyps[name].append(normalise(rec.transcribe(pcm).text))
            cpu[name].append((time.process_time() - c0) * 1000.0)
            wall[name].append((time.perf_counter() - w0) * 1000.0)
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(audio)} utterances", file=sys.stderr)
    refs = [normalise(text) for _, text, _ in audio]
    seconds = [pcm.size / 16000 for _, _, pcm in audio]
    rows = []
    for name in variants:
        row = {"variant": name, "cpu": summarize(cpu[name]), "wall": summarize(wall[name]),
               "cpu_s_per_speech_s": round(sum(cpu[name]) / 1000.0 / sum(seconds), 3),
               "retried": recognizers[name].retried, "decoded": recognizers[name].decoded}
        for group in groups:
            idx = [i for i, (g, _, _) in enumerate(audio) if g == group]
            row[f"wer {group}"] = round(jiwer.wer([refs[i] for i in idx], [hyps[name][i] or "<none>" for i in idx]), 4)
            row[f"same {group}"] = round(sum(hyps[name][i] == hyps[FORMER][i] for i in idx) / len(idx), 3)
            short = [i for i in idx if seconds[i] < 3.0]
            if short:
                row[f"cpu_ms_short {group}"] = round(float(sum(cpu[name][i] for i in short) / len(short)), 1)
        rows.append(row)
    print(f"{len(audio)} utterances ({', '.join(f'{g}: {sum(1 for a in audio if a[0] == g)}' for g in groups)}), "
          f"{min(seconds):.1f}-{max(seconds):.1f} s, {args.threads} CTranslate2 threads")
    flat = [{"variant": r["variant"], "cpu_med": r["cpu"]["p50_ms"], "cpu_p95": r["cpu"]["p95_ms"], "wall_med": r["wall"]["p50_ms"],
             "per_s": r["cpu_s_per_speech_s"], **{k: v for k, v in r.items() if k.startswith(("wer", "same"))},
             "retried": f"{r['retried']}/{r['decoded']}" if r["decoded"] else None} for r in rows]
    columns = [("variant", "variant", ""), ("cpu_med", "CPU ms med", ".0f"), ("cpu_p95", "CPU ms p95", ".0f"),
               ("wall_med", "wall ms med", ".0f"), ("per_s", "CPU-s/speech-s", ".3f")]
    columns += [(f"wer {g}", f"WER {g}", ".3f") for g in groups] + [(f"same {g}", f"same {g}", ".2f") for g in groups]
    columns += [("retried", "30 s retries", "")]
    print_table(flat, columns)
    out = write_report(args.json, {"benchmark": "asr", "threads": args.threads, "utterances": len(audio),
                                   "seconds": {"min": min(seconds), "max": max(seconds), "total": round(sum(seconds), 1)},
                                   "rows": rows, "peak_rss_mb": peak_rss_mb(),
                                   "transcripts": [{"group": g, "ref": r, **{n: hyps[n][i] for n in variants}}
                                                   for i, ((g, _, _), r) in enumerate(zip(audio, refs))]})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
