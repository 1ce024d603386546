"""Per-modality feature vectors for the fusion head, from files or arrays.

This is what ``ecmf-edge features`` runs: the frame encoder over sampled frames, the
face detector + aligned-crop face encoder, VAD + speech encoder + prosody over the
speech in the audio, and the text encoder. A modality that has nothing to offer (no
face in the video, no speech in the audio) is *absent* with a stated reason, never a
vector of zeros passed off as a feature.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.audio.io import SAMPLE_RATE, SILENCE_DBFS, SPEECH_TARGET_DBFS, check_pcm, load_audio, normalize_loudness, rms_dbfs
from ecmf_edge.errors import InputError
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.text.language import TEXT_LANGUAGE_SURE, identify_language

__all__ = ["ModalityFeatures", "FeatureExtractor", "FeatureOptions", "normalize_loudness"]

logger = logging.getLogger("ecmf_edge")

# Longest stretch of speech fed to the speech encoder at once (Whisper's window).
MAX_SPEECH_SECONDS = 30.0


@dataclass(frozen=True)
class FeatureOptions:
    """How features are extracted from files."""

    # Frames per second sampled from a video for the frame and face encoders.
    sample_fps: float = 5.0
    # At most this many sampled frames per video.
    max_frames: int = 150
    # Frames per frame-encoder batch.
    batch_size: int = 8
    # Extra margin around the aligned face template (fraction of the crop side).
    face_padding: float = 0.0
    # Speech is scaled to this RMS loudness (dBFS) before encoding, so quiet and loud
    # recordings look alike to the encoder; None keeps the level as recorded.
    speech_target_dbfs: float | None = SPEECH_TARGET_DBFS


@dataclass
class ModalityFeatures:
    """Feature vectors per modality; ``None`` where the modality is absent."""

    frame: np.ndarray | None = None
    face: np.ndarray | None = None
    audio: np.ndarray | None = None
    text: np.ndarray | None = None
    # Extra per-modality outputs: face_probs (7 FER classes), prosody (16 statistics).
    face_probs: np.ndarray | None = None
    prosody: np.ndarray | None = None
    # Why each absent modality is absent, and counts describing the input.
    info: dict[str, Any] = field(default_factory=dict)

    def token(self, name: str) -> np.ndarray | None:
        """The fusion head's input vector for one modality (audio = speech encoder + prosody)."""
        if name == "audio":
            if self.audio is None or self.prosody is None:
                return None
            from ecmf_edge.audio.speech_encoder import audio_token

            return audio_token(self.audio, self.prosody)
        return getattr(self, name)

    @property
    def present(self) -> dict[str, bool]:
        """Presence mask over :data:`MODALITIES`."""
        return {m: getattr(self, m) is not None for m in MODALITIES}

    def save_npz(self, path: str | Path) -> Path:
        """Write every present vector, the presence mask and the info as JSON into an .npz."""
        path = Path(path)
        # Any, not np.ndarray: numpy's stub lets a `**` dict also fill savez's bool `allow_pickle` (numpy >= 2.1).
        arrays: dict[str, Any] = {}
        for name in (*MODALITIES, "face_probs", "prosody"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=np.float32)
        arrays["present"] = np.array([self.present[m] for m in MODALITIES], dtype=bool)
        arrays["modalities"] = np.array(MODALITIES)
        arrays["info"] = np.array(json.dumps(self.info, default=str))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return path


