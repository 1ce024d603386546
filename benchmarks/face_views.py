"""How many test-time views of a face are worth their cost: accuracy on held-out training faces vs ms per face.

    python benchmarks/face_views.py --data DATA [--threads 1] [--repeats 200] [--json bench-out/face_views.json]

View sets of the shipped face branch (at its own input size): the crop, its mirror image, 3-pixel shifts. For
each view set: weighted F1 and accuracy on the face branch's own held-out training faces (the 8 % of
FER2013 Training images and CK+ training subjects it never trained on, its seed-0 split: where its
epoch was chosen; no test split is read), top-1 agreement with the ten-view output (the branch's
label and the fusion head's face-only label), and the ONNX encoder's ms per face on this CPU (one
face, and four faces in one call), measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb

# name -> (shifts, mirrored); agreement is measured against the ten views the branch was chosen with.
TEN = ((0, 0), (0, 3), (0, -3), (3, 0), (-3, 0))
VIEW_SETS = {
    "1: the crop": (((0, 0),), False),
    "2: crop + mirror": (((0, 0),), True),
    "6: crop, 3 px left/right, mirrored": (((0, 0), (0, 3), (0, -3)), True),
    "10: crop, four 3 px shifts, mirrored": (TEN, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with fer2013/ (train/) and ckplus/ (CK+48/)")
    parser.add_argument("--bundle", default="default", help="bundle whose fusion head gives the face-only label")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", default="bench-out/face_views.json")
    parser.add_argument("--test", action="store_true",
                        help="after the choice: score FER2013 PublicTest (fer2013/publictest or validation/) and the "
                             "held-out CK+ subjects once, with the shipped views and the ten former ones")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort

    from ecmf_edge.build.face_encoder import export_face_branch
    from ecmf_edge.build.face_weights import finetuned_network, finetuned_record, finetuned_views, load_finetuned
    from ecmf_edge.build.fusion_head import shipped_head_dir
    from ecmf_edge.modalities import MODALITIES
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.runtime.fusion_head import FusionHead
    from ecmf_edge.train.branches.face import _val_split, fer7_to_mer, predict_fer7, score
    from ecmf_edge.train.branches.run import face_training_data

    data = Path(args.data)
    ckplus = data / "ckplus" / "CK+48" if (data / "ckplus" / "CK+48").is_dir() else data / "ckplus"
    record = finetuned_record(shipped_head_dir())
    size = finetuned_network(record)[1]  # the shipped network's input size
    train = face_training_data(SimpleNamespace(fer2013=data / "fer2013", ckplus=ckplus if ckplus.is_dir() else None), size)
    _, val_idx = _val_split(train, 0.08, 0)
    val = train.subset(val_idx)
    print(f"{len(val)} held-out training faces ({int((val.corpora == 'ckplus').sum())} CK+), of {len(train)}",
          file=sys.stderr)
    model = load_finetuned(shipped_head_dir())
    head = FusionHead.from_bundle(load_bundle(args.bundle))

    def fused(features: np.ndarray) -> np.ndarray:
        return np.array([int(np.argmax(head.predict({m: (f if m == "face" else None) for m in MODALITIES}).probabilities))
                         for f in features])

    results = {}
    for name, (shifts, mirror) in VIEW_SETS.items():
        probs, feats = predict_fer7(model, val.images, shifts=shifts, mirror=mirror, features=True)
        results[name] = {"probs": probs, "feats": feats, "shifts": shifts, "mirror": mirror,
                         "views": len(shifts) * (2 if mirror else 1)}
    ten = results[list(VIEW_SETS)[-1]]
    base_label, base_fused = fer7_to_mer(ten["probs"])[0], fused(ten["feats"])
    from ecmf_edge.labels import MER2025_LABELS
    from ecmf_edge.train.branches.face import mer_labels
    from ecmf_edge.train.metrics import evaluate

    truth = mer_labels(val.labels)
    labels = tuple(head.labels) if hasattr(head, "labels") else MER2025_LABELS

    def fused_f1(pred: np.ndarray) -> float:
        keep = truth >= 0
        named = np.array([MER2025_LABELS.index(labels[p]) for p in pred])
        return evaluate(truth[keep], named[keep], MER2025_LABELS).weighted_f1
    faces = val.images[:4]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, r in results.items():
            report = score(r["probs"], val.labels)
            path = Path(tmp) / f"face_{r['views']}.onnx"
            export_face_branch(model, path, val.images[:8], shifts=r["shifts"], mirror=r["mirror"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            timings = {}
            for batch in (1, 4):
                x = ((faces[:batch].astype(np.float32) / 255.0 - 0.5) / 0.5)[:, None]
                for _ in range(10):
                    session.run(None, {"face": x})
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    session.run(None, {"face": x})
                    times.append((time.perf_counter() - started) * 1000.0)
                timings[batch] = float(np.median(times))
            rows.append({"views": name + (" (shipped)" if (tuple(r["shifts"]), r["mirror"]) == finetuned_views(record) else ""),
                         "weighted_f1": round(report.weighted_f1, 4), "accuracy": round(report.accuracy, 4),
                         "branch_top1_agreement": round(float(np.mean(fer7_to_mer(r["probs"])[0] == base_label)), 4),
                         "fused_weighted_f1": round(fused_f1(fused(r["feats"])), 4),
                         "fused_top1_agreement": round(float(np.mean(fused(r["feats"]) == base_fused)), 4),
                         "ms_1_face": round(timings[1], 3), "ms_4_faces": round(timings[4], 3)})
    print(f"\nface encoder views on {len(val)} held-out training faces ({args.threads} thread(s)):")
    print_table(rows, [("views", "views", ""), ("weighted_f1", "weighted F1", ".4f"), ("accuracy", "accuracy", ".4f"),
                       ("branch_top1_agreement", "agreement (branch)", ".4f"),
                       ("fused_weighted_f1", "fused face-only weighted F1", ".4f"),
                       ("fused_top1_agreement", "agreement (fused, face only)", ".4f"),
                       ("ms_1_face", "ms, 1 face", ".2f"), ("ms_4_faces", "ms, 4 faces", ".2f")])
    tests = _score_tests(model, data, ckplus, size, record) if args.test else {}
    out = write_report(args.json, {"benchmark": "face_views", "val_faces": len(val), "threads": args.threads,
                                   "rows": rows, "tests": tests, "peak_rss_mb": peak_rss_mb()})
    print(f"\nwritten: {out}")
    return 0


def _score_tests(model, data: Path, ckplus: Path, size: int, record: dict) -> dict:
    """The test splits, scored once after the views were chosen: shipped views vs the ten former ones."""
    from ecmf_edge.build.face_weights import finetuned_views
    from ecmf_edge.train.branches.face import load_face_data, predict_fer7, score
    from ecmf_edge.train.datasets.base import group_split
    from ecmf_edge.train.datasets.corpora import CKPLUS_RESERVED
    from ecmf_edge.train.datasets.images import read_ckplus, read_label_folders

    folder = data / "fer2013" / ("publictest" if (data / "fer2013" / "publictest").is_dir() else "validation")
    sets = {"fer2013_publictest": load_face_data(read_label_folders(folder, "fer2013", "fer2013",
                                                                    name_pattern=r"^PublicTest_\d+\.jpg$",
                                                                    overrides={"disgust": "disgust"}), size)}
    if ckplus.is_dir():
        _, ck_test = group_split(read_ckplus(ckplus, exclude_subjects=set(CKPLUS_RESERVED)), test_fraction=0.2, seed=0)
        sets["ckplus_heldout_subjects"] = load_face_data(ck_test, size)
    out = {}
    for name, faces in sets.items():
        shifts, mirror = finetuned_views(record)
        shipped = score(predict_fer7(model, faces.images, shifts=shifts, mirror=mirror), faces.labels).to_dict()
        out[name] = {f"{len(shifts) * (2 if mirror else 1)} views (shipped)": shipped,
                     "10 views (former)": score(predict_fer7(model, faces.images, shifts=TEN), faces.labels).to_dict()}
        for key, report in out[name].items():
            print(f"{name}: {key}: weighted F1 {report['weighted_f1']:.4f}, accuracy {report['accuracy']:.4f} "
                  f"(n={report['n']})")
    return out


if __name__ == "__main__":
    sys.exit(main())
