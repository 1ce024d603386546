"""Training the ECMF fusion head on unimodal corpora plus class-matched cross-corpus combinations.

Every real sample here carries one informative modality (a face image, a speech clip or
an utterance's text). The head is trained on those real samples, with modality dropout,
and additionally on *class-matched cross-corpus combinations*: a face, a voice and a text
that carry the same label, drawn from the training split, presented together with a
random subset of their tokens. The combinations teach the cross-modal attention and the
gated pooling to weigh several present modalities; they are not audio-visual recordings,
and scores on such combinations are always reported separately from the real unimodal
test scores.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from ecmf_edge.build.common import require_torch
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.train.corpus_features import FeatureTable
from ecmf_edge.train.datasets.corpora import CORPORA_BY_MODALITY
from ecmf_edge.train.fusion.head import HeadConfig, build_head
from ecmf_edge.train.metrics import Report, evaluate

__all__ = ["TrainOptions", "TrainResult", "train_head", "predict_table", "feature_stats", "make_combinations", "SOURCE_GROUPS"]

logger = logging.getLogger("ecmf_edge")

# Which corpora supply which token(s) of a cross-corpus combination.
SOURCE_GROUPS: dict[str, tuple[str, ...]] = {"visual": CORPORA_BY_MODALITY["face"], "audio": CORPORA_BY_MODALITY["speech"],
                                             "text": CORPORA_BY_MODALITY["text"]}


@dataclass(frozen=True)
class TrainOptions:
    """How the fusion head is trained."""

    # Passes over `samples_per_epoch` draws.
    epochs: int = 30
    samples_per_epoch: int = 12000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    # Probability of dropping each present token (at least one always stays).
    modality_dropout: float = 0.3
    # Share of each batch made of class-matched cross-corpus combinations.
    combination_share: float = 0.3
    # Share of the real draws given to each corpus (others: spread evenly over the rest).
    corpus_shares: dict[str, float] = field(default_factory=lambda: {
        "fer2013": 0.18, "faces_wild": 0.1, "ckplus": 0.05, "ravdess": 0.22, "emodb": 0.12, "meld": 0.33})
    # Stop after this many epochs without a better validation weighted F1.
    patience: int = 8
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: object
    history: list[dict]
    best_epoch: int
    val_report: Report


def feature_stats(table: FeatureTable) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean/std of each modality over the samples where it is present."""
    stats = {}
    for i, m in enumerate(MODALITIES):
        rows = table.features[m][table.mask[:, i] > 0]
        if len(rows) < 2:
            dim = table.features[m].shape[1]
            stats[m] = (np.zeros(dim, np.float32), np.ones(dim, np.float32))
        else:
            stats[m] = (rows.mean(0).astype(np.float32), (rows.std(0) + 1e-3).astype(np.float32))
    return stats


def _draw_weights(table: FeatureTable, shares: dict[str, float]) -> np.ndarray:
    corpora = np.unique(table.corpora)
    given = {c: shares.get(c) for c in corpora}
    rest = [c for c, s in given.items() if s is None]
    left = max(0.0, 1.0 - sum(s for s in given.values() if s is not None))
    weights = np.zeros(len(table), np.float64)
    for c in corpora:
        share = given[c] if given[c] is not None else left / max(len(rest), 1)
        members = table.corpora == c
        weights[members] = share / members.sum()
    return weights / weights.sum()


