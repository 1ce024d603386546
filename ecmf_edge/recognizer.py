"""``Recognizer``: the public entry point — live streams and one-shot predictions.

>>> from ecmf_edge import Recognizer
>>> with Recognizer() as rec:                                   # doctest: +SKIP
...     for event in rec.stream(video="clip.mp4", audio="clip.wav", realtime=False):
...         print(event.label, event.confidence, event.modality_weights)

The recognizer loads and verifies the bundle, resolves the backend, and opens models
lazily (a face-only ``predict`` never loads the speech models). Streams run on threads
(see :mod:`ecmf_edge.stream.pipeline`); ``predict`` runs in the caller's thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.audio.io import samples_for_models
from ecmf_edge.capture.base import AudioSource, VideoSource
from ecmf_edge.capture.camera import CameraOptions, CameraSource
from ecmf_edge.capture.clock import DEFAULT_CLOCK, Clock
from ecmf_edge.capture.files import AudioFileSource, VideoFileSource
from ecmf_edge.capture.microphone import MicrophoneOptions, MicrophoneSource
from ecmf_edge.errors import EcmfError, InputError
from ecmf_edge.events import EmotionEvent
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS, SAMPLE_RATE
from ecmf_edge.people import people_results
from ecmf_edge.runtime.bundle import DEFAULT_BUNDLE, resolve_bundle
from ecmf_edge.runtime.fusion_head import relabelled
from ecmf_edge.stream.fuser import fusion_step, readout, uncertain_label
from ecmf_edge.stream.models import Locked, ModelLoader
from ecmf_edge.stream.names import RUNNING, default_stream_name
from ecmf_edge.stream.options import MODALITIES, StreamOptions
from ecmf_edge.stream.pipeline import EmotionStream
from ecmf_edge.stream.sinks import CallbackSink, LabelChangeSink
from ecmf_edge.text.asr import AsrOptions, reported_language
from ecmf_edge.text.llm_context import LlmOptions
from ecmf_edge.timeline import ClipResult, build_clip_result, check_step
from ecmf_edge.vision.resting_face import RestingFaces

__all__ = ["Recognizer", "RecognizerOptions", "PRECISIONS"]

logger = logging.getLogger("ecmf_edge")


def _has_sound(path: Any) -> bool:
    """Whether a media file has an audio stream (False when PyAV cannot tell: the video still plays)."""
    from ecmf_edge.audio.media import probe_media

    try:
        return probe_media(path).has_audio
    except EcmfError:
        return False


@dataclass(frozen=True)
class RecognizerOptions:
    """What a :class:`Recognizer` loads and how its streams run; every field has a working default."""

    # Inference backend: "auto" (ONNX Runtime, CUDA when available), "onnxruntime" (CPU) or "tensorrt".
    backend: str = "auto"
    # Which built bundle to load: "fp32", "fp16" or "int8".
    precision: str = "fp32"
    # A bundle name, a folder, or a loaded ecmf_edge.runtime.bundle.Bundle.
    bundle: Any = DEFAULT_BUNDLE
    # Stream options (rates, freshness limits, smoothing ...), for every stream unless stream(options=) says otherwise.
    stream: StreamOptions = field(default_factory=StreamOptions)
    # Run the text modality (speech recognition) in streams with audio.
    text: bool = True
    # Enrich transcripts with the local LLM (falls back with a warning when unavailable). The LLM is opened when a
    # transcript first needs it, and not run at all when the bundle's text branch was trained without LLM context.
    use_llm: bool = False
    # The local LLM's and speech recognition's options (None: their defaults).
    llm_options: LlmOptions | None = None
    asr_options: AsrOptions | None = None
    # Options of cameras and microphones the streams open by index or name (None: their defaults).
    camera_options: CameraOptions | None = None
    microphone_options: MicrophoneOptions | None = None
    # ONNX Runtime threads per model when the recognizer loads the bundle itself (0: ONNX Runtime's choice). A
    # stream runs its models in parallel on their own threads, so 1 avoids oversubscribing the CPU (on 2 cores:
    # p50 capture-to-event 34 ms with 1 thread, 134 ms with one thread per core). A given Bundle keeps its own.
    model_threads: int = 1

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise InputError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKEND_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        threads = self.model_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InputError(f"model_threads={threads!r} is invalid: use 1 (default), another count, "
                             "or 0 for ONNX Runtime's choice")
        if not isinstance(self.stream, StreamOptions):
            raise InputError(f"stream={self.stream!r} is not a StreamOptions: pass StreamOptions(...) or leave it out")


class Recognizer:
    """Multimodal emotion recognition from a bundle: ``stream(...)`` for live input, ``predict(...)`` one-shot."""

    def __init__(self, backend: str | None = None, precision: str | None = None, bundle: Any = None, *,
                 options: RecognizerOptions | StreamOptions | None = None,
                 fusion: Callable[[Mapping[str, Any]], Any] | None = None,
                 text: bool | None = None, use_llm: bool | None = None, llm_options: LlmOptions | None = None,
                 asr_options: AsrOptions | None = None,
                 camera_options: CameraOptions | None = None, microphone_options: MicrophoneOptions | None = None,
                 model_threads: int | None = None, on_event: Callable[[EmotionEvent], Any] | None = None,
                 on_label_change: Callable[[EmotionEvent], Any] | None = None, clock: Clock | None = None) -> None:
        """Load and verify the bundle and the fusion head.

        The configuration is a :class:`RecognizerOptions`: ``options=RecognizerOptions(...)``, or its fields as
        keyword arguments (``backend``, ``precision``, ``bundle``, ``text``, ``use_llm``, ``llm_options``,
        ``asr_options``, ``camera_options``, ``microphone_options``, ``model_threads``; see the fields). A keyword
        that is given (not None) overrides the same field of ``options``; ``options`` may also be a
        :class:`~ecmf_edge.stream.options.StreamOptions`, which then is the ``stream`` field.

        Args:
            fusion: replaces the bundle's fusion head: ``fusion(features) -> FusionResult``.
            on_event: called with every event of every stream.
            on_label_change: called with every event whose label differs from the previous one.
            clock: the clock live sources stamp their input with (tests pass a fake one).

        Raises:
            InputError: unknown backend or precision, a callback that is not callable, or a bundle of another precision.
            DependencyError: backend "tensorrt" without the tensorrt package.
            ModelError: the bundle is missing or corrupt, or has no fusion head (and ``fusion`` is not given).
        """
        if options is not None and not isinstance(options, (RecognizerOptions, StreamOptions)):
            raise InputError(f"options={options!r} is invalid: pass RecognizerOptions(...) or StreamOptions(...)")
        given: dict[str, Any] = {name: value for name, value in (
            ("backend", backend), ("precision", precision), ("bundle", bundle), ("text", text), ("use_llm", use_llm),
            ("llm_options", llm_options), ("asr_options", asr_options), ("camera_options", camera_options),
            ("microphone_options", microphone_options), ("model_threads", model_threads),
            ("stream", options if isinstance(options, StreamOptions) else None)) if value is not None}
        config = replace(options if isinstance(options, RecognizerOptions) else RecognizerOptions(), **given)
        if config.backend == "tensorrt":
            from ecmf_edge.runtime.tensorrt import import_tensorrt

            import_tensorrt()
        self._callbacks = [CallbackSink(on_event)] if on_event is not None else []
        if on_label_change is not None:
            self._callbacks.append(LabelChangeSink(on_label_change))
        # The configuration this recognizer runs with; the attributes below are its fields, for reading.
        self.recognizer_options = config
        self.backend, self.precision = config.backend, config.precision
        self.options = config.stream
        self.text_enabled, self.use_llm = bool(config.text), bool(config.use_llm)
        self.llm_options, self.asr_options = config.llm_options, config.asr_options
        self.camera_options, self.microphone_options = config.camera_options, config.microphone_options
        self.clock = clock or DEFAULT_CLOCK
        self.bundle = resolve_bundle(config.bundle, config.backend, config.precision, config.model_threads)
        self.labels: tuple[str, ...] = tuple(self.bundle.labels)
        if fusion is None:
            from ecmf_edge.runtime.fusion_head import FusionHead

            fusion = FusionHead.from_bundle(self.bundle).predict
        elif not callable(fusion):
            raise InputError(f"fusion={fusion!r} is not callable: pass features -> FusionResult, or leave it out")
        self._fusion = Locked(fusion)
        # predict()'s fusion step over the label set of the recognizer's options (the bundle's by default).
        self._predict_fusion = relabelled(self._fusion, self.labels, self.options.labels)
        self.models = ModelLoader(self.bundle, self._fusion, self.options, text=self.text_enabled, use_llm=self.use_llm,
                                  llm_options=self.llm_options, asr_options=self.asr_options)
        self._lock = threading.RLock()
        self._streams: list[EmotionStream] = []
        self._closed = False
        # The neutral face baseline of calibrate_face() that predict() reads faces against (built on first use).
        self._resting: RestingFaces | None = None

    # -- streams ----------------------------------------------------------------------------------
    def stream(self, camera: int | VideoSource | None = None, video: str | Path | None = None,
               microphone: str | int | AudioSource | None = None, audio: str | Path | None = None, *,
               realtime: bool = True, video_audio: bool = True, options: StreamOptions | None = None,
               on_event: Callable[[EmotionEvent], Any] | None = None,
               on_label_change: Callable[[EmotionEvent], Any] | None = None,
               stream_id: str | None = None) -> EmotionStream:
        """Open a stream over a camera or video file and/or a microphone or audio file.

        Several streams may run at once (one per camera, say): they share the recognizer's loaded models
        (no second copy in memory) and each has its own speaker state, conversation, tracks and smoother.
        Every event carries its stream's name in ``event.stream``: ``stream_id``, or by default the input file's stem,
        "camera0" or "microphone", with "-2", "-3" ... when a running stream of any recognizer has that name.

        A video file's own sound is the audio input when neither ``microphone`` nor ``audio`` is
        given (``video_audio=False`` leaves it out); it is aligned to the frames by their
        presentation timestamps. Audio files may be any common container and codec (PyAV).
        ``options`` replaces the recognizer's stream options for this stream only.

        ``camera`` is an index or a ready :class:`~ecmf_edge.capture.base.VideoSource`;
        ``microphone`` is "default", a device index or name, or an
        :class:`~ecmf_edge.capture.base.AudioSource`. Files play at their own pace with
        ``realtime=True`` and as fast as they are processed (reproducibly) with ``realtime=False``.
        Iterate the result for events (the stream starts then), or call ``.run()`` with callbacks.

        Raises:
            InputError: no input, both a camera and a video (or a microphone and an audio file), fast
                playback with a live device, or a missing or unreadable file.
            DeviceError: no camera at that index, no microphone, PortAudio missing or an unsupported rate.
            DependencyError: sounddevice is not installed (microphone).
            ModelError: a model the stream needs is missing from the bundle.
        """
        if self._closed:
            raise InputError("this Recognizer is closed: create a new one")
        if camera is not None and video is not None:
            raise InputError("give either camera= or video=, not both")
        if microphone is not None and audio is not None:
            raise InputError("give either microphone= or audio=, not both")
        if camera is None and video is None and microphone is None and audio is None:
            raise InputError("nothing to stream: pass camera=0 or video=FILE and/or microphone='default' or audio=FILE")
        if not realtime and (camera is not None or microphone is not None):
            raise InputError("realtime=False is for files: a camera or microphone always runs in real time")
        with self._lock:
            running = [s for s in self._streams if not s.finished]
            if stream_id is not None and any(s.stream_id == str(stream_id) for s in running):
                raise InputError(f"a stream with id '{stream_id}' is already running: give each stream its own id")
            if isinstance(camera, int):
                for other in running:
                    if other.video is not None and getattr(other.video, "index", None) == camera and other.video.live:
                        raise InputError(f"camera {camera} is already streaming (stream '{other.stream_id}'): open "
                                         "each camera once")
            stream_id = str(stream_id) if stream_id is not None else RUNNING.unique(
                default_stream_name(camera, video, microphone, audio))
        sources: list = []
        try:
            vsrc = self._video_source(camera, video, realtime)
            if vsrc is not None:
                sources.append(vsrc)
                vsrc.open()
            asrc = self._audio_source(microphone, audio, realtime)
            if asrc is None and video is not None and video_audio and _has_sound(video):
                asrc = AudioFileSource(video, realtime=realtime, clock=self.clock, align_to_video=True)
            if asrc is not None:
                sources.append(asrc)
                asrc.open()
            models = self.models.stream_models(vsrc is not None, asrc is not None)
        except BaseException:
            for source in sources:
                source.close()
            raise
        sinks = list(self._callbacks)
        if on_event is not None:
            sinks.append(CallbackSink(on_event))
        if on_label_change is not None:
            sinks.append(LabelChangeSink(on_label_change))
        stream = EmotionStream(models, video=vsrc, audio=asrc, options=options or self.options, clock=self.clock,
                               realtime=realtime, sinks=tuple(sinks), stream_id=stream_id)
        with self._lock:
            self._streams = [s for s in self._streams if not s.finished] + [stream]
        RUNNING.claim(stream_id, stream)
        return stream

    def label_file(self, path: str | Path, step: float = 1.0,
                   on_event: Callable[[EmotionEvent], Any] | None = None) -> ClipResult:
        """Label a recorded file (video with its own sound, or audio alone) into a timeline of ``step``-second
        rows and a summary (:class:`~ecmf_edge.timeline.ClipResult`).

        Fast, deterministic playback: every frame and audio sample is processed and the label is not
        smoothed across ticks, so a file gives the same timeline on every run.

        Raises:
            InputError: missing or unreadable file, one with neither video nor sound, or a bad step.
        """
        from dataclasses import replace

        from ecmf_edge.audio.media import probe_media
        from ecmf_edge.stream.options import SmootherOptions

        step = check_step(step)
        path = Path(path)
        info = probe_media(path)
        if not info.has_video and not info.has_audio:
            raise InputError(f"{path} has neither video nor sound: give a video or audio file")
        options = replace(self.options, smoother=SmootherOptions(alpha=1.0, switch_margin=0.0, min_dwell_s=0.0))
        started = time.perf_counter()
        video, audio = (path, None) if info.has_video else (None, path)
        events: list[EmotionEvent] = []
        with self.stream(video=video, audio=audio, realtime=False, options=options, on_event=on_event) as stream:
            events.extend(stream)
        return build_clip_result(path, events, info.duration, step, self.labels, time.perf_counter() - started)

    def _video_source(self, camera: Any, video: Any, realtime: bool) -> VideoSource | None:
        if isinstance(camera, VideoSource):
            return camera
        if camera is not None:
            return CameraSource(camera, self.camera_options, self.clock)
        if video is not None:
            return VideoFileSource(video, realtime=realtime, clock=self.clock)
        return None

    def _audio_source(self, microphone: Any, audio: Any, realtime: bool) -> AudioSource | None:
        if isinstance(microphone, AudioSource):
            return microphone
        if microphone is not None:
            return MicrophoneSource(microphone, self.microphone_options, self.clock)
        if audio is not None:
            return AudioFileSource(audio, realtime=realtime, clock=self.clock)
        return None

    # -- one-shot ---------------------------------------------------------------------------------
    def predict(self, frame: np.ndarray | None = None, face: np.ndarray | None = None, audio: np.ndarray | None = None,
                text: str | None = None, sample_rate: int | None = None, transcribe: bool = False) -> EmotionEvent:
        """Recognise one set of inputs in the calling thread (no smoothing).

        ``frame``: a BGR or grey uint8 image of any size (frame encoder, plus face detection when
        ``face`` is not given). ``face``: one face crop, grey or BGR, any size (no detection).
        ``audio``: mono samples (float in [-1, 1] or int16) at ``sample_rate`` Hz (several channels are averaged
        with a warning; without ``sample_rate``, 16000 is assumed with a warning). ``text``: what was said (a text
        confidently in another language than the text branch reads is left absent with the reason).
        ``transcribe``: when ``text`` is not given, the text modality comes from the speech in ``audio``
        (speech recognition, then the text branch; a language the text branch was not trained on
        leaves it absent with the reason). The event's ``transcript`` and ``language`` say what was heard.

        Raises:
            InputError: nothing given, or an input of the wrong type, shape, dtype or rate.
            ModelError: a model fails or is missing from the bundle.
        """
        if frame is None and face is None and audio is None and text is None:
            raise InputError("nothing to predict: pass frame=, face=, audio= and/or text=")
        features: dict[str, np.ndarray | None] = {m: None for m in MODALITIES}
        absent: dict[str, str] = {}
        latency: dict[str, float] = {}
        extra: dict[str, Any] = {}
        if frame is not None:
            self._predict_frame(frame, face is None, features, absent, latency, extra)
        if face is not None:
            self._predict_face(face, features, latency)
        elif frame is None:
            absent["face"] = "no frame or face crop given"
        if frame is None:
            absent["frame"] = "no frame given"
        pcm = samples_for_models(audio, sample_rate) if audio is not None else None
        if pcm is not None:
            self._predict_audio(pcm, features, absent, latency)
        else:
            absent["audio"] = "no audio given"
        if text is not None:
            self._predict_text(text, features, absent, latency, extra)
        elif transcribe and pcm is not None:
            self._predict_transcribed(pcm, features, absent, latency, extra)
        else:
            absent["text"] = "no text given" if not transcribe else "transcribe=True needs audio="
        # the stream's fusion step (a lone scene is dropped) over the options' label set, without smoothing
        fusion = self._predict_fusion
        features, result, _ = fusion_step(fusion, features, absent, latency)
        present = tuple(m for m in MODALITIES if features[m] is not None)
        label, confidence = None, 0.0
        probabilities: dict[str, float] = dict.fromkeys(fusion.labels, 0.0)  # every label, all 0 without evidence
        weights: dict[str, float] = {}
        if result is not None:
            probabilities, weights = readout(result)
            best = int(np.argmax(result.probabilities))
            label, confidence = result.labels[best], float(result.probabilities[best])
        raw_label = label
        label, uncertain = uncertain_label(label, confidence, self.options.min_confidence)
        return EmotionEvent(timestamp=self.clock.now(), label=label, confidence=confidence, probabilities=probabilities,
                            modality_weights=weights, present=present, absent=absent,
                            transcript=extra.get("transcript"), latency_ms=latency, index=0, label_changed=False,
                            raw_label=raw_label, face_box=extra.get("box"), language=extra.get("language"),
                            language_probability=extra.get("language_probability"),
                            people=people_results(extra.get("people", ()), fusion),
                            focus_id=extra.get("focus_id"), people_skipped=extra.get("people_skipped", 0),
                            uncertain=uncertain, relabelled=fusion.view.relabelled)

    def _predict_frame(self, frame: Any, detect: bool, features: dict, absent: dict, latency: dict, extra: dict,
                       calibrated: bool = True) -> None:
        from ecmf_edge.events import as_box
        from ecmf_edge.people import FaceEntry, choose_focus, focus_reason
        from ecmf_edge.stream.vision import is_blank
        from ecmf_edge.vision.alignment import align_face
        from ecmf_edge.vision.face_detector import as_bgr

        image = as_bgr(frame)
        blank = is_blank(image)
        if blank or min(image.shape[:2]) < 12:
            reason = (f"the frame ({image.shape[1]}x{image.shape[0]}) is all one colour: nothing to read" if blank
                      else f"the frame is {image.shape[1]}x{image.shape[0]} pixels: too small to read (12 or more)")
            absent["frame"] = reason
            if detect:
                absent["face"] = reason
            return
        started = time.perf_counter()
        features["frame"] = self.models.frame_encoder.encode(image)[0]
        latency["frame_encoder"] = round((time.perf_counter() - started) * 1000.0, 3)
        if not detect:
            return
        started = time.perf_counter()
        faces = self.models.face_detector.detect(image)
        latency["face_detect"] = round((time.perf_counter() - started) * 1000.0, 3)
        limit = self.options.max_people
        faces, extra["people_skipped"] = faces[:limit], max(0, len(faces) - limit)
        if not faces:
            absent["face"] = "no face in the frame"
            return
        encoder = self.models.face_encoder
        started = time.perf_counter()
        out = encoder.encode([align_face(image, face, size=encoder.input_size) for face in faces])
        latency["face_encode"] = round((time.perf_counter() - started) * 1000.0, 3)
        entries = [FaceEntry(id=k, box=as_box(face.box), features=out.features[k], since_t=0.0)
                   for k, face in enumerate(faces)]
        extra["people"] = entries
        chosen = choose_focus(entries, self.options.focus, None, image.shape)
        if chosen is None:
            absent["face"] = focus_reason(self.options.focus)
            return
        extra["focus_id"] = chosen.id
        features["face"] = self._calibrated(chosen.features) if calibrated else chosen.features
        extra["box"] = chosen.box

    def _predict_face(self, face: Any, features: dict, latency: dict) -> None:
        from ecmf_edge.vision.face_encoder import as_image_list

        crops = as_image_list(face, "face crop")
        if len(crops) != 1:
            raise InputError(f"face= takes one crop, got {len(crops)}: call predict once per face")
        started = time.perf_counter()
        features["face"] = self._calibrated(self.models.face_encoder.encode(crops[0]).features[0])
        latency["face_encode"] = round((time.perf_counter() - started) * 1000.0, 3)

    def _calibrated(self, token: np.ndarray) -> np.ndarray:
        """The focus face's token, moved by the neutral baseline of :meth:`calibrate_face` when one was recorded
        (the streams' correction, :class:`~ecmf_edge.vision.resting_face.RestingFaces`, with its online prior off)."""
        if self._resting is None or not self._resting.has_baseline:
            return token
        return self._resting.correct(0, token, 0.0, 1.0, focus=True)

    def calibrate_face(self, frames: Any = None, faces: Any = None) -> int:
        """Record a neutral baseline of the person :meth:`predict` reads: ``frames`` (whole images; the focus face of
        each is used) or ``faces`` (crops) in which that person looks neutral. From then on their face is read
        relative to it (a resting face that the model takes for sad or angry reads as neutral). Returns how many
        faces were used. Streams calibrate with ``stream.calibrate(seconds)`` or ``StreamOptions(calibrate_s=...)``.

        Raises:
            InputError: neither or both given, no face found, or the bundle has no resting-face statistics.
        """
        from ecmf_edge.vision.face_encoder import as_image_list

        if (frames is None) == (faces is None):
            raise InputError("give frames= (whole images) or faces= (crops) in which the person looks neutral")
        encoder = self.models.face_encoder
        if self._resting is None:
            self._resting = RestingFaces(encoder.resting_face, enabled=False)
        tokens: Any
        if faces is not None:
            tokens = encoder.encode(as_image_list(faces, "face crop")).features
        else:
            tokens = []
            for frame in as_image_list(frames, "frame"):
                features: dict = {}
                absent: dict = {}
                self._predict_frame(frame, True, features, absent, {}, {}, calibrated=False)
                if "face" in features:
                    tokens.append(features["face"])
        self._resting.set_baseline(np.asarray(tokens, np.float32))
        return len(tokens)

    def reset_face(self) -> None:
        """Forget the neutral baseline of :meth:`calibrate_face` (a different person sits down)."""
        if self._resting is not None:
            self._resting.reset()

    def _predict_audio(self, pcm: np.ndarray, features: dict, absent: dict, latency: dict) -> None:
        started = time.perf_counter()
        found = self.models.features.from_audio(pcm, SAMPLE_RATE)
        latency["audio_encoder"] = round((time.perf_counter() - started) * 1000.0, 3)  # encoder and prosody
        token = found.token("audio")
        if token is None:
            absent["audio"] = found.info.get("audio_absent", "no speech")
            return
        branch = self.models.speech_branch
        if branch is not None:  # speaker statistics accumulate over this recognizer's calls (reset_speaker())
            started = time.perf_counter()
            token = branch(token)[0]
            latency["speech_head"] = round((time.perf_counter() - started) * 1000.0, 3)
        features["audio"] = token

    def _predict_text(self, text: Any, features: dict, absent: dict, latency: dict, extra: dict) -> None:
        started = time.perf_counter()
        found = self.models.features.from_text(text)
        latency["text_encoder"] = round((time.perf_counter() - started) * 1000.0, 3)
        if found.info.get("language") is not None:
            probability = found.info["language_probability"]
            extra["language"] = reported_language(found.info["language"], probability)
            extra["language_probability"] = probability
        extra["transcript"] = found.info.get("transcript")
        if found.text is None:
            absent["text"] = found.info.get("text_absent", "no text")
            return
        features["text"] = found.text

    def _predict_transcribed(self, pcm: np.ndarray, features: dict, absent: dict, latency: dict, extra: dict) -> None:
        asr, reason = self.models.asr
        if asr is None:
            absent["text"] = reason
            return
        started = time.perf_counter()
        transcript = asr.transcribe(pcm)
        latency["asr"] = round((time.perf_counter() - started) * 1000.0, 3)
        extra["language"] = reported_language(transcript.language, transcript.language_probability)
        extra["language_probability"] = round(float(transcript.language_probability), 4)
        if transcript.is_empty:
            absent["text"] = transcript.empty_reason or "no words in the audio"
            return
        extra["transcript"] = transcript.text
        featurizer = self.models.featurizer
        gate = featurizer.language_gate(transcript.language)
        if gate is not None:
            absent["text"] = gate
            return
        started = time.perf_counter()
        features["text"] = featurizer.featurize(transcript.text).vector
        latency["text_encoder"] = round((time.perf_counter() - started) * 1000.0, 3)

    # -- lifecycle --------------------------------------------------------------------------------
    def reset_speaker(self) -> None:
        """Start a new speaker for :meth:`predict`: the speech branch normalises each speaker's voice with
        statistics gathered from that speaker's earlier audio, beginning from a typical speaker's.
        (Each :meth:`stream` has a speaker state of its own.)"""
        branch = self.models.speech_branch
        if branch is not None:
            branch.reset_speaker()

    def close(self) -> None:
        """Close every open stream (each within about a second) and free the LLM."""
        with self._lock:
            streams, self._streams = self._streams, []
            self._closed = True
        for stream in streams:
            stream.close()
        try:
            self.models.close()
        except (EcmfError, RuntimeError, OSError) as exc:
            logger.debug("closing the LLM: %s", exc)

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