class FeatureExtractor:
    """Runs the bundle's encoders and returns :class:`ModalityFeatures`.

    Models are opened lazily, so extracting text features alone never loads the
    vision models.
    """

    def __init__(self, bundle, options: FeatureOptions | None = None, enricher=None, cluster=None) -> None:
        """``enricher``: a :class:`~ecmf_edge.text.llm_context.ContextEnricher` for LLM context, or None.
        ``cluster``: a :class:`~ecmf_edge.batch.ray_executor.RayOptions` to spread corpus feature extraction
        over Ray actors (each holds its own copy of this extractor), or None for this process."""
        self.bundle = bundle
        self.options = options or FeatureOptions()
        self.enricher = enricher
        self.cluster = cluster
        self._models: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        """What a copy in another process needs: the bundle, the options and the LLM's options (models,
        sessions and the GGUF are opened again there, lazily)."""
        enricher = self.enricher.options if self.enricher is not None else None
        return {"bundle": self.bundle, "options": self.options, "enricher_options": enricher}

    def __setstate__(self, state: dict) -> None:
        enricher = None
        if state["enricher_options"] is not None:
            from ecmf_edge.text.llm_context import ContextEnricher

            enricher = ContextEnricher(state["enricher_options"])
        type(self).__init__(self, state["bundle"], state["options"], enricher)

    def _model(self, key: str):
        if key not in self._models:
            cls: type[Any]  # the model class, each with `from_bundle(bundle)`
            if key == "face_detector":
                from ecmf_edge.vision.face_detector import FaceDetector as cls
            elif key == "face_encoder":
                from ecmf_edge.vision.face_encoder import FaceEncoder as cls
            elif key == "frame_encoder":
                from ecmf_edge.vision.frame_encoder import FrameEncoder as cls
            elif key == "vad":
                from ecmf_edge.audio.vad import VoiceActivityDetector as cls
            elif key == "audio_encoder":
                from ecmf_edge.audio.speech_encoder import SpeechEncoder as cls
            elif key == "text_encoder":
                from ecmf_edge.text.text_encoder import TextEncoder as cls
            elif key == "asr":
                from ecmf_edge.text.asr import SpeechRecognizer as cls
            elif key == "text_featurizer":
                from ecmf_edge.text.text_path import TextFeaturizer

                self._models[key] = TextFeaturizer.from_bundle(self.bundle, self.enricher)
                return self._models[key]
            else:  # pragma: no cover - programming error
                raise KeyError(key)
            self._models[key] = cls.from_bundle(self.bundle)
        return self._models[key]

    # -- vision ---------------------------------------------------------------------------
    def faces_in(self, frame: np.ndarray) -> list:
        """Faces in one BGR frame, largest first."""
        faces = self._model("face_detector").detect(frame)
        return sorted(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)

    def face_crop(self, frame: np.ndarray, face) -> np.ndarray:
        """Aligned crop of one detected face, at the face encoder's input size."""
        from ecmf_edge.vision.alignment import align_face

        return align_face(frame, face, size=self._model("face_encoder").input_size, padding=self.options.face_padding)

    def from_frames(self, frames: list[np.ndarray], into: ModalityFeatures | None = None) -> ModalityFeatures:
        """Frame and face features from a list of BGR frames (mean over frames).

        Raises:
            InputError: no frames, or a frame of the wrong shape or dtype.
        """
        out = into or ModalityFeatures()
        if not frames:
            raise InputError("no frames given: pass at least one BGR image")
        encoder = self._model("frame_encoder")
        size = self.options.batch_size
        feats = np.concatenate([encoder.encode(frames[i:i + size]) for i in range(0, len(frames), size)])
        out.frame = feats.mean(axis=0).astype(np.float32)
        crops = []
        for frame in frames:
            faces = self.faces_in(frame)
            if faces:
                crops.append(self.face_crop(frame, faces[0]))
        out.info["frames"] = len(frames)
        out.info["frames_with_face"] = len(crops)
        if crops:
            result = self._model("face_encoder").encode(np.stack(crops))
            out.face = np.asarray(result.features, dtype=np.float32).mean(axis=0)
            out.face_probs = np.asarray(result.probs, dtype=np.float32).mean(axis=0)
            out.info["face_labels"] = list(result.labels) if hasattr(result, "labels") else None
        else:
            out.face = None
            out.info["face_absent"] = f"no face found in {len(frames)} frame(s)"
        return out

    def from_video(self, path: str | Path, into: ModalityFeatures | None = None) -> ModalityFeatures:
        """Frame and face features from a video file, sampled at ``options.sample_fps``.

        Raises:
            InputError: missing, unreadable or empty video.
        """
        from ecmf_edge.capture.video import iter_video_frames

        frames = [f for _, f in iter_video_frames(path, self.options.sample_fps, self.options.max_frames)]
        if not frames:
            raise InputError(f"{path} yielded no frames: check the file")
        return self.from_frames(frames, into)

    # -- audio ----------------------------------------------------------------------------
    def from_audio(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, into: ModalityFeatures | None = None) -> ModalityFeatures:
        """Audio features (speech encoder + prosody over the speech the VAD finds).

        Silent audio or audio without speech leaves the audio modality absent.

        Raises:
            InputError: wrong rate, empty audio or NaN/Inf samples.
        """
        out = into or ModalityFeatures()
        x = check_pcm(pcm, sample_rate, name="audio")
        loudness = rms_dbfs(x)
        out.info["audio_seconds"] = round(x.size / SAMPLE_RATE, 3)
        out.info["audio_dbfs"] = round(loudness, 1) if np.isfinite(loudness) else None
        if not np.isfinite(loudness) or loudness < SILENCE_DBFS:
            out.info["audio_absent"] = f"audio is silent ({out.info['audio_dbfs']} dBFS)"
            return out
        segments = self._model("vad").segments(x)
        out.info["speech_segments"] = [[s.start, s.end] for s in segments]
        if not segments:
            out.info["audio_absent"] = "no speech found by the VAD"
            return out
        speech = np.concatenate([x[int(s.start * SAMPLE_RATE): int(s.end * SAMPLE_RATE)] for s in segments])
        speech = speech[: int(MAX_SPEECH_SECONDS * SAMPLE_RATE)]
        out.info["speech_seconds"] = round(speech.size / SAMPLE_RATE, 3)
        from ecmf_edge.audio.prosody import prosody_features

        target = self.options.speech_target_dbfs
        # each 1 s chunk encoded once and the chunks' statistics combined: the token a stream computes
        out.audio = np.asarray(self._model("audio_encoder").encode_chunks(speech, SAMPLE_RATE, target), dtype=np.float32)
        out.prosody = prosody_features(normalize_loudness(speech, target), SAMPLE_RATE)
        return out

    def from_audio_file(self, path: str | Path, into: ModalityFeatures | None = None) -> ModalityFeatures:
        """Audio features from a WAV file (any rate; resampled to 16 kHz)."""
        return self.from_audio(load_audio(path), SAMPLE_RATE, into)

    # -- text -----------------------------------------------------------------------------
    def from_text(self, text: str, into: ModalityFeatures | None = None, history: tuple[str, ...] = ()) -> ModalityFeatures:
        """Text feature of one utterance (``history``: earlier utterances of the conversation);
        empty text leaves the modality absent. With the bundle's text branch: its embedding of the
        utterance in context; in bundles without one: ``[embed(enriched); embed(text)]`` (768).

        A text confidently identified as another language than the text branch reads (German, say) is left
        absent with the reason, as streams do with speech (:mod:`ecmf_edge.text.language`).

        Raises:
            InputError: text that is not a string.
        """
        out = into or ModalityFeatures()
        if not isinstance(text, str):
            raise InputError(f"text must be str, got {type(text).__name__}: pass the words as a string (decode bytes first)")
        if not text.strip():
            out.info["text_absent"] = "empty text"
            return out
        featurizer = self._model("text_featurizer")
        language, probability = identify_language(text)
        out.info["language"], out.info["language_probability"] = language, round(probability, 4)
        gate = featurizer.language_gate(language) if probability >= TEXT_LANGUAGE_SURE else None
        if gate is not None:  # as in streams: words in a language the text branch does not read are left out
            out.info["text_absent"] = gate.replace("speech is", "the text is", 1)
            out.info["transcript"] = text.strip()
            return out
        feature = featurizer.featurize(text.strip(), tuple(history))
        out.text = feature.vector
        out.info["transcript"] = feature.transcript
        out.info["llm_context"] = feature.context.context or None
        if feature.context.fallback_reason:
            out.info["llm_fallback"] = feature.context.fallback_reason
        return out

    def transcribe(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, into: ModalityFeatures | None = None) -> ModalityFeatures:
        """Text feature from the speech in the audio (ASR, then :meth:`from_text`).

        Raises:
            InputError: wrong rate, empty audio or NaN/Inf samples.
        """
        out = into or ModalityFeatures()
        transcript = self._model("asr").transcribe(pcm, sample_rate)
        out.info["asr_language"] = transcript.language
        if transcript.is_empty:
            out.info["text_absent"] = f"no transcript: {transcript.empty_reason}"
            return out
        gate = self._model("text_featurizer").language_gate(transcript.language)
        if gate is not None:  # the text model was not trained on this language
            out.info["transcript"] = transcript.text
            out.info["text_absent"] = gate
            return out
        return self.from_text(transcript.text, out)

    def extract(self, video: str | Path | None = None, audio: str | Path | None = None, text: str | None = None,
                transcribe: bool = False) -> ModalityFeatures:
        """All modalities available from the given inputs; absent ones are marked with a reason.

        With ``transcribe`` and no ``text``, the text comes from speech recognition of the audio.

        Raises:
            InputError: nothing given, or a given input is unusable.
        """
        if video is None and audio is None and text is None:
            raise InputError("nothing to extract: give a video, an audio file or a text")
        out = ModalityFeatures()
        if video is not None:
            self.from_video(video, out)
        else:
            out.info["frame_absent"] = out.info["face_absent"] = "no video given"
        pcm = load_audio(audio) if audio is not None else None
        if pcm is not None:
            self.from_audio(pcm, SAMPLE_RATE, out)
        else:
            out.info["audio_absent"] = "no audio given"
        if text is not None:
            self.from_text(text, out)
        elif transcribe and pcm is not None:
            self.transcribe(pcm, SAMPLE_RATE, out)
        else:
            out.info["text_absent"] = "no text given"
        return out
