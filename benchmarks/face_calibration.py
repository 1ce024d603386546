"""Per-person resting-face calibration: accuracy per person with and without it, by how much of the face was seen.

    # choose the prior (target mean and prior views) on held-out *training* people (from the pack)
    python benchmarks/face_calibration.py --branch ecmf_edge/weights --pack face-pack/ [--write]
    # once, afterwards: the same on the test people (in-the-wild held-out people, CK+ held-out subjects)
    python benchmarks/face_calibration.py --branch ecmf_edge/weights --pack face-pack/ --data DATA --test

Live protocol: each person's images in a random order (5 orders), one fresh
:class:`~ecmf_edge.vision.resting_face.RestingFace` per person, each image scored after it is added (a photo is
one view). Scored with the branch's own classifier on the corrected token (the token the fusion head reads),
over the six MER2025 classes. People with one image only are scored too (the correction cannot act on a first
view). The explicit baseline is measured on people with a neutral image: one neutral image is their baseline
and is not scored. ``--write`` stores the chosen statistics in the branch's ``face_encoder.json``, whence
``ecmf-edge export`` puts them into the bundle.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common  # noqa: F401  (puts the source checkout on sys.path)
import numpy as np

from ecmf_edge.bench.report import print_table, write_report
from ecmf_edge.bench.system import peak_rss_mb

PRIOR_VIEWS = (4.0, 16.0, 64.0)
STRENGTHS = (0.25, 0.5, 1.0)
BINS = (("1st", 0, 1), ("2nd-3rd", 1, 3), ("4th-7th", 3, 7), ("8th+", 7, 10**9))
ORDERS = 5


def _tokens(folder: Path, data, cache: Path | None = None):
    """(tokens, classifier weight, bias) of the branch on FaceData ``data`` with its shipped views (``cache``: an .npz
    reused while the branch's weights are the same)."""
    import hashlib

    from ecmf_edge.build.face_weights import FINETUNED_FILE, finetuned_record, finetuned_views, load_finetuned
    from ecmf_edge.train.branches.face import predict_fer7

    model = load_finetuned(folder)
    weight, bias = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    digest = hashlib.sha256((folder / FINETUNED_FILE).read_bytes()).hexdigest()[:16]
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            if str(saved["digest"]) == digest and len(saved["tokens"]) == len(data.images):
                return saved["tokens"], weight, bias
    shifts, mirror = finetuned_views(finetuned_record(folder))
    _, tokens = predict_fer7(model, data.images, shifts=shifts, mirror=mirror, features=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, tokens=tokens, digest=np.array(digest))
    return tokens, weight, bias


def _mer(logits: np.ndarray) -> np.ndarray:
    from ecmf_edge.train.branches.face import fer7_to_mer

    return fer7_to_mer(logits)[0]


def _live(tokens, groups, stats, seed=0):
    """Per image and order: (index, views seen before, corrected token)."""
    from ecmf_edge.vision.resting_face import RestingFace

    rng = np.random.default_rng(seed)
    out = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        for _ in range(ORDERS):
            state = RestingFace(stats)
            for seen, i in enumerate(rng.permutation(members)):
                out.append((i, seen, state.correct(tokens[i])))
    return out


def _scores(pred, truth, groups, seen=None) -> dict:
    from sklearn.metrics import f1_score

    from ecmf_edge.train.branches.face import neutral_errors

    keep = truth >= 0
    pred, truth, groups = pred[keep], truth[keep], groups[keep]
    per_person = [float(np.mean(pred[groups == g] == truth[groups == g])) for g in np.unique(groups)]
    neutral = neutral_errors(pred, truth)
    row = {"weighted_f1": float(f1_score(truth, pred, average="weighted")), "accuracy": float(np.mean(pred == truth)),
           "per_person_accuracy": float(np.mean(per_person)), "people": len(per_person), "n": int(truth.size),
           "neutral_recall": neutral.get("neutral_recall"), "neutral_as_sad_or_angry": neutral.get("neutral_as_sad_or_angry")}
    if seen is not None:
        seen = seen[keep]
        row["by_views_before"] = {name: float(f1_score(truth[(seen >= lo) & (seen < hi)], pred[(seen >= lo) & (seen < hi)],
                                                       average="weighted")) if np.any((seen >= lo) & (seen < hi)) else None
                                  for name, lo, hi in BINS}
    return row


def evaluate(tokens, weight, bias, labels, groups, stats) -> dict:
    """Scores without correction, with the online prior (live protocol), and with a neutral baseline."""
    from ecmf_edge.train.branches.face import mer_labels

    truth = mer_labels(labels)
    plain = _mer(tokens @ weight.T + bias)
    rows = {"without": _scores(plain, truth, groups)}
    if stats is not None:
        live = _live(tokens, groups, stats)
        index = np.array([i for i, _, _ in live])
        seen = np.array([s for _, s, _ in live])
        corrected = np.stack([t for _, _, t in live])
        rows["online prior"] = _scores(_mer(corrected @ weight.T + bias), truth[index], groups[index], seen)
        rows["without (same rows)"] = _scores(plain[index], truth[index], groups[index], seen)
        rows.update(_baseline(tokens, weight, bias, truth, groups, stats))
    return rows


def _baseline(tokens, weight, bias, truth, groups, stats) -> dict:
    """People with a neutral image and another image: the first neutral image is the baseline, the rest scored."""
    from ecmf_edge.labels import MER2025_LABELS

    neutral = MER2025_LABELS.index("neutral")
    rows, base, plain = [], [], []
    offset_of = stats.baseline_offset
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        neutral_members = members[truth[members] == neutral]
        if not len(neutral_members) or len(members) < 2:
            continue
        ref = neutral_members[0]
        rest = members[members != ref]
        offset = offset_of(tokens[ref])
        rows.extend(rest)
        base.append(tokens[rest] - offset)
        plain.append(tokens[rest])
    if not rows:
        return {}
    rows = np.array(rows)
    return {"neutral baseline (people with one)": _scores(_mer(np.concatenate(base) @ weight.T + bias), truth[rows], groups[rows]),
            "without (same people)": _scores(_mer(np.concatenate(plain) @ weight.T + bias), truth[rows], groups[rows])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", default="ecmf_edge/weights", help="folder of the face branch (face_encoder.json + .npz)")
    parser.add_argument("--pack", required=True, help="face pack of the training people (benchmarks/face_backbone.py pack)")
    parser.add_argument("--data", help="corpora folder (with --test)")
    parser.add_argument("--test", action="store_true", help="score the test people once with the branch's stored choice")
    parser.add_argument("--write", action="store_true", help="store the chosen statistics in the branch's face_encoder.json")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from ecmf_edge.build.face_weights import finetuned_network, finetuned_record
    from ecmf_edge.labels import FER2013_LABELS
    from ecmf_edge.train.branches.face import FaceTrainOptions, _val_split, load_face_pack
    from ecmf_edge.vision.resting_face import RestingFaceStats

    folder = Path(args.branch)
    record = finetuned_record(folder)
    _, size = finetuned_network(record)
    pack = load_face_pack(Path(args.pack) / "faces.npz", size)
    opts = FaceTrainOptions()
    fit_idx, val_idx = _val_split(pack, opts.val_fraction, opts.seed)
    fit = pack.subset(fit_idx)
    cache = Path("bench-out") / "face_calibration_cache"
    fit_tokens, weight, bias = _tokens(folder, fit, cache / "fit.npz")
    targets = {"in-the-wild training faces": fit_tokens[fit.corpora == "faces_wild"].mean(0),
               "all training faces": fit_tokens.mean(0)}
    neutral_mean = fit_tokens[fit.labels == FER2013_LABELS.index("neutral")].mean(0).astype(np.float32)
    results: dict = {"size": size}
    table = []
    if not args.test:
        val = pack.subset(val_idx)
        keep = val.corpora != "fer2013"  # FER2013 has no person ids: one image per 'person'
        val = val.subset(np.flatnonzero(keep))
        val_tokens, _, _ = _tokens(folder, val, cache / "val.npz")
        online_best, any_best, baseline_best = None, None, None
        for target_name, target in targets.items():
            for k in PRIOR_VIEWS:
                for strength in STRENGTHS:
                    stats = RestingFaceStats(target.astype(np.float32), neutral_mean, k, strength, strength)
                    rows = evaluate(val_tokens, weight, bias, val.labels, val.groups, stats)
                    key = f"{target_name}, prior {k:g} views, strength {strength:g}"
                    results[key] = rows
                    online, plain = rows["online prior"], rows["without (same rows)"]
                    gains = [v - plain["by_views_before"][b] for b, v in online["by_views_before"].items() if v is not None]
                    table.append({"setting": key, "without": plain["weighted_f1"], "online": online["weighted_f1"],
                                  "per_person": online["per_person_accuracy"], "worst_bin_gain": min(gains),
                                  "baseline": rows["neutral baseline (people with one)"]["weighted_f1"],
                                  "baseline_without": rows["without (same people)"]["weighted_f1"],
                                  **{b: v for b, v in online["by_views_before"].items()}})
                    score = online["weighted_f1"]
                    # on by default only if it helps overall and no point of the curve is worse than without
                    if min(gains) >= -0.005 and score > plain["weighted_f1"] and (online_best is None or score > online_best[0]):
                        online_best = (score, stats, key)
                    if any_best is None or score > any_best[0]:
                        any_best = (score, stats, key)
                    base = rows["neutral baseline (people with one)"]["weighted_f1"]
                    if baseline_best is None or base > baseline_best[0]:
                        baseline_best = (base, strength, key)
        print_table(table, [("setting", "held-out training people", ""), ("without", "without", ".4f"),
                            ("online", "online prior", ".4f"), ("per_person", "per-person acc", ".4f"),
                            ("worst_bin_gain", "worst bin gain", "+.4f")] + [(b, b, ".4f") for b, _, _ in BINS]
                    + [("baseline", "neutral baseline", ".4f"), ("baseline_without", "(without)", ".4f")])
        chosen = online_best or any_best
        stats = RestingFaceStats(chosen[1].population_mean, neutral_mean, chosen[1].prior_views, chosen[1].strength,
                                 baseline_best[1], online_default=online_best is not None)
        results["chosen"] = {"online_prior": chosen[2], "online_default": online_best is not None,
                             "baseline_strength": baseline_best[1]}
        print(f"online prior: {chosen[2]} ({'on' if online_best else 'off'} by default); baseline strength "
              f"{baseline_best[1]:g} (held-out weighted F1 {baseline_best[0]:.4f})")
        if args.write:
            record["resting_face"] = {**stats.to_dict(), "chosen": results["chosen"],
                                      "chosen_on": "held-out training people (benchmarks/face_calibration.py)"}
            (folder / "face_encoder.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            print(f"wrote the statistics into {folder / 'face_encoder.json'}")
    else:
        from types import SimpleNamespace

        from ecmf_edge.train.branches.run import face_corpora

        stats = RestingFaceStats.from_spec(record)
        results["stored"] = record.get("resting_face", {}).get("chosen")
        if stats is None:
            raise SystemExit("the branch has no resting_face statistics: run this script without --test and with --write first")
        data = Path(args.data)
        _, tests = face_corpora(SimpleNamespace(fer2013=data / "fer2013", ckplus=data / "ckplus", faces_wild=data / "faces_wild"), size)
        for name in ("faces_wild_heldout_people", "ckplus_heldout_subjects"):
            split = tests[name]
            tokens, _, _ = _tokens(folder, split, cache / f"{name}.npz")
            rows = evaluate(tokens, weight, bias, split.labels, split.groups, stats)
            results[name] = rows
            for setting, row in rows.items():
                table.append({"split": name, "setting": setting, **{k: v for k, v in row.items() if k != "by_views_before"},
                              **(row.get("by_views_before") or {})})
        print_table(table, [("split", "test split", ""), ("setting", "", ""), ("weighted_f1", "weighted F1", ".4f"),
                            ("per_person_accuracy", "per-person acc", ".4f"), ("neutral_recall", "neutral recall", ".3f"),
                            ("neutral_as_sad_or_angry", "neutral->sad/angry", ".3f"), ("n", "n", "")]
                    + [(b, b, ".4f") for b, _, _ in BINS])
    path = write_report(args.json or f"bench-out/face_calibration{'_test' if args.test else ''}.json",
                        {"benchmark": "face_calibration", **results, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
