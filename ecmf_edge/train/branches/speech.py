"""Speech branch: Whisper middle-layer statistics + prosody, speaker-normalised, with a trained head.

``ecmf-edge train --branch speech`` reads RAVDESS actors 01-18 and the EmoDB subset,
extracts the audio token of every clip (VAD speech, loudness-normalised to
:data:`~ecmf_edge.audio.io.SPEECH_TARGET_DBFS`;
``audio_encoder``'s ``pooled_mid`` + 16 prosody statistics, cached), z-scores every
feature per speaker (:mod:`.speaker_norm`), and trains an ensemble MLP head
(:mod:`.classifier`) with early stopping on held-out *training* speakers. It reports on
the fixed speaker-independent test split (RAVDESS actors 15-18, EmoDB speakers 03 and 14):

* the head with each test speaker's statistics from all of that speaker's clips;
* the head in the streaming protocol of the live loop: each clip normalised with the
  statistics of the clips heard before it and itself, starting from the population prior;
* the simple baselines in the same run: logistic regression on globally standardised
  features, and on the same speaker-normalised features.

Outputs in ``out_dir``: ``speech_head.onnx`` (input ``features``, outputs ``embedding``,
``logits``, ``probs``), ``speech_head.json`` (labels, the speaker-normalisation prior,
metrics, data counts, options) and ``speech_head_reference.npz`` (rows and probabilities
that ``ecmf-edge export`` re-checks).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecmf_edge.audio.io import SPEECH_TARGET_DBFS
from ecmf_edge.audio.speaker_norm import STD_FLOOR, SpeakerNormalizer, normalize_by_group
from ecmf_edge.build.common import json_default
from ecmf_edge.errors import InputError
from ecmf_edge.train.branches.classifier import (
    HeadOptions,
    blended_module,
    export_blended,
    export_classifier,
    load_classifier,
    predict_blended,
    predict_classifier,
    train_classifier,
    train_population_path,
)
from ecmf_edge.train.datasets.base import held_out_groups
from ecmf_edge.train.metrics import Report, evaluate

__all__ = ["SpeechPlan", "run_speech_branch", "population_prior", "feature_prior_windows", "streaming_normalize",
           "streaming_normalize_heard", "blend_weight", "population_standardize", "speech_tokens", "HEAD_FILE", "RECORD_FILE"]

logger = logging.getLogger("ecmf_edge")

HEAD_FILE = "speech_head.onnx"
RECORD_FILE = "speech_head.json"
REFERENCE_FILE = "speech_head_reference.npz"
SPEECH_CORPORA = ("ravdess", "emodb")


@dataclass(frozen=True)
class SpeechPlan:
    """What ``ecmf-edge train --branch speech`` needs."""

    cache_dir: Path
    out_dir: Path
    head: HeadOptions = HeadOptions()
    # Windows of population statistics the streaming normaliser starts from: one number, or (prior_scale set)
    # per feature, prior_scale x within- / between-speaker variance (feature_prior_windows).
    prior_windows: float = 8.0
    prior_scale: float | None = 0.5
    # The population path and its blend: the normalised path's weight is blend_max_weight * n / (n + blend_windows),
    # n = windows of the speaker heard before; None: no population path (a plain speaker-normalised head).
    blend_windows: float | None = 2.0
    blend_max_weight: float = 1.0
    # A folder whose speech_head.onnx's speaker-normalised head is kept (the token the fusion head was trained on):
    # only the population path is trained. None: train the head too.
    keep_head: Path | None = None
    val_fraction: float = 0.15
    seed: int = 0


def population_prior(features: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean of the speakers' means, sqrt of the mean of their variances): a typical speaker."""
    means = np.stack([features[groups == g].mean(0) for g in np.unique(groups)])
    variances = np.stack([features[groups == g].var(0) for g in np.unique(groups)])
    return means.mean(0), np.sqrt(variances.mean(0))


def feature_prior_windows(features: np.ndarray, groups: np.ndarray, scale: float = 1.0, low: float = 0.25,
                          high: float = 64.0) -> np.ndarray:
    """Per-feature prior weight (windows) = ``scale`` x within-speaker variance / variance of the speakers' means,
    clipped to [low, high]: the empirical-Bayes weight of the population mean against a speaker's own windows.
    A feature on which speakers differ much (voice, microphone) follows the speaker after a window or two; one
    on which they hardly differ keeps the population's statistics long."""
    speakers = np.unique(groups)
    means = np.stack([features[groups == g].mean(0) for g in speakers])
    within = np.stack([features[groups == g].var(0) for g in speakers]).mean(0)
    return np.clip(scale * within / (means.var(0) + 1e-12), low, high)


def streaming_normalize(features: np.ndarray, groups: np.ndarray, prior: tuple[np.ndarray, np.ndarray],
                        prior_windows: float | np.ndarray, seed: int = 0) -> np.ndarray:
    """Each speaker's clips in a random order, each normalised as the live loop would: running
    statistics of the clips so far (itself included) shrunk towards ``prior``."""
    return streaming_normalize_heard(features, groups, prior, prior_windows, seed)[0]


