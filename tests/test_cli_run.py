"""`ecmf-edge run`: console and JSON output, recording (and its failures), device errors, the overlay."""
from __future__ import annotations

import glob
import json
import shutil

import numpy as np
import pytest

from ecmf_edge import LABELS, Recognizer
from ecmf_edge.cli import main
from ecmf_edge.stream.overlay import draw_overlay


def _run(capsys, *argv):
    code = main(["run", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_headless_prints_one_line_per_event(capsys, bundle_root, face_video, speech_wav):
    code, out, err = _run(capsys, "--video", str(face_video), "--audio", str(speech_wav), "--no-realtime", "--headless",
                          "--bundle", str(bundle_root))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) >= 30 and all(line.split()[0].endswith("s") for line in lines)
    assert all(line.split()[1] in LABELS for line in lines)
    assert "[frame,face]" in lines[0] and " ms" in lines[0]
    assert "happy" in lines[-1].lower().split('"')[1], "the last line carries the transcript"
    assert "events in" in err and "capture-to-event latency p50" in err


def test_json_lines(capsys, bundle_root, face_video):
    code, out, err = _run(capsys, "--video", str(face_video), "--no-realtime", "--json", "--no-text", "--bundle",
                          str(bundle_root), "--max-seconds", "1.0")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["index"] for e in events] == list(range(1, 11)) and events[-1]["timestamp"] == pytest.approx(1.0)
    assert all(e["label"] in LABELS and e["present"] == ["frame", "face"] for e in events)
    assert events[0]["absent"]["audio"] == "no microphone or audio file given"
    assert set(events[0]["latency_ms"]) >= {"face_detect", "face_encode", "frame_encoder", "fusion", "capture_to_event"}


def test_window_without_a_display_is_a_one_line_error_before_any_model_loads(capsys, monkeypatch, face_video, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    # a bundle folder that does not exist: the display is checked first, so this is never reached
    code, out, err = _run(capsys, "--camera", "0", "--bundle", str(tmp_path / "no-bundle"))
    assert code == 2 and out == "" and err.strip().count("\n") == 0
    assert "no display" in err and "--headless" in err and "--json" in err and "ecmf-edge serve" in err


def test_the_window_opens_at_the_frames_size_fitted_to_the_screen():
    from ecmf_edge.stream.viewer import window_size

    assert window_size(1280, 720, None) == (1280, 720)
    assert window_size(640, 480, (1920, 1080)) == (640, 480)
    w, h = window_size(3840, 2160, (1920, 1080))
    assert w <= 1920 * 0.9 + 1 and h <= 1080 * 0.9 + 1 and abs(w / h - 16 / 9) < 0.01


def test_serve_rejects_a_port_out_of_range_in_one_line(capsys):
    code = main(["serve", "--port", "70000", "--video", "clip.mp4"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "--port 70000" in err and "1-65535" in err


def test_window_without_gui_support_is_a_one_line_error(capsys, monkeypatch, bundle_root, face_video):
    import cv2

    monkeypatch.setenv("DISPLAY", ":0")  # a display is there; this OpenCV build cannot open windows

    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        pytest.skip("this OpenCV build has a GUI")
    except cv2.error:
        pass
    code, out, err = _run(capsys, "--video", str(face_video), "--bundle", str(bundle_root))
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0
    assert "no GUI (opencv-python-headless): use --headless or --json, or `pip install opencv-python`" in err


def test_record_writes_the_annotated_video(capsys, bundle_root, face_video, tmp_path):
    import cv2

    out_file = tmp_path / "annotated.mp4"
    code, out, err = _run(capsys, "--video", str(face_video), "--no-realtime", "--headless", "--no-text",
                          "--bundle", str(bundle_root), "--record", str(out_file))
    assert code == 0, err
    cap = cv2.VideoCapture(str(out_file))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == len(out.splitlines()) == 20
    assert frames[0].shape == (480, 640, 3)
    assert np.abs(frames[5].astype(int) - 90).sum(axis=2)[420:470, 10:300].mean() > 20, "the status line is drawn"


def test_record_to_an_unwritable_place_or_a_full_disk_keeps_the_stream(capsys, bundle_root, face_video,
                                                                        tmp_path, monkeypatch):
    code, out, err = _run(capsys, "--video", str(face_video), "--no-realtime", "--headless", "--no-text",
                          "--bundle", str(bundle_root), "--record", str(tmp_path / "no" / "such" / "dir" / "x.mp4"))
    assert code == 0 and len(out.splitlines()) == 20
    assert "ecmf-edge: error: cannot record to" in err and "does not exist" in err and "the stream goes on" in err
    monkeypatch.setattr(shutil, "disk_usage", lambda path: (100 << 30, 100 << 30, 1 << 20))
    code, out, err = _run(capsys, "--video", str(face_video), "--no-realtime", "--headless", "--no-text",
                          "--bundle", str(bundle_root), "--record", str(tmp_path / "full.mp4"))
    assert code == 0 and len(out.splitlines()) == 20
    assert err.count("the disk is full (1 MiB free); the stream goes on") == 1


def test_device_errors_are_one_line(capsys, bundle_root, face_video):
    if not glob.glob("/dev/video7"):
        code, out, err = _run(capsys, "--camera", "7", "--no-audio", "--headless", "--bundle", str(bundle_root))
        assert code == 2 and err.count("\n") == 1
        assert "ecmf-edge: error: no camera at index 7:" in err and "--video FILE" in err
    sd = pytest.importorskip("sounddevice")
    try:
        sd.query_devices(None, kind="input")
    except (sd.PortAudioError, ValueError):
        code, out, err = _run(capsys, "--video", str(face_video), "--mic", "default", "--headless", "--bundle",
                              str(bundle_root))
        assert code == 2 and err.count("\n") == 1 and "ecmf-edge: error: no microphone found" in err
    code, out, err = _run(capsys, "--video", str(face_video), "--camera", "0", "--headless", "--bundle", str(bundle_root))
    assert code == 2 and "give either --camera or --video, not both" in err


# ---------------------------------------------------------------- the overlay is a pure function
def test_overlay_draws_on_a_real_frame_without_touching_it(bundle, astronaut_bgr):
    import cv2

    with Recognizer(bundle=bundle, use_llm=False, text=False) as rec:
        event = rec.predict(frame=astronaut_bgr, text="I am so happy that you came to visit me today.")
    original = astronaut_bgr.copy()
    annotated = draw_overlay(astronaut_bgr, event, fps=9.7)
    assert np.array_equal(astronaut_bgr, original), "the input frame is not modified"
    assert annotated.shape == astronaut_bgr.shape and annotated.dtype == np.uint8
    assert np.array_equal(draw_overlay(astronaut_bgr, event, fps=9.7), annotated), "same input, same output"
    x1, y1, x2, y2 = (int(round(v)) for v in event.face_box)
    assert np.any(annotated[y1, x1 + 5:x2 - 5] != astronaut_bgr[y1, x1 + 5:x2 - 5]), "the face box is drawn"
    changed = np.any(annotated != astronaut_bgr, axis=2)
    assert changed[:, -150:].mean() > 0.3, "the probability / weight panel covers the right side"
    assert changed[-50:, :].mean() > 0.02, "transcript and status lines are drawn"
    grey = draw_overlay(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY), event)
    assert grey.shape == astronaut_bgr.shape
    small = draw_overlay(cv2.resize(astronaut_bgr, (160, 120)), event)
    assert small.shape == (120, 160, 3)
    waiting = draw_overlay(astronaut_bgr, None)
    assert np.any(waiting != astronaut_bgr)


def _as_from_a_shell() -> None:
    """In the child before exec: no blocked signals and Ctrl-C's default disposition, as a shell starts a command.
    (A child inherits its parent thread's signal mask, and libraries loaded by earlier tests in this process, e.g.
    PortAudio's, may have blocked signals in it: the run would then never see the SIGINT.)"""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_real_time_run(bundle_root, face_video, speech, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import write_wav

    # 20 s of sound: the run is still going when Ctrl-C comes, however slowly a busy machine starts it.
    long_wav = write_wav(tmp_path / "long.wav", np.tile(speech, int(np.ceil(20 * 16000 / speech.size))), 16000)
    proc = subprocess.Popen([sys.executable, "-m", "ecmf_edge.cli", "run", "--video", str(face_video), "--audio",
                             str(long_wav), "--headless", "--bundle", str(bundle_root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(bundle_root.parent),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_as_from_a_shell)
    try:
        # Events with a label: models loaded, threads running (on a busy machine the first ticks may come before
        # any stage has a result, and carry no label).
        lines = [proc.stdout.readline()]
        while lines[-1] and lines[-1].split()[1] not in LABELS and len(lines) < 100:
            lines.append(proc.stdout.readline())
        assert lines[-1] and lines[-1].split()[1] in LABELS, lines[-3:]
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("hang: the run did not stop within 30 s of Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    err = proc.stderr.read()
    assert code == 130 and "ecmf-edge: interrupted" in err and "Traceback" not in err, err


def test_status_rate_is_the_recent_event_rate_not_the_average_since_start_up(monkeypatch):
    from types import SimpleNamespace

    from ecmf_edge.stream import viewer

    clock = iter([100.0] + [160.0 + 0.1 * k for k in range(30)])  # a minute of model loading, then 10 events/s
    monkeypatch.setattr(viewer.time, "monotonic", lambda: next(clock))
    stats = viewer.LatencyStats()
    for k in range(30):
        stats.add(SimpleNamespace(timestamp=0.1 * k, latency_ms={}, stream="0"))
    assert stats.rate("0") == pytest.approx(10.0, rel=0.01)
    assert stats.rate("1") == 0.0


def test_calibrate_seconds_out_of_range_is_a_one_line_error(capsys, bundle_root, face_video):
    code = main(["run", "--video", str(face_video), "--headless", "--calibrate", "-3", "--bundle", str(bundle_root)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "calibrate_s=-3" in err


def test_an_explicit_llm_file_that_is_not_a_gguf_is_a_one_line_error_at_start_up(capsys, face_video, tmp_path):
    from ecmf_edge.cli import main as cli

    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"not a model at all")
    for command in (["run", "--video", str(face_video), "--headless"], ["label", str(face_video), "--out", str(tmp_path / "o")]):
        code = cli(command + ["--llm", str(junk)])
        err = capsys.readouterr().err
        assert code == 2 and err.strip().count("\n") == 0 and "is not a GGUF model file" in err, command
