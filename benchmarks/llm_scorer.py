"""The LLM as a label scorer on MELD: does it add to the text branch, and what does it cost per utterance?

    python benchmarks/llm_scorer.py --meld DATA/meld [--llm OTHER.gguf ...] [--llm-chat-format F]
                                    [--threads 2] [--seeds 3] [--json bench-out/llm_scorer.json]

For the default GGUF (SmolLM2-135M-Instruct) and every GGUF given with --llm: the scorer's own
accuracy and weighted F1 on MELD dev, ms per utterance warm (instruction prefix cached) and cold,
and the with/without-LLM comparison of ``ecmf_edge.train.llm_evidence`` (models fitted and chosen on
the MELD training dialogues the text branch held out; dev scored once).
"""
from __future__ import annotations

import argparse
import sys

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meld", required=True, help="folder with MELD's train_sent_emo.csv and dev_sent_emo.csv")
    parser.add_argument("--llm", action="append", default=[], metavar="PATH.gguf", help="another GGUF to compare (repeatable)")
    parser.add_argument("--llm-chat-format", help="chat format for GGUFs without a chat template")
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, help="score only the first N utterances of each split (a quick look)")
    parser.add_argument("--json", default="bench-out/llm_scorer.json")
    args = parser.parse_args(argv)

    import numpy as np

    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.text.llm_scorer import LlmScorer, ScorerOptions
    from ecmf_edge.text.text_branch import TextBranch
    from ecmf_edge.train.datasets.meld import read_meld
    from ecmf_edge.train.llm_evidence import compare, extract, held_out_training, time_scorer
    from ecmf_edge.train.metrics import evaluate

    bundle = load_bundle(args.bundle)
    labels = tuple(bundle.labels)
    branch = TextBranch.from_bundle(bundle)
    fit_utts = held_out_training(read_meld(args.meld, "train"))
    dev_utts = read_meld(args.meld, "dev")
    if args.limit:
        fit_utts, dev_utts = fit_utts[: args.limit], dev_utts[: args.limit]
    print(f"fitting on {len(fit_utts)} held-out MELD training utterances, scoring {len(dev_utts)} dev utterances",
          file=sys.stderr)
    models = [None, *args.llm]
    report: dict = {"benchmark": "llm_scorer", "fit_n": len(fit_utts), "dev_n": len(dev_utts), "models": []}
    for path in models:
        scorer = LlmScorer(labels, ScorerOptions(model_path=path, chat_format=args.llm_chat_format if path else None,
                                                 threads=args.threads))
        name = scorer.path.name

        def progress(done: int, total: int, split: str = "") -> None:
            if done % 200 == 0 or done == total:
                print(f"  {name} {split}: {done}/{total}", file=sys.stderr, flush=True)

        timing = time_scorer(scorer, dev_utts)
        fit = extract(fit_utts, branch, scorer, labels, lambda d, t: progress(d, t, "fit"))
        dev = extract(dev_utts, branch, scorer, labels, lambda d, t: progress(d, t, "dev"))
        scorer.close()
        alone = evaluate(dev.y, dev.llm.argmax(1), labels)
        rows = compare(fit, dev, seeds=tuple(range(args.seeds)))
        report["models"].append({"gguf": name, "timing": timing, "scorer_alone_dev": alone.to_dict(),
                                 "mean_scored_ms": round(float(np.mean(dev.llm_ms)), 1), "comparison": rows})
        print(f"\n{name}: scorer alone on dev: weighted F1 {alone.weighted_f1:.3f}, accuracy {alone.accuracy:.3f}; "
              f"ms/utterance warm {timing['warm_median_ms']} (p95 {timing['warm_p95_ms']}), "
              f"cold {timing['cold_median_ms']} (p95 {timing['cold_p95_ms']})")
        print_table([{**r, "ci95": f"{r['ci95'][0]:+.3f}..{r['ci95'][1]:+.3f}",
                      "without_llm": " ".join(f"{v:.3f}" for v in r["without_llm"]),
                      "with_llm": " ".join(f"{v:.3f}" for v in r["with_llm"])} for r in rows],
                    [("variant", "variant", ""), ("without_llm", "dev wF1 without (seeds)", ""),
                     ("with_llm", "with LLM (seeds)", ""), ("mean_without", "mean without", ".4f"),
                     ("mean_with", "mean with", ".4f"), ("difference", "difference", "+.4f"), ("ci95", "95 % CI", "")])
    report["peak_rss_mb"] = peak_rss_mb()
    out = write_report(args.json, report)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
