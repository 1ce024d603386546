"""Options of the live loop: rates, queue sizes, freshness limits, stage time limits, smoothing."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ecmf_edge.audio.io import SPEECH_TARGET_DBFS
from ecmf_edge.errors import InputError
from ecmf_edge.labels import check_label_choice
from ecmf_edge.modalities import MODALITIES

__all__ = ["StreamOptions", "SmootherOptions", "MODALITIES"]

# Modality tokens, in the fusion head's order.


@dataclass(frozen=True)
class SmootherOptions:
    """How per-tick probabilities become a steady label."""

    # EMA weight of the newest probabilities (1.0 = no smoothing).
    alpha: float = 0.4
    # A new label must beat the current one by this much smoothed probability to take over.
    switch_margin: float = 0.08
    # The label is held at least this long (stream seconds) after a change.
    min_dwell_s: float = 0.3
    # After this long without any modality the smoother starts afresh.
    reset_after_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise InputError(f"alpha={self.alpha!r} is invalid: use a value in (0, 1] (1 = no smoothing)")
        if not 0.0 <= self.switch_margin < 1.0:
            raise InputError(f"switch_margin={self.switch_margin!r} is invalid: use a value in [0, 1)")
        if self.min_dwell_s < 0 or self.reset_after_s <= 0:
            raise InputError("min_dwell_s must be >= 0 and reset_after_s > 0")


def _positive(value: object, allow_inf: bool) -> bool:
    """A positive real number of seconds (not NaN; infinity only when ``allow_inf``)."""
    # `value <= 0` rather than `value > 0`: numbers.Real declares only < and <= (NaN fails math.isfinite below).
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        return False
    return math.isfinite(value) or (allow_inf and value == math.inf)


def _default_max_age() -> dict[str, float]:
    return {"frame": 1.0, "face": 0.5, "audio": 2.5, "text": 10.0}


def _default_time_limits() -> dict[str, float]:
    return {"face": 2.0, "frame": 2.0, "audio": 5.0, "text": 30.0, "fusion": 1.0}


@dataclass(frozen=True)
class StreamOptions:
    """How the stream runs; every field has a working default."""

    # Fusion ticks (events) per second.
    fusion_hz: float = 10.0
    # Frame-encoder (global scene) updates per second. 2.5 gave the same labels as 5 at half the scene
    # encoder's CPU (docs/benchmarks.md, "One stream, step by step"); the token stays fresh for max_age_s["frame"].
    frame_encoder_hz: float = 2.5
    # The scene is re-encoded only when it changed: the mean absolute difference of a 32x24 grey
    # thumbnail from the last encoded frame's, in grey levels (0-255). At or below it the last
    # embedding is reused, for at most scene_refresh_s. 0 encodes every scene update.
    scene_change: float = 0.0
    scene_refresh_s: float = 2.0
    # Frames per second the face path (detect, track, align, encode) reads; None: every camera frame.
    # 15 (every other frame of a 30 fps camera) costs about a fifth less CPU with the same tracks and
    # labels, but a face can be 67 ms older at a tick (docs/benchmarks.md, "CPU per stream").
    face_path_hz: float | None = None
    # Capacity of each stage queue; under load the oldest item is dropped (real time).
    queue_size: int = 2
    # Capacity of the iterator's event queue (the oldest event is dropped when the consumer is slow).
    event_queue_size: int = 256
    # A modality's newest feature counts as present while younger than this (seconds), per modality.
    max_age_s: Mapping[str, float] = field(default_factory=_default_max_age)
    # A stage busy on one item for longer than this (seconds) is declared hung; per stage.
    time_limit_s: Mapping[str, float] = field(default_factory=_default_time_limits)
    # Smallest face searched, in pixels of the detector's working image (320 px wide): 40 keeps detection fast.
    min_face_size: int = 40
    # VAD probability that starts speech; speech ends below threshold - 0.15.
    vad_threshold: float = 0.5
    # Silence that ends an utterance, seconds.
    min_silence_s: float = 0.3
    # Utterances shorter than this are ignored, seconds.
    min_utterance_s: float = 0.3
    # Speech windows for the speech encoder: shortest, longest and hop, seconds.
    window_min_s: float = 1.0
    window_max_s: float = 4.0
    hop_s: float = 1.0
    # Speech windows are scaled to this RMS loudness (dBFS) before encoding, as the fusion head's
    # training features were (FeatureOptions.speech_target_dbfs); None keeps the recorded level.
    speech_target_dbfs: float | None = SPEECH_TARGET_DBFS
    # Longest utterance sent to speech recognition; longer speech is split, seconds.
    max_utterance_s: float = 30.0
    # Fast (non-real-time) playback: how far a source may run ahead of the fusion ticks, seconds.
    max_lead_s: float = 1.0
    # Label smoothing.
    smoother: SmootherOptions = field(default_factory=SmootherOptions)
    # Whose face the fused label uses: "largest" (kept while within 75 % of the largest face's area),
    # "center" (nearest the frame's centre) or a track id (the face is absent while that person is out of view).
    focus: str | int = "largest"
    # Most faces tracked, encoded and reported per frame; beyond it the largest are kept.
    max_people: int = 8
    # The full face detector runs every this many frames the face path reads (sooner when a face is lost or the picture changes
    # outside the tracked faces); between, tracked faces are re-placed by O-Net alone. 1: detect every frame.
    detect_every: int = 10
    # Frames (of those the face path reads) a track survives without being seen (short occlusions, people crossing).
    track_buffer_frames: int = 30
    # Each tracked face is encoded at most this often (per second); None: at fusion_hz, as the ticks read
    # no more. The tracked box still moves with every frame.
    face_encoder_hz: float | None = None
    # The faces of people other than the focus (they feed only their own labels) are encoded at most this often.
    people_encoder_hz: float = 5.0
    # Per-person resting-face prior: each tracked person's face token is corrected by their running mean, shrunk
    # towards the training population's (ecmf_edge.vision.resting_face). None: the bundle's default (on only where
    # it helped held-out people; MODEL_CARD.md); True / False: on / off.
    resting_face: bool | None = None
    # Seconds at the start of the stream in which the focus person's face is recorded as their neutral baseline
    # (`run --calibrate SECONDS`; the person should look neutral then). None: no explicit baseline.
    calibrate_s: float | None = None
    # A change of the focus person (another tracked face becomes the focus) starts a new speaker state for the
    # speech branch, whose statistics are the current speaker's; False keeps one speaker state for the whole stream.
    speaker_per_focus: bool = True
    # Below this smoothed probability of the held label an event's label is "uncertain" (``raw_label`` still says
    # what the model read; ``uncertain`` is True). 0: never.
    min_confidence: float = 0.0
    # The labels events report: None (the bundle's), a sequence of bundle labels to keep, or a mapping
    # {bundle label: your label} (shared names add up; labels left out are dropped). Probabilities are renormalised
    # over what is kept and events say ``relabelled``. Checked against the bundle when a stream or predict starts.
    labels: Sequence[str] | Mapping[str, str | None] | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.fusion_hz <= 120:
            raise InputError(f"fusion_hz={self.fusion_hz!r} is invalid: use 0.5 .. 120 (default 10)")
        if not 0.1 <= self.frame_encoder_hz <= 120:
            raise InputError(f"frame_encoder_hz={self.frame_encoder_hz!r} is invalid: use 0.1 .. 120 (default 2.5)")
        if not 0.0 <= self.scene_change <= 255.0 or not _positive(self.scene_refresh_s, False):
            raise InputError(f"scene_change={self.scene_change!r} / scene_refresh_s={self.scene_refresh_s!r} are invalid: "
                             "use 0 .. 255 grey levels (0: always encode) and a positive number of seconds")
        if self.face_path_hz is not None and not 1.0 <= self.face_path_hz <= 240:
            raise InputError(f"face_path_hz={self.face_path_hz!r} is invalid: use 1 .. 240, or None (every camera frame)")
        if self.queue_size < 1 or self.event_queue_size < 1:
            raise InputError("queue_size and event_queue_size must be at least 1: use the defaults (2 and 256) or more")
        unknown = set(self.max_age_s) - set(MODALITIES)
        if unknown:
            raise InputError(f"max_age_s has unknown modalities {sorted(unknown)}: use {', '.join(MODALITIES)}")
        for name, limits, allow_inf in (("max_age_s", self.max_age_s, False), ("time_limit_s", self.time_limit_s, True)):
            for key, value in limits.items():
                if not _positive(value, allow_inf):
                    raise InputError(f"{name}[{key!r}]={value!r} is invalid: use a positive number of seconds"
                                     + (" (inf: no limit)" if allow_inf else ""))
        if not 0.0 < self.window_min_s <= self.window_max_s <= 30.0 or self.hop_s <= 0:
            raise InputError("speech windows need 0 < window_min_s <= window_max_s <= 30 and hop_s > 0")
        if not (self.focus in ("largest", "center") or (isinstance(self.focus, int) and not isinstance(self.focus, bool)
                                                         and self.focus >= 1)):
            raise InputError(f"focus={self.focus!r} is invalid: use 'largest', 'center' or a track id (1, 2 ...)")
        for name in ("max_people", "detect_every", "track_buffer_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r} is invalid: use a positive integer")
        if self.face_encoder_hz is not None and not 0.5 <= self.face_encoder_hz <= 120:
            raise InputError(f"face_encoder_hz={self.face_encoder_hz!r} is invalid: use 0.5 .. 120, or None (fusion_hz)")
        if not 0.5 <= self.people_encoder_hz <= 120:
            raise InputError(f"people_encoder_hz={self.people_encoder_hz!r} is invalid: use 0.5 .. 120 (default 5)")
        if self.calibrate_s is not None and (isinstance(self.calibrate_s, bool) or not isinstance(self.calibrate_s, (int, float))
                                             or not 0 < self.calibrate_s <= 600):
            raise InputError(f"calibrate_s={self.calibrate_s!r} is invalid: use 0 < seconds <= 600 (e.g. 3), or None")
        if isinstance(self.min_confidence, bool) or not isinstance(self.min_confidence, numbers.Real) \
                or not 0.0 <= self.min_confidence < 1.0:
            raise InputError(f"min_confidence={self.min_confidence!r} is invalid: use 0 <= value < 1 (0: never uncertain)")
        check_label_choice(self.labels)
        if self.max_lead_s < self.min_silence_s + 0.2:
            raise InputError(f"max_lead_s={self.max_lead_s!r} must exceed min_silence_s + 0.2 ({self.min_silence_s + 0.2:g} s): "
                             "file playback reads that far ahead to find where utterances end")
        if self.max_lead_s < 1.0 / self.fusion_hz:
            raise InputError(f"max_lead_s={self.max_lead_s!r} must be at least one fusion period ({1 / self.fusion_hz:g} s)")

    @property
    def face_period_s(self) -> float:
        """Shortest time between two encodings of one tracked face, seconds."""
        return 1.0 / (self.face_encoder_hz or self.fusion_hz)

    def max_age(self, modality: str) -> float:
        return float({**_default_max_age(), **self.max_age_s}[modality])

    def time_limit(self, stage: str) -> float:
        return float({**_default_time_limits(), **self.time_limit_s}.get(stage, 5.0))
