"""Does the local LLM's label scoring add to the text branch? Measured on MELD, chosen without dev.

Data: the MELD *training* dialogues the shipped text branch held out (10 %, seed 0: it never trained
on them, it only chose its epoch and class offsets there) are where every model here is fitted and
every setting chosen (grouped cross-validation by dialogue); MELD dev is scored once at the end.

Per utterance (with its two earlier utterances): the text branch's embedding and class
probabilities, and the LLM scorer's label log-probabilities (:mod:`ecmf_edge.text.llm_scorer`).
Pairs of logistic regressions, the same model without and with the LLM's input:

* ``embedding`` vs ``embedding + llm``: a text head over the branch's embedding;
* ``branch`` vs ``branch + llm``: the branch's own log-probabilities, re-weighted, beside the LLM's;
* ``llm`` alone (how much the LLM knows by itself).

Each pair is fitted with three seeds (the seed shuffles the cross-validation folds that choose C);
the dev difference comes with a paired bootstrap 95 % interval over dev utterances.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Features", "extract", "compare", "VARIANTS", "held_out_training"]

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# name -> (feature blocks without the LLM, with it)
VARIANTS = {"embedding": (("embedding",), ("embedding", "llm")),
            "branch": (("branch",), ("branch", "llm")),
            "llm alone": ((), ("llm",))}


@dataclass
class Features:
    """Per-utterance features of one split."""

    embedding: np.ndarray
    branch: np.ndarray
    llm: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    llm_ms: np.ndarray

    def blocks(self, names: Sequence[str]) -> np.ndarray:
        return np.hstack([getattr(self, n) for n in names])


def held_out_training(train: Sequence[Any]) -> list[Any]:
    """The MELD training utterances the shipped text branch held out (its seed-0, 10 % dialogue split)."""
    from ecmf_edge.train.branches.text import _val_dialogues

    dialogues = np.array([u.dialogue_id for u in train])
    mask = _val_dialogues(dialogues, 0.1, 0)
    return [u for u, held in zip(train, mask) if held]


def extract(utterances: Sequence[Any], branch: Any, scorer: Any, labels: Sequence[str],
            progress: Callable[[int, int], None] | None = None) -> Features:
    """Text-branch embedding and log-probabilities, and the scorer's label log-probabilities, per utterance."""
    index = {label: i for i, label in enumerate(labels)}
    emb, br, llm, ms = [], [], [], []
    for k, u in enumerate(utterances):
        e, p = branch(u.text, u.history)
        emb.append(e)
        br.append(np.log(np.clip(p, 1e-6, 1.0)))
        if scorer is not None:
            result = scorer.score(u.text, u.history)
            llm.append(result.log_probs)
            ms.append(result.latency_ms)
        if progress is not None:
            progress(k + 1, len(utterances))
    n = len(utterances)
    return Features(np.array(emb, np.float32), np.array(br, np.float32),
                    np.array(llm, np.float32) if llm else np.zeros((n, 0), np.float32),
                    np.array([index[u.label] for u in utterances]), np.array([u.dialogue_id for u in utterances]),
                    np.array(ms, np.float64))


def _fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> Any:
    """Standardise + logistic regression, C chosen by 5-fold grouped cross-validation (weighted F1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    shuffled = dict(zip(unique, rng.permutation(len(unique))))
    fold_groups = np.array([shuffled[g] for g in groups])
    best_c, best = C_GRID[0], -1.0
    for c in C_GRID:
        scores = []
        for fit, val in GroupKFold(n_splits=5).split(x, y, fold_groups):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            model.fit(x[fit], y[fit])
            scores.append(f1_score(y[val], model.predict(x[val]), average="weighted"))
        if np.mean(scores) > best:
            best, best_c = float(np.mean(scores)), c
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best_c, max_iter=2000))
    model.fit(x, y)
    model.chosen_c, model.cv_f1 = best_c, best
    return model


def _bootstrap(y: np.ndarray, without: list[np.ndarray], with_: list[np.ndarray], rounds: int = 1000,
               seed: int = 0) -> tuple[float, float]:
    """95 % interval of the seed-averaged weighted-F1 difference (with - without), resampling dev utterances."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        d = [f1_score(y[pick], b[pick], average="weighted") - f1_score(y[pick], a[pick], average="weighted")
             for a, b in zip(without, with_)]
        diffs.append(np.mean(d))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def compare(fit: Features, dev: Features, seeds: Sequence[int] = (0, 1, 2), rounds: int = 1000) -> list[dict]:
    """Each variant without and with the LLM: dev weighted F1 per seed, the mean difference and its interval."""
    from sklearn.metrics import f1_score

    rows = []
    for name, (plain, with_llm) in VARIANTS.items():
        preds: dict[str, list[np.ndarray]] = {"without": [], "with": []}
        chosen: dict[str, list[float]] = {"without": [], "with": []}
        for seed in seeds:
            for key, blocks in (("without", plain), ("with", with_llm)):
                if not blocks:
                    preds[key].append(np.full(len(dev.y), np.bincount(fit.y).argmax()))
                    continue
                model = _fit(fit.blocks(blocks), fit.y, fit.groups, seed)
                chosen[key].append(model.chosen_c)
                preds[key].append(model.predict(dev.blocks(blocks)))
        f_without = [f1_score(dev.y, p, average="weighted") for p in preds["without"]]
        f_with = [f1_score(dev.y, p, average="weighted") for p in preds["with"]]
        low, high = _bootstrap(dev.y, preds["without"], preds["with"], rounds)
        rows.append({"variant": name, "without_llm": [round(v, 4) for v in f_without],
                     "with_llm": [round(v, 4) for v in f_with],
                     "mean_without": round(float(np.mean(f_without)), 4), "mean_with": round(float(np.mean(f_with)), 4),
                     "difference": round(float(np.mean(f_with) - np.mean(f_without)), 4),
                     "ci95": [round(low, 4), round(high, 4)], "chosen_c": chosen})
    return rows


def time_scorer(scorer: Any, utterances: Sequence[Any], count: int = 40) -> dict[str, float]:
    """Milliseconds per utterance, warm (instruction prefix in the KV cache) and cold (cache reset first)."""
    warm, cold = [], []
    for u in utterances[:count]:
        started = time.perf_counter()
        scorer.score(u.text, u.history)
        warm.append((time.perf_counter() - started) * 1000.0)
    for u in utterances[:count // 2]:
        scorer._llm.reset()
        started = time.perf_counter()
        scorer.score(u.text, u.history)
        cold.append((time.perf_counter() - started) * 1000.0)
    return {"warm_median_ms": round(float(np.median(warm)), 1), "warm_p95_ms": round(float(np.percentile(warm, 95)), 1),
            "cold_median_ms": round(float(np.median(cold)), 1), "cold_p95_ms": round(float(np.percentile(cold, 95)), 1)}
