"""Which input size for the face branch's EfficientNet-Lite0: held-out training faces vs ms per face.

    python benchmarks/face_backbone.py --data DATA [--sizes 48 64 80] [--epochs 3] [--json bench-out/face_backbone.json]

For each input size, the face branch is fine-tuned with the shipped recipe on a short schedule
(``--epochs``) and scored on its own held-out *training* faces (the 8 % of FER2013 Training images
and CK+ training subjects it never trains on; no test split is read), with one view and with the
crop + its mirror image. In the same run the ONNX encoder's ms per face on one thread (median and
p95 of one face per call) and the training time per epoch are measured. The shipped size is the one
with the best held-out weighted F1 among those whose views fit the 4 ms per face budget.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from _common import measure, peak_rss_mb, print_table, write_report

BUDGET_MS = 4.0


def _latency(model, size: int, shifts, mirror: bool, repeats: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from ecmf_edge.build.common import require_torch
    from ecmf_edge.build.mini_xception import as_input, export_face_branch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "face.onnx"
        reference = np.random.default_rng(0).integers(0, 256, (4, size, size), dtype=np.uint8)
        export_face_branch(model, path, reference, shifts=shifts, mirror=mirror)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        face = as_input(require_torch(), reference[:1]).numpy()
        return measure(lambda: session.run(["probs"], {"face": face}), repeats, 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with fer2013/ (train/) and ckplus/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 64, 80])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", default="bench-out/face_backbone.json")
    args = parser.parse_args(argv)

    from ecmf_edge.train.branches.face import FaceTrainOptions, _val_split, load_face_data, predict_fer7, score, train_face_branch
    from ecmf_edge.train.branches.run import face_training_samples

    data = Path(args.data)
    samples = face_training_samples(SimpleNamespace(fer2013=data / "fer2013", ckplus=data / "ckplus" if (data / "ckplus").is_dir() else None))
    rows, results = [], {}
    for size in args.sizes:
        opts = FaceTrainOptions(size=size, epochs=args.epochs)
        train = load_face_data(samples, size=size)
        started = time.perf_counter()
        model, history, best_epoch, _ = train_face_branch(train, opts)
        seconds = time.perf_counter() - started
        val = train.subset(_val_split(train, opts.val_fraction, opts.seed)[1])
        one = score(predict_fer7(model, val.images, shifts=((0, 0),), mirror=False), val.labels)
        two = score(predict_fer7(model, val.images, shifts=((0, 0),), mirror=True), val.labels)
        ms_one = _latency(model, size, ((0, 0),), False, args.repeats)
        ms_two = _latency(model, size, ((0, 0),), True, args.repeats)
        results[size] = {"epochs": args.epochs, "best_epoch": best_epoch, "history": history,
                         "train_seconds_per_epoch": round(seconds / args.epochs, 1),
                         "heldout_train_faces": {"1 view": one.to_dict(), "crop + mirror": two.to_dict()},
                         "ms_per_face_1_thread": {"1 view": ms_one, "crop + mirror": ms_two}}
        for name, report, ms in (("1 view", one, ms_one), ("crop + mirror", two, ms_two)):
            rows.append({"size": str(size), "views": name, "wf1": report.weighted_f1, "acc": report.accuracy,
                         "ms": ms["median_ms"], "p95": ms["p95_ms"], "fits": "yes" if ms["median_ms"] <= BUDGET_MS else "no",
                         "epoch_s": seconds / args.epochs})
    print_table(rows, [("size", "size", ""), ("views", "views", ""), ("wf1", "held-out weighted F1", ".4f"),
                       ("acc", "accuracy", ".4f"), ("ms", "ms/face", ".2f"), ("p95", "p95", ".2f"),
                       ("fits", f"<= {BUDGET_MS:g} ms", ""), ("epoch_s", "s/epoch", ".0f")])
    path = write_report(args.json, {"benchmark": "face_backbone", "n_heldout": len(val), "budget_ms": BUDGET_MS,
                                    "sizes": results, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
