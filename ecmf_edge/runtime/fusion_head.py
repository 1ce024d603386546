"""The ECMF fusion head on ONNX Runtime: per-modality features + presence mask -> label probabilities.

Inputs follow the manifest's ``modalities`` order (frame, face, audio, text). An absent
modality is passed as ``None``: its token is masked out of the attention and the gated
pooling, so its (zero) vector has no effect. The result carries the modality weights
the head used, so an application can show *why* it chose a label.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecmf_edge.errors import InputError
from ecmf_edge.labels import LabelView
from ecmf_edge.modalities import MODALITIES

__all__ = ["FusionHead", "FusionResult", "RelabelledFusion", "relabelled"]



@dataclass(frozen=True)
class FusionResult:
    """Probabilities over the bundle's labels and the weight each present modality got."""

    labels: tuple[str, ...]
    probabilities: np.ndarray
    modality_weights: dict[str, float]

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))


class FusionHead:
    """Runs ``fusion_head.onnx``; thread-compatible (one call at a time per instance)."""

    key = "fusion_head"

    def __init__(self, session, spec: Mapping, labels) -> None:
        self._session = session
        self.labels = tuple(labels)
        attrs = spec.get("attributes", {})
        self.modalities = tuple(attrs.get("modalities", MODALITIES))
        self.dims = {m: int(attrs["dims"][m]) for m in self.modalities}

    @classmethod
    def from_bundle(cls, bundle) -> FusionHead:
        spec = bundle.spec(cls.key)
        return cls(bundle.session(spec["file"]), spec, bundle.labels)

    def predict(self, features: Mapping[str, np.ndarray | None]) -> FusionResult:
        """Fuse one set of modality features; at least one modality must be present.

        Raises:
            InputError: no modality present, an unknown modality name, a wrong vector size, or NaN/Inf values.
        """
        unknown = set(features) - set(self.modalities)
        if unknown:
            raise InputError(f"unknown modality {sorted(unknown)}: use {', '.join(self.modalities)}")
        feeds: dict[str, np.ndarray] = {}
        mask = np.zeros((1, len(self.modalities)), dtype=np.float32)
        for i, name in enumerate(self.modalities):
            value = features.get(name)
            if value is None:
                feeds[name] = np.zeros((1, self.dims[name]), dtype=np.float32)
                continue
            vector = np.asarray(value, dtype=np.float32).reshape(-1)
            if vector.size != self.dims[name]:
                raise InputError(f"{name} feature has {vector.size} values, the fusion head expects {self.dims[name]}")
            if not np.all(np.isfinite(vector)):
                raise InputError(f"{name} feature contains NaN or Inf")
            feeds[name] = vector[None]
            mask[0, i] = 1.0
        if not mask.any():
            raise InputError(f"no modality present: pass at least one of {', '.join(self.modalities)}")
        feeds["mask"] = mask
        probs, weights = self._session.run(["probs", "weights"], feeds)
        return FusionResult(self.labels, probs[0].astype(np.float32),
                            {m: float(weights[0, i]) for i, m in enumerate(self.modalities) if mask[0, i] > 0})


class RelabelledFusion:
    """A fusion step whose results are over an application's label set (:class:`~ecmf_edge.labels.LabelView`)."""

    def __init__(self, fusion: Callable[[Mapping[str, np.ndarray | None]], Any], view: LabelView) -> None:
        self.fusion, self.view = fusion, view

    @property
    def labels(self) -> tuple[str, ...]:
        return self.view.labels

    def __call__(self, features: Mapping[str, np.ndarray | None]) -> Any:
        result = self.fusion(features)
        if result is None or not self.view.relabelled:
            return result
        return FusionResult(self.view.labels, self.view.apply(result.probabilities).astype(np.float32),
                            dict(result.modality_weights))


def relabelled(fusion: Callable[[Mapping[str, np.ndarray | None]], Any], bundle_labels: Sequence[str],
               choice: Sequence[str] | Mapping[str, str | None] | None) -> RelabelledFusion:
    """``fusion`` reporting over ``choice`` (``StreamOptions.labels``) instead of ``bundle_labels``.

    Raises:
        InputError: a label the bundle does not have, or fewer than two kept.
    """
    return RelabelledFusion(fusion, LabelView(bundle_labels, choice))
