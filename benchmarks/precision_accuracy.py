"""fp32 vs fp16 vs int8 bundles on the labelled evaluation splits: weighted F1 and top-1 agreement.

Every precision's encoders extract the test-split features of the local corpora (RAVDESS
actors 15-18, EmoDB speakers 03/14, FER2013 PublicTest, CK+ held-out subjects, MELD dev;
see ``ecmf_edge.train.datasets.corpora``), the fp32 bundle's fusion head classifies them, and the
table gives per corpus the weighted F1 of each precision, its change against fp32 in
points, and the top-1 agreement of its predictions with fp32's. Text features are made
without LLM context here (the LLM's answer does not depend on the encoders' precision).
Missing fp16/int8 bundles are built with ``quantize_bundle``.

    python benchmarks/precision_accuracy.py --data DATA [--precisions fp32 int8 fp16] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder holding ravdess/ emodb/ fer2013/ ckplus/ meld/")
    parser.add_argument("--bundle", default="default", help="bundle name (under $ECMF_EDGE_ENGINES)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "fp16"])
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "ecmf-edge" / "features"))
    parser.add_argument("--json", default="bench-out/precision_accuracy.json")
    args = parser.parse_args(argv)

    from ecmf_edge.build.quantize import quantize_bundle
    from ecmf_edge.features import FeatureExtractor
    from ecmf_edge.runtime.bundle import MANIFEST, bundle_dir, load_bundle
    from ecmf_edge.train.corpus_features import cache_dims, extract_table
    from ecmf_edge.train.datasets.corpora import CorpusPaths, load_splits
    from ecmf_edge.train.fusion.pipeline import speech_branch_tokens
    from ecmf_edge.train.metrics import evaluate

    root = Path(args.data)
    paths = CorpusPaths(**{n: root / n for n in ("ravdess", "emodb", "fer2013", "ckplus", "meld") if (root / n).is_dir()})
    splits = load_splits(paths)
    samples = [s for split in splits.values() for s in split.test]
    base = load_bundle(args.bundle)
    head = base.session(base.spec("fusion_head")["file"])
    labels = list(base.labels)
    predictions: dict[str, np.ndarray] = {}
    truth = corpora = None
    rows = []
    for precision in args.precisions:
        if precision != "fp32" and not (bundle_dir(args.bundle, "onnxruntime", precision) / MANIFEST).is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                quantize_bundle(base, precision, bundle_dir(args.bundle, "onnxruntime", precision))
        bundle = base if precision == "fp32" else load_bundle(args.bundle, precision=precision)
        dims = cache_dims(bundle)
        table = speech_branch_tokens(extract_table(samples, FeatureExtractor(bundle), args.cache, dims, progress=True), bundle)
        feeds = {m: table.features[m] for m in ("frame", "face", "audio", "text")}
        probs = head.run(["probs"], {**feeds, "mask": table.mask})[0]
        predictions[precision] = probs.argmax(1)
        truth = np.array([labels.index(label) for label in table.labels])
        corpora = table.corpora
        models = {k: s["precision"] for k, s in bundle.manifest["models"].items()}
        for corpus in sorted(np.unique(corpora)):
            members = corpora == corpus
            report = evaluate(truth[members], predictions[precision][members], labels)
            ref = predictions.get("fp32") if precision != "fp32" else None
            rows.append({"corpus": corpus, "precision": precision, "n": int(members.sum()),
                         "weighted_f1": round(report.weighted_f1, 4),
                         "delta_points": None if ref is None else round(100 * (report.weighted_f1 - next(
                             r["weighted_f1"] for r in rows if r["corpus"] == corpus and r["precision"] == "fp32")), 2),
                         "top1_agreement": None if ref is None else round(float(np.mean(ref[members] == predictions[precision][members])), 4),
                         "models": models})
    print_table(rows, [("corpus", "corpus", ""), ("precision", "precision", ""), ("n", "n", "d"),
                       ("weighted_f1", "weighted F1", ".4f"), ("delta_points", "change (points)", ".2f"),
                       ("top1_agreement", "agreement with fp32", ".4f")])
    out = write_report(args.json, {"benchmark": "precision_accuracy", "bundle": args.bundle,
                                   "text": "transcripts embedded without LLM context", "results": rows})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