def make_combinations(table: FeatureTable, labels: np.ndarray, count: int, rng: np.random.Generator,
                      modality_dropout: float) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``count`` class-matched cross-corpus combinations (features, mask, label index)."""
    pools: dict[str, dict[int, np.ndarray]] = {}
    for group, corpora in SOURCE_GROUPS.items():
        members = np.isin(table.corpora, corpora)
        pools[group] = {k: np.flatnonzero(members & (labels == k)) for k in np.unique(labels)}
    classes = [k for k in np.unique(labels) if sum(len(pools[g].get(k, ())) > 0 for g in pools) >= 2]
    if not classes:  # fewer than two modality families: no combination can be made
        count = 0
    feats = {m: np.zeros((count, table.features[m].shape[1]), np.float32) for m in MODALITIES}
    mask = np.zeros((count, len(MODALITIES)), np.float32)
    y = rng.choice(classes, size=count) if count else np.zeros(0, np.int64)
    group_tokens = {"visual": ("frame", "face"), "audio": ("audio",), "text": ("text",)}
    for n, k in enumerate(y):
        for group, tokens in group_tokens.items():
            pool = pools[group].get(k)
            if pool is None or len(pool) == 0:
                continue
            src = pool[rng.integers(len(pool))]
            for t in tokens:
                i = MODALITIES.index(t)
                if table.mask[src, i] > 0:
                    feats[t][n] = table.features[t][src]
                    mask[n, i] = 1.0
        _drop(mask[n], rng, modality_dropout, keep_at_least=2)
    return feats, mask, y


def _drop(row: np.ndarray, rng: np.random.Generator, p: float, keep_at_least: int = 1) -> None:
    present = np.flatnonzero(row > 0)
    if len(present) <= keep_at_least:
        return
    drop = present[rng.random(len(present)) < p]
    if len(present) - len(drop) < keep_at_least:
        drop = rng.permutation(drop)[: len(present) - keep_at_least]
    row[drop] = 0.0


def predict_table(model, table: FeatureTable, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, modality weights) of a trained torch head over a table."""
    torch = require_torch()
    model.eval()
    probs, weights = [], []
    with torch.no_grad():
        for s in range(0, len(table), batch_size):
            sl = slice(s, s + batch_size)
            args = [torch.from_numpy(table.features[m][sl]) for m in MODALITIES] + [torch.from_numpy(table.mask[sl])]
            _, p, w = model(*args)
            probs.append(p.numpy())
            weights.append(w.numpy())
    return np.concatenate(probs), np.concatenate(weights)


def train_head(train: FeatureTable, val: FeatureTable, labels: tuple[str, ...], config: HeadConfig,
               options: TrainOptions | None = None, soft_targets: np.ndarray | None = None) -> TrainResult:
    """Train a head; the epoch with the best validation weighted F1 is kept.

    ``soft_targets`` (N, C) replaces the one-hot labels of ``train`` (label refinement).
    """
    torch = require_torch()
    options = options or TrainOptions()
    rng = np.random.default_rng(options.seed)
    torch.manual_seed(options.seed)
    index = {l: i for i, l in enumerate(labels)}
    y_train = np.array([index[l] for l in train.labels])
    y_val = np.array([index[l] for l in val.labels])
    targets = soft_targets if soft_targets is not None else np.eye(len(labels), dtype=np.float32)[y_train]
    model = build_head(config, feature_stats(train))
    optim = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps = max(1, options.samples_per_epoch // options.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=options.lr, total_steps=steps * options.epochs, pct_start=0.1)
    draw = _draw_weights(train, options.corpus_shares)
    can_combine = len(make_combinations(train, y_train, 1, np.random.default_rng(0), 0.0)[2]) > 0
    n_combo = int(round(options.batch_size * options.combination_share)) if can_combine else 0
    n_real = options.batch_size - n_combo
    best = (-1.0, 0, None)
    history = []
    smooth = options.label_smoothing
    for epoch in range(options.epochs):
        model.train()
        total = 0.0
        for _ in range(steps):
            idx = rng.choice(len(train), size=n_real, p=draw)
            feats = {m: train.features[m][idx] for m in MODALITIES}
            mask = train.mask[idx].copy()
            for row in mask:
                _drop(row, rng, options.modality_dropout)
            tgt = targets[idx]
            if n_combo and can_combine:
                cf, cm, cy = make_combinations(train, y_train, n_combo, rng, options.modality_dropout)
                feats = {m: np.concatenate([feats[m], cf[m]]) for m in MODALITIES}
                mask = np.concatenate([mask, cm])
                tgt = np.concatenate([tgt, np.eye(len(labels), dtype=np.float32)[cy]])
            tgt = tgt * (1.0 - smooth) + smooth / len(labels)
            logits, _, _ = model(*[torch.from_numpy(np.ascontiguousarray(feats[m])) for m in MODALITIES], torch.from_numpy(mask))
            loss = -(torch.from_numpy(tgt.astype(np.float32)) * logits.log_softmax(-1)).sum(-1).mean()
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            sched.step()
            total += loss.item()
        probs, _ = predict_table(model, val)
        report = evaluate(y_val, probs.argmax(1), labels)
        history.append({"epoch": epoch + 1, "loss": round(total / steps, 4), "val_weighted_f1": round(report.weighted_f1, 4),
                        "val_accuracy": round(report.accuracy, 4)})
        logger.info("epoch %d loss %.4f val wF1 %.4f", epoch + 1, total / steps, report.weighted_f1)
        if report.weighted_f1 > best[0]:
            best = (report.weighted_f1, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
        elif epoch + 1 - best[1] >= options.patience:
            break
    model.load_state_dict(best[2])
    probs, _ = predict_table(model, val)
    return TrainResult(model, history, best[1], evaluate(y_val, probs.argmax(1), labels))
