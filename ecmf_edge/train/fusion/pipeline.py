"""``ecmf-edge train`` / ``ecmf-edge eval``: corpora -> cached features -> head -> reports.

Steps: read the fixed subsets (:mod:`.corpora`), extract or load cached features, hold
out 10 % of the training groups of every corpus for early stopping, refine labels,
train the head, then report on the person/dialogue-independent test splits:

* per corpus and per modality family (speech, face, text) on real unimodal test samples;
* the modality ablation (V, A, T, V+A, V+T, A+T, V+A+T) — single modalities on the real
  test samples, combinations on class-matched cross-corpus combinations of test samples
  (clearly labelled as such: there is no real audio-visual test data here);
* the component ablation: without attention, without the residual, without refinement.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ecmf_edge import __version__
from ecmf_edge.labels import MER2025_LABELS
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.train.corpus_features import FeatureTable, cache_dims, extract_table, feature_key
from ecmf_edge.train.datasets.corpora import CORPORA_BY_MODALITY, CorpusPaths, load_splits
from ecmf_edge.train.fusion.head import HeadConfig
from ecmf_edge.train.fusion.refine import RefineOptions, refine_labels
from ecmf_edge.train.fusion.train import TrainOptions, make_combinations, predict_table, train_head
from ecmf_edge.train.metrics import Report, evaluate, format_report, render_confusion_png

__all__ = ["TrainPlan", "run_training", "evaluate_head", "MODALITY_SETS"]

logger = logging.getLogger("ecmf_edge")

FAMILIES = CORPORA_BY_MODALITY
MODALITY_SETS = {"V": ("frame", "face"), "A": ("audio",), "T": ("text",), "V+A": ("frame", "face", "audio"),
                 "V+T": ("frame", "face", "text"), "A+T": ("audio", "text"), "V+A+T": ("frame", "face", "audio", "text")}
def speech_branch_tokens(table: FeatureTable, bundle) -> FeatureTable:
    """Replace raw audio tokens by the speech branch's embeddings, normalised as the live loop does it:
    each speaker's clips in turn, with the running statistics of the clips so far shrunk towards the
    population prior, blended with the population path where the head has one (so the head learns from the
    tokens it will see, early windows included)."""
    if not bundle.has("speech_head"):
        return table
    from ecmf_edge.train.branches.speech import speech_tokens

    spec = bundle.spec("speech_head")
    session = bundle.session(spec["file"])
    rows = np.flatnonzero(table.mask[:, MODALITIES.index("audio")] > 0)
    out = np.zeros((len(table), int(spec["attributes"]["embedding_dim"])), np.float32)
    if rows.size:  # as live: running statistics, and the population path blended by the clips heard before
        out[rows] = speech_tokens(session, spec["attributes"], table.features["audio"][rows], table.groups[rows])
    table.features["audio"] = out
    return table


@dataclass(frozen=True)
class TrainPlan:
    """Everything `ecmf-edge train` needs."""

    paths: CorpusPaths
    cache_dir: Path
    out_dir: Path
    head: HeadConfig = HeadConfig()
    train: TrainOptions = TrainOptions()
    refine: RefineOptions | None = RefineOptions()
    # Also train the component ablations (no attention / no residual / no refinement).
    ablations: bool = True
    combination_count: int = 3000


def _val_split(table: FeatureTable, fraction: float = 0.1, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    from ecmf_edge.train.datasets.base import held_out_groups

    val = held_out_groups(table.groups, table.corpora, fraction, seed)
    return np.flatnonzero(~val), np.flatnonzero(val)


def _report(model, table: FeatureTable, labels) -> Report:
    index = {l: i for i, l in enumerate(labels)}
    probs, _ = predict_table(model, table)
    return evaluate([index[l] for l in table.labels], probs.argmax(1), labels)


def _keep_tokens(table: FeatureTable, tokens: tuple[str, ...]) -> FeatureTable:
    mask = table.mask.copy()
    for i, m in enumerate(MODALITIES):
        if m not in tokens:
            mask[:, i] = 0.0
    keep = mask.sum(1) > 0
    sub = table.subset(np.flatnonzero(keep))
    sub.mask = mask[keep]
    return sub


def modality_ablation(model, test: FeatureTable, labels, count: int, seed: int = 0) -> dict[str, dict]:
    """Scores per modality set: real unimodal samples for V, A, T; class-matched combinations otherwise."""
    index = {l: i for i, l in enumerate(labels)}
    y = np.array([index[l] for l in test.labels])
    rng = np.random.default_rng(seed)
    feats, mask, cy = make_combinations(test, y, count, rng, modality_dropout=0.0)
    count = len(cy)
    combos = FeatureTable(np.arange(count).astype(str), np.full(count, "combination"), np.arange(count).astype(str),
                          np.array([labels[k] for k in cy]), feats, mask, np.zeros((count, 7), np.float32))
    out = {}
    for name, tokens in MODALITY_SETS.items():
        if len(name) == 1:  # real samples that carry this modality
            sub = _keep_tokens(test, tokens)
            kind = "real unimodal test samples"
        else:
            sub = _keep_tokens(combos, tokens)
            sub = sub.subset(np.flatnonzero(np.all(sub.mask[:, [MODALITIES.index(t) for t in tokens]] > 0, axis=1)))
            kind = "class-matched cross-corpus combinations of test samples (not real multimodal recordings)"
        if len(sub) == 0:
            continue
        report = _report(model, sub, labels)
        out[name] = {"weighted_f1": round(report.weighted_f1, 4), "accuracy": round(report.accuracy, 4), "n": report.n, "data": kind}
    return out


def evaluate_head(model, test: FeatureTable, labels, out_dir: Path | None = None, tag: str = "") -> dict:
    """Reports per corpus and per modality family (real test samples only)."""
    results = {}
    for corpus in np.unique(test.corpora):
        sub = test.subset(np.flatnonzero(test.corpora == corpus))
        report = _report(model, sub, labels)
        results[f"corpus:{corpus}"] = report
    for family, corpora in FAMILIES.items():
        members = np.flatnonzero(np.isin(test.corpora, corpora))
        if members.size:
            results[f"family:{family}"] = _report(model, test.subset(members), labels)
    if out_dir is not None:
        for name, report in results.items():
            render_confusion_png(report, Path(out_dir) / f"confusion{tag}_{name.replace(':', '_')}.png", f"{name} {tag}".strip())
    return results


def run_training(plan: TrainPlan, extractor, progress: bool = True) -> dict:
    """Train, evaluate, ablate and save a head; returns the summary dict (also written as JSON)."""
    from ecmf_edge.train.fusion.save import save_head

    labels = tuple(MER2025_LABELS)
    started = time.perf_counter()
    splits = load_splits(plan.paths)
    if not splits:
        from ecmf_edge.errors import InputError

        raise InputError("no corpus given: pass --data DIR (with ravdess/ emodb/ fer2013/ ckplus/ meld/) or per-corpus paths")
    train_samples = [s for sp in splits.values() for s in sp.train]
    test_samples = [s for sp in splits.values() for s in sp.test]
    dims = extractor.bundle.token_dims()
    raw_dims = cache_dims(extractor.bundle)  # the cache holds raw audio tokens; the speech branch maps them
    full_train = speech_branch_tokens(extract_table(train_samples, extractor, plan.cache_dir, raw_dims, progress), extractor.bundle)
    test = speech_branch_tokens(extract_table(test_samples, extractor, plan.cache_dir, raw_dims, progress), extractor.bundle)
    extract_seconds = time.perf_counter() - started
    fit_idx, val_idx = _val_split(full_train)
    fit, val = full_train.subset(fit_idx), full_train.subset(val_idx)
    refine_result = refine_labels(fit, labels, plan.refine) if plan.refine else None
    if refine_result:
        logger.info(refine_result.summary())
    head = replace(plan.head, dims=dims)
    variants = {"full": (head, refine_result)}
    if plan.ablations:
        variants.update({"no_attention": (replace(head, attention=False), refine_result),
                         "no_residual": (replace(head, residual=False), refine_result),
                         "no_refinement": (head, None)})
    out_dir = Path(plan.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"variants": {}}
    full_model = None
    for name, (config, refined) in variants.items():
        t0 = time.perf_counter()
        result = train_head(fit, val, labels, config, plan.train, refined.targets if refined else None)
        reports = evaluate_head(result.model, test, labels, out_dir if name == "full" else None)
        combos = modality_ablation(result.model, test, labels, plan.combination_count)
        summary["variants"][name] = {
            "train_seconds": round(time.perf_counter() - t0, 1), "best_epoch": result.best_epoch,
            "val_weighted_f1": round(result.val_report.weighted_f1, 4),
            "test": {k: {"weighted_f1": round(r.weighted_f1, 4), "accuracy": round(r.accuracy, 4), "n": r.n} for k, r in reports.items()},
            "combinations": {k: v["weighted_f1"] for k, v in combos.items() if "+" in k},
        }
        if name == "full":
            full_model, full_reports, history = result.model, reports, result.history
    ablation = modality_ablation(full_model, test, labels, plan.combination_count)
    counts = {c: {"train": int((fit.corpora == c).sum()), "val": int((val.corpora == c).sum()),
                  "test": int((test.corpora == c).sum())} for c in np.unique(full_train.corpora)}
    record = {
        "version": __version__, "labels": list(labels), "modalities": list(MODALITIES), "dims": dims,
        "token_sources": {"frame": "frame_encoder.features (mean over frames)", "face": "face_encoder.features (aligned crop)",
                          "audio": ("speech_head.embedding of the speaker-normalised concat(audio_encoder.pooled_mid, prosody 16)"
                                    if extractor.bundle.has("speech_head") else
                                    "concat(audio_encoder pooled token, prosody 16) over VAD speech, loudness-normalised"),
                          "text": ("text_branch.embedding of (utterance, context)" if extractor.bundle.has("text_branch")
                                   else "[text_encoder(enriched); text_encoder(transcript)]")},
        "config": head.to_dict(), "train_options": plan.train.to_dict(),
        "refinement": None if refine_result is None else {"changed_soft": refine_result.changed_soft,
                                                          "changed_hard": refine_result.changed_hard, "per_corpus": refine_result.per_corpus},
        "feature_key": feature_key(extractor.bundle, extractor),
        "encoder_files": {k: extractor.bundle.manifest["files"][extractor.bundle.spec(k)["file"]]["sha256"]
                          for k in ("face_encoder", "frame_encoder", "audio_encoder", "text_encoder")},
        "llm": None if extractor.enricher is None else extractor.enricher.path.name,
        "data": counts,
        "metrics": {k: r.to_dict() for k, r in full_reports.items()},
        "modality_ablation": ablation,
        "component_ablation": {k: {**v["test"], "combinations": v["combinations"]} for k, v in summary["variants"].items()},
        "history": history,
        "extract_seconds": round(extract_seconds, 1),
    }
    save_head(full_model, out_dir, record, test)
    summary.update({"record": str(out_dir / "fusion_head.json"), "modality_ablation": ablation, "data": counts,
                    "refinement": record["refinement"], "reports": {k: format_report(r, k) for k, r in full_reports.items()}})
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary
