"""``ecmf-edge run`` (window, console or JSON lines; optional recording) and ``ecmf-edge serve`` (SSE + web page).

Both read a camera (``--camera N``, the default) or a video file (``--video FILE``) and
a microphone (``--mic DEVICE``; the default microphone is tried with a camera) or a WAV
file (``--audio FILE``). Files play in real time unless ``--no-realtime`` is given.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from ecmf_edge.cli.common import add_llm_switch, given, llm_note, llm_options, with_default
from ecmf_edge.errors import DependencyError, DeviceError, InputError
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS
from ecmf_edge.stream.group import StreamGroup

__all__ = ["add_run_parser", "add_serve_parser", "stream_options", "recognizer_options"]

logger = logging.getLogger("ecmf_edge")

_STREAM = "ecmf_edge.stream.options:StreamOptions"
_RECOGNIZER = "ecmf_edge.recognizer:RecognizerOptions"
_SMOOTHER = "ecmf_edge.stream.options:SmootherOptions"


def _every_frame_default(hz: Any) -> str:
    return "0" if hz is None else f"{hz:g}"


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("inputs")
    src.add_argument("--camera", type=int, action="append", metavar="INDEX",
                     help="camera index (default 0 when no --video/--audio is given); repeat for several streams")
    src.add_argument("--video", action="append", metavar="FILE",
                     help="video file instead of a camera; repeat for several streams (each with its own sound)")
    src.add_argument("--mic", action="append", metavar="DEVICE",
                     help="microphone: 'default', an index or a name (see `ecmf-edge doctor`); repeated, the n-th goes "
                          "with the n-th camera or video")
    src.add_argument("--audio", action="append", metavar="FILE",
                     help="audio file instead of a microphone (wav, mp3, m4a, flac, ogg, webm, mp4 ...); repeated, "
                          "the n-th goes with the n-th video")
    src.add_argument("--no-audio", action="store_true",
                     help="no sound: neither the default microphone with a camera nor a video file's own sound track")
    src.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                     help="play files at their own pace (--no-realtime: as fast as they are processed)")
    model = p.add_argument_group("models")
    model.add_argument("--bundle", help=with_default("bundle name or folder", _RECOGNIZER, "bundle"))
    model.add_argument("--backend", choices=BACKEND_CHOICES, help=with_default("inference backend", _RECOGNIZER, "backend"))
    model.add_argument("--precision", choices=PRECISIONS, help=with_default("bundle precision", _RECOGNIZER, "precision"))
    add_llm_switch(model)
    model.add_argument("--no-text", action="store_true", help="no speech recognition (text modality off)")
    model.add_argument("--fusion-hz", type=float, help=with_default("events per second", _STREAM, "fusion_hz"))
    model.add_argument("--model-threads", type=int,
                       help=with_default("ONNX Runtime threads per model (the stages already run in parallel)",
                                         _RECOGNIZER, "model_threads"))
    cpu = p.add_argument_group("CPU (docs/benchmarks.md, \"CPU per stream\")")
    cpu.add_argument("--face-hz", type=float, metavar="HZ",
                     help=with_default("frames per second the face path reads (0: every camera frame; 15 saves CPU, "
                                       "adds latency)", _STREAM, "face_path_hz", _every_frame_default))
    cpu.add_argument("--scene-change", type=float, metavar="GREY",
                     help=with_default("reuse the scene embedding while the picture changes by at most GREY grey levels "
                                       "(a still camera: try 1; 0: encode every scene update)", _STREAM, "scene_change"))
    people = p.add_argument_group("people")
    people.add_argument("--focus", type=_focus,
                        help=with_default("whose face the fused label follows: largest, center, or a track id", _STREAM, "focus"))
    people.add_argument("--max-people", type=int,
                        help=with_default("most faces tracked and labelled per frame", _STREAM, "max_people"))
    people.add_argument("--detect-every", type=int, metavar="N",
                        help=with_default("full face detection every N frames, tracking between (1: every frame)", _STREAM,
                                          "detect_every"))
    people.add_argument("--calibrate", type=float, default=None, metavar="SECONDS",
                        help="record the focus person's face over the first SECONDS as their neutral baseline (look "
                             "neutral meanwhile); their face is then read relative to it")
    people.add_argument("--resting-face", action=argparse.BooleanOptionalAction, default=None,
                        help="correct each person's face by their own running mean, shrunk towards the population's "
                             "(default: as the bundle says; the shipped one leaves it off, MODEL_CARD.md)")
    src.add_argument("--name", action="append", metavar="NAME",
                     help="the stream's name in events (default: the input file's stem, or camera0); repeated, the n-th "
                          "names the n-th --camera/--video")
    labels = p.add_argument_group("labels (docs/integration.md)")
    labels.add_argument("--labels", type=_label_choice, metavar="LIST|MAP",
                        help="report only these labels (happy,sad,neutral) or your own names for them "
                             "(sad=negative,angry=negative,happy=positive); probabilities are renormalised over them")
    labels.add_argument("--min-confidence", type=float, metavar="P",
                        help=with_default("below this smoothed probability the label is 'uncertain' (0: never)", _STREAM,
                                         "min_confidence"))
    labels.add_argument("--smooth-alpha", type=float, metavar="A",
                        help=with_default("weight of the newest probabilities in the moving average (1: no smoothing)",
                                         _SMOOTHER, "alpha"))
    labels.add_argument("--switch-margin", type=float, metavar="P",
                        help=with_default("a new label takes over when it leads the held one by this much", _SMOOTHER,
                                         "switch_margin"))
    labels.add_argument("--min-dwell", type=float, metavar="S",
                        help=with_default("a label is held at least S seconds after a change", _SMOOTHER, "min_dwell_s"))
    p.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds of stream time")
    p.add_argument("--log-events", metavar="FILE.jsonl",
                   help="append every event (labels, transcripts) to this JSON-lines file; nothing is written otherwise")


def _label_choice(value: str) -> Any:
    from ecmf_edge.labels import parse_label_choice

    try:
        return parse_label_choice(value)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _smoother(args: argparse.Namespace) -> Any:
    """SmootherOptions with the flags the user gave (the others at their defaults)."""
    from ecmf_edge.stream.options import SmootherOptions

    return SmootherOptions(**given(args, smooth_alpha="alpha", switch_margin="switch_margin", min_dwell="min_dwell_s"))


def _focus(value: str) -> str | int:
    if value in ("largest", "center"):
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a focus: use largest, center or a track id (1, 2 ...)")
    return number


def _event_log(args: argparse.Namespace):
    """The JSON-lines event log the user asked for with --log-events, or None (nothing is written by default)."""
    if not getattr(args, "log_events", None):
        return None
    from ecmf_edge.stream.sinks import JsonLinesSink

    return JsonLinesSink(args.log_events, append=True)


def stream_options(args: argparse.Namespace):
    """The StreamOptions of ``run``/``serve`` (only the options given; the rest: StreamOptions')."""
    from ecmf_edge.stream.options import StreamOptions

    chosen = given(args, fusion_hz="fusion_hz", focus="focus", max_people="max_people", detect_every="detect_every",
                   scene_change="scene_change", calibrate="calibrate_s", resting_face="resting_face", labels="labels",
                   min_confidence="min_confidence")
    if args.face_hz is not None:
        chosen["face_path_hz"] = args.face_hz or None  # 0: every camera frame
    return StreamOptions(**chosen, smoother=_smoother(args))


def recognizer_options(args: argparse.Namespace):
    """The RecognizerOptions of ``run``/``serve`` (only the options given; the rest: RecognizerOptions')."""
    from ecmf_edge.capture.microphone import MicrophoneOptions
    from ecmf_edge.recognizer import RecognizerOptions

    chosen = given(args, backend="backend", precision="precision", bundle="bundle", model_threads="model_threads")
    if args.llm:  # a GGUF path (a bare --llm uses the default model): checked now, not at the first utterance
        from ecmf_edge.text.llm_context import check_gguf

        check_gguf(args.llm)
        chosen["llm_options"] = llm_options(args)
    return RecognizerOptions(**chosen, stream=stream_options(args), text=not args.no_text, use_llm=args.llm is not None,
                             microphone_options=MicrophoneOptions(max_reconnects=3))  # unattended runs ride out a replugged mic


def _recognizer(args: argparse.Namespace):
    from ecmf_edge.recognizer import Recognizer

    return Recognizer(options=recognizer_options(args))


def _open_one(rec: Any, args: argparse.Namespace, camera: int | None, video: str | None, mic: str | None,
              audio: str | None, optional_mic: bool, name: str | None = None):
    inputs = dict(camera=camera, video=video, audio=audio, realtime=args.realtime, video_audio=not args.no_audio,
                  stream_id=name)
    if mic:
        return rec.stream(microphone=mic, **inputs)
    if not optional_mic:
        return rec.stream(**inputs)
    try:
        return rec.stream(microphone="default", **inputs)
    except (DeviceError, DependencyError) as exc:  # asked for a camera only: go on without sound
        print(f"note: running without audio ({exc})", file=sys.stderr)
        return rec.stream(**inputs)


def _open_streams(rec: Any, args: argparse.Namespace) -> list:
    """The streams the arguments ask for (one per camera or video; the n-th --mic/--audio goes with the n-th);
    the default microphone is optional next to a single camera.

    Raises:
        InputError: cameras and videos mixed, more microphones/audio files than streams, a camera twice.
    """
    cameras, videos = list(args.camera or []), list(args.video or [])
    mics, audios = list(args.mic or []), list(args.audio or [])
    if cameras and videos:
        raise InputError("give either --camera or --video, not both")
    if mics and audios:
        raise InputError("give either --mic or --audio, not both")
    if len(set(cameras)) != len(cameras):
        raise InputError(f"camera {next(c for c in cameras if cameras.count(c) > 1)} is given twice: open each camera once")
    # Without any input option: the camera (and the default microphone if there is one); files alone otherwise.
    if not cameras and not videos and not audios:
        cameras = [0]
    visuals: list[tuple[int | None, str | None]] = [(c, None) for c in cameras] + [(None, v) for v in videos]
    sounds = mics or audios
    if len(sounds) > max(1, len(visuals)):
        raise InputError(f"{len(sounds)} {'--mic' if mics else '--audio'} for {len(visuals)} stream(s): give at most one "
                         "per --camera/--video")
    if not visuals:
        visuals = [(None, None)]
    names = list(getattr(args, "name", None) or [])
    if len(names) > len(visuals) or len(set(names)) != len(names):
        raise InputError(f"--name given {len(names)} time(s) for {len(visuals)} stream(s): give each stream at most one, "
                         "distinct name")
    streams = []
    try:
        for k, (camera, video) in enumerate(visuals):
            mic = mics[k] if k < len(mics) else None
            audio = audios[k] if k < len(audios) else None
            optional = len(visuals) == 1 and camera is not None and not args.no_audio and not sounds
            streams.append(_open_one(rec, args, camera, video, mic, audio, optional, names[k] if k < len(names) else None))
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    return streams


def _cmd_run(args: argparse.Namespace) -> int:
    from ecmf_edge.stream.overlay import draw_overlay
    from ecmf_edge.stream.recorder import VideoRecorder
    from ecmf_edge.stream.viewer import WINDOW, LatencyStats, Viewer, check_gui, format_event_line

    window = not (args.headless or args.json)
    if window:
        check_gui()
    recorder = None
    if args.record:
        recorder = VideoRecorder(args.record, fps=stream_options(args).fusion_hz)
        if recorder.error:
            print(f"ecmf-edge: error: {recorder.error} (the stream goes on without recording)", file=sys.stderr)
    stats = LatencyStats()
    reported = False
    event_log = _event_log(args)
    with _recognizer(args) as rec:
        llm_note(args, rec.bundle)
        streams = _open_streams(rec, args)
        if recorder is not None and len(streams) > 1:
            for opened in streams:
                opened.close()
            raise InputError("--record writes one stream: drop --record or run one --camera/--video")
        for opened in streams:
            if event_log is not None:
                opened.add_sink(event_log)
        group = StreamGroup(streams)
        several = len(streams) > 1
        viewer = Viewer() if window else None
        stats.started = time.monotonic()
        try:
            for event in group if several else streams[0]:
                stream = group.by_id[event.stream]
                stats.add(event)
                if args.json:
                    print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
                elif args.headless:
                    print(format_event_line(event), flush=True)
                if window or (recorder is not None and recorder.error is None):
                    frame = stream.frame_for(event)
                    if frame is not None:
                        annotated = draw_overlay(frame.image, event, fps=stats.rate(event.stream))
                        if recorder is not None and not recorder.write(annotated) and not reported:
                            reported = True
                            print(f"ecmf-edge: error: {recorder.error}", file=sys.stderr)
                        if viewer is not None and not viewer.show(f"{WINDOW} {event.stream}" if several else WINDOW,
                                                                  annotated):
                            break
                if args.max_seconds is not None and event.timestamp >= args.max_seconds:
                    break
        finally:
            group.close()
            if recorder is not None:
                recorder.close()
            if viewer is not None:
                viewer.close()
    print(stats.summary(), file=sys.stderr)
    return 0


def _cmd_run_guarded(args: argparse.Namespace) -> int:
    try:
        return _cmd_run(args)
    except BrokenPipeError:  # e.g. `ecmf-edge run --json | head`: the reader is gone, which is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ecmf_edge.stream.server import EventServer
    from ecmf_edge.stream.viewer import LatencyStats

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a TCP port: use 1-65535 (or 0 to pick a free one)")

    server = EventServer(args.host, args.port, allowed_origins=args.allow_origin or (),
                         max_stream_s=args.max_stream_seconds).start()
    stats = LatencyStats()
    try:
        event_log = _event_log(args)
        with _recognizer(args) as rec:
            llm_note(args, rec.bundle)
            streams = _open_streams(rec, args)
            for stream in streams:
                if event_log is not None:
                    stream.add_sink(event_log)
                server.attach(stream)
                stream.add_sink(stats.add)
            print(f"serving events of {len(streams)} stream(s) on {server.url} (Ctrl-C stops)", file=sys.stderr, flush=True)
            try:
                for stream in streams:
                    stream.start()
                while not all(stream.finished for stream in streams):
                    time.sleep(0.2)
                    if args.max_seconds is not None and stats.last_timestamp >= args.max_seconds:
                        break
            finally:
                for stream in streams:
                    stream.close()
            print(stats.summary(), file=sys.stderr)
            server.drain()  # connected clients get the last events and each stream's end message
            if not args.exit_when_done:
                print("the input ended; still serving the last event (Ctrl-C stops)", file=sys.stderr, flush=True)
                while True:
                    time.sleep(0.5)
    finally:
        server.close()
    return 0


def add_run_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``ecmf-edge run``."""
    p = sub.add_parser("run", help="recognise emotions live from a camera/microphone or from files")
    _add_stream_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--headless", action="store_true", help="no window: print one line per event")
    out.add_argument("--json", action="store_true", help="no window: print one JSON object per event")
    out.add_argument("--record", metavar="OUT.mp4", help="write the annotated video to this file (.mp4 or .avi)")
    p.set_defaults(func=_cmd_run_guarded)
    return p


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``ecmf-edge serve``."""
    p = sub.add_parser("serve", help="publish events as Server-Sent Events with a small web page")
    _add_stream_options(p)
    net = p.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    net.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                     help="also accept requests from this web origin (e.g. http://localhost:3000); repeatable")
    net.add_argument("--max-stream-seconds", type=float, metavar="S",
                     help="end each /events response after S seconds (browsers reconnect); default: keep it open")
    net.add_argument("--exit-when-done", action="store_true", help="exit when the input files end instead of serving on")
    p.set_defaults(func=_cmd_serve)
    return p
