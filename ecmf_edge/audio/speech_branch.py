"""Runtime of the trained speech branch: speaker normalisation + the speech head.

The raw audio token (``audio_encoder``'s ``pooled_mid`` + 16 prosody statistics) is
standardised with the running statistics of the current speaker
(:class:`~ecmf_edge.audio.speaker_norm.SpeakerNormalizer`, starting from the training
population) and passed through ``speech_head.onnx``. Its ``embedding`` is the audio token
the fusion head reads; its ``probs`` are the branch's own emotion estimate. Call
:meth:`SpeechBranch.reset_speaker` when a different person starts talking.

Heads with a population path (inputs ``features``, ``population``, ``weight``) also read the
token standardised with the population's statistics alone, which needs nothing of the
speaker, and blend the two inside each member's hidden layer with the weight
``max_weight * n / (n + windows)`` of the speaker-normalised path, ``n`` = windows of this
speaker heard before: a stranger's first words rest on the population path, and the
speaker's own statistics take over as they firm up (MODEL_CARD.md, "Speech branch").
The population path was trained to reproduce the normalised path's hidden activation, so
the token keeps its meaning for the fusion head.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ecmf_edge.audio.speaker_norm import SpeakerNormalizer
from ecmf_edge.errors import ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["SpeechBranch", "MODEL_KEY"]

MODEL_KEY = "speech_head"
# The inputs of a head with a population path.
BLENDED_INPUTS = ("features", "population", "weight")


class SpeechBranch:
    """Speaker-normalised speech head on ONNX Runtime (one speaker state per instance)."""

    def __init__(self, session: Any, spec: dict[str, Any]) -> None:
        """Raises: ModelError when the session or its manifest entry is not a speech head."""
        inputs = [i.name for i in session.get_inputs()]
        outputs = {o.name for o in session.get_outputs()}
        if inputs not in (["features"], list(BLENDED_INPUTS)) or not {"embedding", "probs"} <= outputs:
            raise ModelError(f"speech head has inputs {inputs} and outputs {sorted(outputs)}, expected features "
                             f"(+ population, weight) -> embedding, probs: run `{REBUILD_COMMAND}`")
        try:
            attrs = spec["attributes"]
            norm = attrs["speaker_normalisation"]
            self.labels = tuple(attrs["labels"])
            self.dim = int(attrs["dim"])
            self.embedding_dim = int(attrs["embedding_dim"])
            self.normalizer = SpeakerNormalizer(np.asarray(norm["prior_mean"]), np.asarray(norm["prior_std"]),
                                                np.asarray(norm["prior_windows"], np.float64))
            # (windows, max_weight) of the blend with the population path; None: a head without one
            self.blend: tuple[float, float] | None = None
            if len(inputs) > 1:
                self.blend = (float(norm["blend"]["windows"]), float(norm["blend"]["max_weight"]))
                if not (self.blend[0] > 0 and 0 <= self.blend[1] <= 1):
                    raise ValueError(f"blend {norm['blend']}")
        except (KeyError, TypeError, ValueError) as exc:  # InputError is a ValueError
            raise ModelError(f"speech_head manifest entry is incomplete ({exc!r}): run `{REBUILD_COMMAND}`") from None
        if self.normalizer.dim != self.dim:
            raise ModelError(f"speech_head speaker statistics do not match its input size: run `{REBUILD_COMMAND}`")
        self._session = session

    @classmethod
    def from_bundle(cls, bundle: Any) -> SpeechBranch | None:
        """The bundle's speech branch, or None for bundles without one (older versions)."""
        if not bundle.has(MODEL_KEY):
            return None
        spec = bundle.spec(MODEL_KEY)
        wanted = spec.get("attributes", {}).get("token_output", "pooled_mid")
        made = bundle.spec("audio_encoder").get("attributes", {}).get("token_output", "pooled") if bundle.has("audio_encoder") else None
        if made != wanted:
            raise ModelError(f"the speech head was trained on the audio encoder's '{wanted}' output but this bundle's encoder "
                             f"gives '{made}': run `{REBUILD_COMMAND}`")
        return cls(bundle.session(spec["file"]), spec)

    def weight(self) -> float | None:
        """The speaker-normalised path's weight for the next window (None: a head without a population path)."""
        if self.blend is None:
            return None
        heard = self.normalizer.windows
        return self.blend[1] * heard / (heard + self.blend[0])

    def reset_speaker(self) -> None:
        """Forget the current speaker's statistics (a new person or session)."""
        self.normalizer.reset()

    def __call__(self, raw: np.ndarray, observe: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, probs) of one raw audio token; ``observe`` adds it to the speaker's statistics.

        Raises:
            InputError: a token of the wrong size or with NaN/Inf.
            ModelError: ONNX Runtime fails.
        """
        weight = self.weight()
        x = self.normalizer.normalize(raw, observe=observe)[None]
        feeds = {"features": x}
        if weight is not None:
            feeds.update(population=self.normalizer.population(raw)[None], weight=np.full((1, 1), weight, np.float32))
        try:
            embedding, probs = self._session.run(["embedding", "probs"], feeds)
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError(f"speech head failed in ONNX Runtime ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]}): "
                             f"run `{REBUILD_COMMAND}`") from None
        return embedding[0].astype(np.float32), probs[0].astype(np.float32)
