"""Label sets and the explicit tables that map dataset labels onto them.

A bundle declares its own label list; :data:`MER2025_LABELS` is the default. Dataset
labels are mapped with explicit tables only: nothing is guessed from names. A label
that maps to ``None`` is dropped (disgust, contempt, boredom by default).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ecmf_edge.errors import InputError

__all__ = ["MER2025_LABELS", "LABELS", "FER2013_LABELS", "DATASET_MAPPINGS", "map_label", "map_probabilities", "LabelView",
           "parse_label_choice", "check_label_choice"]

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


def check_label_choice(choice: object) -> None:
    """The shape of a label choice (``StreamOptions.labels``): None, a sequence of labels, or a mapping.

    Raises:
        InputError: anything else (a string is not a list of labels).
    """
    if choice is not None and (isinstance(choice, (str, bytes)) or not isinstance(choice, (Sequence, Mapping))):
        raise InputError(f"labels={choice!r} is invalid: give a list of labels to keep, e.g. ['happy', 'sad', "
                         "'neutral'], or a mapping {'sad': 'negative', ...}")


class LabelView:
    """The labels an application sees: the bundle's, a subset of them, or a mapping onto its own names.

    ``choice`` is None (the bundle's labels), a sequence of bundle labels to keep (in that order), or a
    mapping ``{bundle label: application label}`` (several bundle labels may share an application label:
    their probabilities add up; bundle labels left out of the mapping, or mapped to None, are dropped).
    Probabilities are renormalised over what is kept, so they sum to one again.
    """

    def __init__(self, bundle_labels: Sequence[str], choice: Sequence[str] | Mapping[str, str | None] | None = None) -> None:
        """Raises:
            InputError: a label the bundle does not have, a repeated label, or fewer than two labels kept.
        """
        self.bundle_labels = tuple(bundle_labels)
        if choice is None:
            mapping: dict[str, str | None] = {name: name for name in self.bundle_labels}
        elif isinstance(choice, Mapping):
            mapping = {str(k): (None if v is None else str(v)) for k, v in choice.items()}
        else:
            check_label_choice(choice)
            if len(set(choice)) != len(choice):
                raise InputError(f"labels={list(choice)!r} repeats a label: name each once")
            mapping = {str(name): str(name) for name in choice}
        unknown = [name for name in mapping if name not in self.bundle_labels]
        if unknown:
            raise InputError(f"label(s) {', '.join(map(repr, unknown))} not in the bundle's labels: choose among "
                             f"{', '.join(self.bundle_labels)}")
        kept: list[str] = []
        for name in self.bundle_labels if choice is None or isinstance(choice, Mapping) else mapping:
            target = mapping.get(name)
            if target is not None and target not in kept:
                kept.append(target)
        if len(kept) < 2:
            raise InputError(f"labels={choice!r} keeps {len(kept)} label(s): keep at least two (one label says nothing)")
        self.labels: tuple[str, ...] = tuple(kept)
        # True when the application's labels differ from the bundle's (probabilities are folded and renormalised).
        self.relabelled = self.labels != self.bundle_labels
        self._matrix = np.zeros((len(self.bundle_labels), len(self.labels)), dtype=np.float64)
        for i, name in enumerate(self.bundle_labels):
            target = mapping.get(name)
            if target is not None:
                self._matrix[i, self.labels.index(target)] = 1.0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Bundle-label probabilities (C,) -> application-label probabilities, renormalised (uniform when every
        kept label had zero probability)."""
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if not self.relabelled:
            return p
        folded = p @ self._matrix
        total = float(folded.sum())
        return folded / total if total > 0 else np.full(len(self.labels), 1.0 / len(self.labels))


def parse_label_choice(text: str) -> tuple[str, ...] | dict[str, str | None]:
    """``"happy,sad,neutral"`` (labels to keep) or ``"sad=negative,angry=negative,happy=positive"`` (a mapping;
    ``name=`` drops a label), as ``StreamOptions(labels=...)`` takes them.

    Raises:
        InputError: an empty item, or a mix of both forms.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not items or any(not item for item in items):
        raise InputError(f"--labels {text!r} has an empty item: use e.g. happy,sad,neutral or sad=negative,happy=positive")
    pairs = [item.partition("=") for item in items]
    if all(sep for _, sep, _ in pairs):
        return {k.strip(): (v.strip() or None) for k, _, v in pairs}
    if any(sep for _, sep, _ in pairs):
        raise InputError(f"--labels {text!r} mixes kept labels and a mapping: use one form (every item NAME or NAME=NEW)")
    return tuple(items)