def streaming_normalize_heard(features: np.ndarray, groups: np.ndarray, prior: tuple[np.ndarray, np.ndarray],
                              prior_windows: float | np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`streaming_normalize` and, per row, how many of its speaker's clips were heard before it."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(features, dtype=np.float32)
    heard = np.zeros(len(features), np.int64)
    for group in np.unique(groups):
        rows = rng.permutation(np.flatnonzero(groups == group))
        norm = SpeakerNormalizer(*prior, prior_windows=prior_windows)
        for n, row in enumerate(rows):
            out[row] = norm.normalize(features[row])
            heard[row] = n
    return out, heard


def blend_weight(heard: np.ndarray, windows: float, max_weight: float = 1.0) -> np.ndarray:
    """The speaker-normalised path's weight after ``heard`` windows of the speaker (column vector)."""
    heard = np.asarray(heard, np.float64).reshape(-1, 1)
    return (max_weight * heard / (heard + windows)).astype(np.float32)


def population_standardize(features: np.ndarray, prior: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rows standardised with the typical training speaker's statistics alone (the population path's input)."""
    return ((features - prior[0]) / (prior[1] + STD_FLOOR)).astype(np.float32)


def speech_tokens(session, spec: dict, features: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """The branch's embeddings of raw tokens under the live protocol (each speaker's clips in a random order,
    running statistics; heads with a population path blended by the clips heard before), from the exported
    ``speech_head.onnx`` ``session`` and its manifest entry / training record ``spec``."""
    norm = spec["speaker_normalisation"]
    prior = (np.asarray(norm["prior_mean"], np.float64), np.asarray(norm["prior_std"], np.float64))
    normalised, heard = streaming_normalize_heard(features, groups, prior, np.asarray(norm["prior_windows"], np.float64), seed)
    feeds = {"features": normalised}
    if "blend" in norm:
        feeds.update(population=population_standardize(features, prior),
                     weight=blend_weight(heard, float(norm["blend"]["windows"]), float(norm["blend"]["max_weight"])))
    return session.run(["embedding"], feeds)[0]


def _scores(pred: np.ndarray, y: np.ndarray, corpora: np.ndarray, labels) -> dict[str, Report]:
    return {c: evaluate(y[corpora == c], pred[corpora == c], labels) for c in np.unique(corpora)}


def _logistic(x_fit, y_fit, x_test) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1, max_iter=3000).fit(x_fit, y_fit).predict(x_test)


def run_speech_branch(splits: dict, extractor, plan: SpeechPlan, labels: tuple[str, ...], progress: bool = True) -> dict:
    """Train, evaluate and save the speech branch; returns the record (also written as JSON)."""
    from ecmf_edge.train.corpus_features import cache_dims, extract_table, feature_key

    started = time.perf_counter()
    used = {c: splits[c] for c in SPEECH_CORPORA if c in splits}
    if not used:
        raise InputError("the speech branch needs RAVDESS and/or EmoDB: pass --data DIR with ravdess/ and emodb/ "
                         "(or --ravdess / --emodb)")
    dims = cache_dims(extractor.bundle)
    train = extract_table([s for sp in used.values() for s in sp.train], extractor, plan.cache_dir, dims, progress)
    test = extract_table([s for sp in used.values() for s in sp.test], extractor, plan.cache_dir, dims, progress)
    extract_seconds = time.perf_counter() - started
    index = {l: i for i, l in enumerate(labels)}
    keep_tr, keep_te = train.mask[:, 2] > 0, test.mask[:, 2] > 0  # clips where the VAD found speech
    x_tr, g_tr, c_tr = train.features["audio"][keep_tr], train.groups[keep_tr], train.corpora[keep_tr]
    y_tr = np.array([index[l] for l in train.labels[keep_tr]])
    x_te, g_te, c_te = test.features["audio"][keep_te], test.groups[keep_te], test.corpora[keep_te]
    y_te = np.array([index[l] for l in test.labels[keep_te]])

    t0 = time.perf_counter()
    n_tr = normalize_by_group(x_tr, g_tr)
    val = held_out_groups(g_tr, c_tr, plan.val_fraction, plan.seed)
    if plan.keep_head is not None:
        module = load_classifier(Path(plan.keep_head) / HEAD_FILE, plan.head)
        kept = Path(plan.keep_head) / RECORD_FILE
        members = json.loads(kept.read_text(encoding="utf-8")).get("members", []) if kept.is_file() else []
    else:
        module, members = train_classifier(n_tr[~val], y_tr[~val], n_tr[val], y_tr[val], labels, plan.head)
    prior = population_prior(x_tr.astype(np.float64), g_tr)
    windows: float | np.ndarray = plan.prior_windows
    if plan.prior_scale is not None:
        windows = feature_prior_windows(x_tr.astype(np.float64), g_tr, plan.prior_scale)
    p_tr, p_te = population_standardize(x_tr, prior), population_standardize(x_te, prior)
    paths_record: list[dict] = []
    if plan.blend_windows is not None:
        paths, paths_record = train_population_path(module, p_tr[~val], n_tr[~val], y_tr[~val], p_tr[val], y_tr[val], labels,
                                                    plan.head)
        head = blended_module(module, paths)

        def predict(z: np.ndarray, population: np.ndarray, weight: np.ndarray) -> np.ndarray:
            return predict_blended(head, z, population, weight)[1]
    else:
        def predict(z: np.ndarray, population: np.ndarray, weight: np.ndarray) -> np.ndarray:
            return predict_classifier(module, z)[1]
    train_seconds = time.perf_counter() - t0

    def live(seed: int) -> np.ndarray:
        z, heard = streaming_normalize_heard(x_te, g_te, prior, windows, seed)
        return predict(z, p_te, blend_weight(heard, plan.blend_windows or 1.0, plan.blend_max_weight)).argmax(1)

    ones, zeros = np.ones(len(x_te), np.float32), np.zeros(len(x_te), np.float32)
    offline = _scores(predict(normalize_by_group(x_te, g_te), p_te, ones).argmax(1), y_te, c_te, labels)
    streaming = _scores(live(0), y_te, c_te, labels)
    orders = [_scores(live(seed), y_te, c_te, labels) for seed in range(5)]
    no_adaptation = _scores(predict(p_te, p_te, zeros if plan.blend_windows is not None else ones).argmax(1), y_te, c_te, labels)
    mean, std = x_tr.mean(0), x_tr.std(0) + STD_FLOOR
    baselines = {
        "logreg_global_standardisation": _scores(_logistic((x_tr - mean) / std, y_tr, (x_te - mean) / std), y_te, c_te, labels),
        "logreg_speaker_normalised": _scores(_logistic(n_tr, y_tr, normalize_by_group(x_te, g_te)), y_te, c_te, labels),
    }

    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = max(1, len(n_tr) // 64)
    reference = n_tr[::step]
    if plan.blend_windows is not None:
        population = p_tr[::step]
        weight = np.random.default_rng(plan.seed).uniform(0, 1, (len(reference), 1)).astype(np.float32)
        parity = export_blended(head, out / HEAD_FILE, reference, population, weight)
        np.savez_compressed(out / REFERENCE_FILE, features=reference, population=population, weight=weight,
                            probs=predict_blended(head, reference, population, weight)[1])
    else:
        parity = export_classifier(module, out / HEAD_FILE, reference)
        np.savez_compressed(out / REFERENCE_FILE, features=reference, probs=predict_classifier(module, reference)[1])
    normalisation: dict = {"prior_mean": prior[0].astype(np.float32).tolist(), "prior_std": prior[1].astype(np.float32).tolist(),
                           "prior_windows": windows.astype(np.float32).tolist() if isinstance(windows, np.ndarray) else windows,
                           "prior_scale": plan.prior_scale, "std_floor": STD_FLOOR}
    if plan.blend_windows is not None:
        normalisation["blend"] = {"windows": plan.blend_windows, "max_weight": plan.blend_max_weight}

    def table(reports: dict[str, Report]) -> dict:
        return {c: r.to_dict() for c, r in reports.items()}

    record = {
        "branch": "speech", "labels": list(labels),
        "input": f"speaker-normalised concat(audio_encoder.pooled_mid, prosody 16) over VAD speech at {SPEECH_TARGET_DBFS:g} dBFS",
        "feature_key": feature_key(extractor.bundle, extractor, with_text=False),
        "token_output": extractor.bundle.spec("audio_encoder").get("attributes", {}).get("token_output", "pooled"),
        "audio_encoder_sha256": extractor.bundle.manifest["files"][extractor.bundle.spec("audio_encoder")["file"]]["sha256"],
        "dim": int(x_tr.shape[1]), "embedding_dim": plan.head.hidden,
        "speaker_normalisation": normalisation,
        "head": plan.head.to_dict(), "members": members, "population_paths": paths_record,
        "kept_head": str(plan.keep_head) if plan.keep_head is not None else None,
        "data": {c: {"train": int(((c_tr == c) & ~val).sum()), "val": int(((c_tr == c) & val).sum()), "test": int((c_te == c).sum()),
                     "test_speakers": sorted(set(g_te[c_te == c].tolist()))} for c in np.unique(c_tr)},
        "metrics": {"speaker_stats_from_all_clips": table(offline), "streaming_running_stats": table(streaming),
                    "streaming_mean_of_5_orders": {c: {"weighted_f1": round(float(np.mean([o[c].weighted_f1 for o in orders])), 4)}
                                                   for c in orders[0]},
                    "population_prior_only": table(no_adaptation),
                    "baselines": {k: table(v) for k, v in baselines.items()}},
        "extract_seconds": round(extract_seconds, 1), "train_seconds": round(train_seconds, 1),
        "parity": parity,
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2, default=json_default) + "\n", encoding="utf-8")
    return record
