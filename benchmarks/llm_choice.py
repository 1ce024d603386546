"""Which local LLM gives the most useful emotional context? Measured on MELD dev.

For each GGUF model, every sampled MELD dev utterance is enriched with the default
prompt. Criteria, in order of weight:
  1. emotion agreement: the first emotion word of the answer (mapped with a fixed lexicon
     to the six labels) equals the MELD label -> accuracy and weighted F1;
  2. usable-answer rate (not empty, not an echo of the transcript);
  3. latency: median and p95 per answer, time to first token, tokens per second.

    python benchmarks/llm_choice.py --meld /path/to/MELD/data --samples 150 \
        --model smollm2=default --model gemma3=/path/gemma-3-270m-q4_k_m.gguf@gemma
"""
from __future__ import annotations

import argparse
import random
import re
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import write_report
from ecmf_edge.bench.stats import summarize
from ecmf_edge.bench.system import peak_rss_mb

LEXICON = {
    "angry": "angry anger annoyed annoyance furious frustrated frustration irritated exasperated mad outraged resentful hostile",
    "happy": "happy joy joyful excited excitement delighted glad pleased overjoyed cheerful grateful proud amused relieved thrilled enthusiastic elated content playful",
    "sad": "sad sadness upset disappointed disappointment devastated heartbroken hurt lonely depressed regretful sorrow grief gloomy hopeless",
    "worried": "worried worry anxious anxiety nervous afraid scared fearful fear uneasy concerned concern tense stressed panicked",
    "surprise": "surprised surprise shocked shock astonished amazed startled disbelief stunned incredulous",
    "neutral": "calm neutral indifferent casual matter-of-fact composed",
}
WORD_TO_LABEL = {w: label for label, words in LEXICON.items() for w in words.split()}


def label_of(answer: str) -> str | None:
    for word in re.findall(r"[a-z-]+", answer.lower()):
        if word in WORD_TO_LABEL:
            return WORD_TO_LABEL[word]
    return None


def evaluate(name: str, path: str | None, samples, threads: int, chat_format: str | None = None) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    from ecmf_edge.text.llm_context import ContextEnricher, LlmOptions

    enricher = ContextEnricher(LlmOptions(model_path=path, threads=threads, chat_format=chat_format))
    preds, gold, latencies, ttfts, rates, usable, examples = [], [], [], [], [], 0, []
    for utt in samples:
        result = enricher.enrich(utt.text)
        predicted = label_of(result.context) if result.used_llm else None
        preds.append(predicted or "none")
        gold.append(utt.label)
        latencies.append(result.latency_ms)
        if result.first_token_ms:
            ttfts.append(result.first_token_ms)
        if result.tokens and result.latency_ms > 0:
            rates.append(result.tokens / (result.latency_ms / 1000.0))
        usable += int(result.used_llm)
        if len(examples) < 6:
            examples.append({"said": utt.text, "label": utt.label, "context": result.context, "fallback": result.fallback_reason})
    enricher.close()
    return {
        "model": name, "path": str(enricher.path), "samples": len(samples),
        "emotion_accuracy": round(accuracy_score(gold, preds), 3),
        "emotion_weighted_f1": round(f1_score(gold, preds, average="weighted", zero_division=0), 3),
        "usable_rate": round(usable / len(samples), 3),
        **summarize(latencies),
        "ttft_p50_ms": round(float(np.median(ttfts)), 1) if ttfts else None,
        "tokens_per_s": round(float(np.median(rates)), 1) if rates else None,
        "examples": examples,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meld", required=True, help="folder with MELD's dev_sent_emo.csv")
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", action="append", default=[],
                        help="NAME=PATH.gguf[@CHAT_FORMAT] (PATH 'default' = SmolLM2 package; CHAT_FORMAT for GGUFs without a template)")
    parser.add_argument("--json", default="bench-out/llm_choice.json")
    args = parser.parse_args(argv)

    from ecmf_edge.train.datasets.meld import read_meld

    dev = read_meld(args.meld, "dev")
    random.Random(args.seed).shuffle(dev)
    samples = dev[: args.samples]
    models = args.model or ["smollm2=default"]
    rows = []
    for spec in models:
        name, _, path = spec.partition("=")
        path, _, chat_format = path.partition("@")
        rows.append(evaluate(name, None if path in ("", "default") else path, samples, args.threads, chat_format or None))
    majority = max(set(u.label for u in samples), key=[u.label for u in samples].count)
    header = f"{'model':<10} {'emo acc':>8} {'emo wF1':>8} {'usable':>7} {'p50 ms':>10} {'p95 ms':>8} {'TTFT ms':>8} {'tok/s':>6}"
    print(f"MELD dev, {len(samples)} utterances (seed {args.seed}); majority class '{majority}' = "
          f"{sum(u.label == majority for u in samples) / len(samples):.3f} of samples")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<10} {r['emotion_accuracy']:>8.3f} {r['emotion_weighted_f1']:>8.3f} {r['usable_rate']:>7.2f} "
              f"{r['p50_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['ttft_p50_ms'] or 0:>8.1f} {r['tokens_per_s'] or 0:>6.1f}")
    peak = peak_rss_mb()
    print(f"peak RSS: {peak:.0f} MiB")
    out = write_report(args.json, {"benchmark": "llm_choice", "samples": len(samples), "seed": args.seed, "peak_rss_mb": peak,
                                   "results": rows})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
