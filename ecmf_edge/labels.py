"""Label sets and the explicit tables that map dataset labels onto them.

A bundle declares its own label list; :data:`MER2025_LABELS` is the default. Dataset
labels are mapped with explicit tables only: nothing is guessed from names. A label
that maps to ``None`` is dropped (disgust, contempt, boredom by default).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ecmf_edge.errors import InputError

__all__ = ["MER2025_LABELS", "LABELS", "FER2013_LABELS", "DATASET_MAPPINGS", "map_label", "map_probabilities"]

# MER2025's six discrete emotions, in the order every default bundle uses.
MER2025_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
LABELS = MER2025_LABELS

# FER2013's seven classes in the dataset's index order: the pretrained face encoder's outputs and the
# face branch's training labels (mapped onto MER2025 with DATASET_MAPPINGS["fer2013"]).
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# dataset -> {dataset label: MER2025 label or None (dropped)}
DATASET_MAPPINGS: dict[str, dict[str, str | None]] = {
    "fer2013": {
        "angry": "angry", "disgust": None, "fear": "worried", "happy": "happy",
        "sad": "sad", "surprise": "surprise", "neutral": "neutral",
    },
    "ravdess": {
        "neutral": "neutral", "calm": "neutral", "happy": "happy", "sad": "sad", "angry": "angry",
        "fearful": "worried", "disgust": None, "surprised": "surprise",
    },
    "emodb": {
        "anger": "angry", "boredom": None, "disgust": None, "fear": "worried",
        "happiness": "happy", "sadness": "sad", "neutral": "neutral",
    },
    "meld": {
        "neutral": "neutral", "joy": "happy", "anger": "angry", "surprise": "surprise",
        "sadness": "sad", "disgust": None, "fear": "worried",
    },
    "cremad": {
        "NEU": "neutral", "ANG": "angry", "HAP": "happy", "SAD": "sad", "FEA": "worried", "DIS": None,
    },
    "ckplus": {
        "neutral": "neutral", "anger": "angry", "happy": "happy", "sadness": "sad", "fear": "worried",
        "surprise": "surprise", "disgust": None, "contempt": None,
    },
    # muxspace/facial_expressions (LFW and film faces, crowd labels; lower-cased)
    "faces_wild": {
        "neutral": "neutral", "anger": "angry", "happiness": "happy", "sadness": "sad", "fear": "worried",
        "surprise": "surprise", "disgust": None, "contempt": None,
    },
}


def map_label(dataset: str, label: str, overrides: Mapping[str, str | None] | None = None) -> str | None:
    """Map one dataset label to the default label set (``None`` = dropped).

    Raises:
        InputError: the dataset or the label is not in the table (add it with ``overrides``).
    """
    table = dict(DATASET_MAPPINGS.get(dataset, {}))
    if not table and not overrides:
        raise InputError(f"no label table for dataset '{dataset}': use one of {', '.join(sorted(DATASET_MAPPINGS))} or pass overrides")
    table.update(overrides or {})
    if label not in table:
        raise InputError(f"label '{label}' is not in the '{dataset}' table ({', '.join(table)}): map it with overrides")
    return table[label]


def map_probabilities(
    probs: np.ndarray, source_labels: Sequence[str], dataset: str, target_labels: Sequence[str] = MER2025_LABELS
) -> np.ndarray:
    """Fold class probabilities over ``source_labels`` onto ``target_labels``.

    Probability mass of dropped classes is removed and the rest renormalised, so the
    result sums to one over the target labels. Works on (C,) or (N, C) arrays.
    """
    probs = np.asarray(probs, dtype=np.float32)
    squeeze = probs.ndim == 1
    probs = np.atleast_2d(probs)
    out = np.zeros((probs.shape[0], len(target_labels)), dtype=np.float32)
    index = {label: i for i, label in enumerate(target_labels)}
    for j, label in enumerate(source_labels):
        target = map_label(dataset, label)
        if target is not None and target in index:
            out[:, index[target]] += probs[:, j]
    total = out.sum(axis=1, keepdims=True)
    out = np.divide(out, total, out=np.full_like(out, 1.0 / len(target_labels)), where=total > 0)
    return out[0] if squeeze else out
