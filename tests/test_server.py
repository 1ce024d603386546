"""`ecmf-edge serve`: the SSE endpoint, origin/host checks, and the page rendered by headless Chromium."""
from __future__ import annotations

import http.client
import json
import shutil
import time

import numpy as np
import pytest
from headless_chromium import HeadlessChromium

from ecmf_edge import Recognizer
from ecmf_edge.cli import main
from ecmf_edge.events import EmotionEvent
from ecmf_edge.stream.server import EventServer

EVENT = EmotionEvent(1.5, "happy", 0.7, {"neutral": 0.1, "angry": 0.05, "happy": 0.7, "sad": 0.05, "worried": 0.05,
                                         "surprise": 0.05}, {"face": 0.6, "audio": 0.4}, ("face", "audio"),
                     {"frame": "no frame", "text": "no text"}, transcript="hello there", index=3)


@pytest.fixture
def server():
    srv = EventServer(port=0, keepalive_s=0.3).start()
    yield srv
    srv.close()


def _get(server, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    return conn, conn.getresponse()


def test_page_latest_and_event_stream(server):
    conn, resp = _get(server, "/")
    body = resp.read().decode()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
    assert 'new EventSource("/events")' in body
    conn.close()
    conn, resp = _get(server, "/latest")
    assert resp.status == 204
    conn.close()
    server.publish(EVENT)
    conn, resp = _get(server, "/latest")
    assert json.loads(resp.read())["label"] == "happy"
    conn.close()
    conn, resp = _get(server, "/events")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    lines = [resp.fp.readline() for _ in range(4)]  # retry, blank, the newest event at once, blank
    assert lines[0] == b"retry: 1000\n" and lines[2].startswith(b"data: ")
    assert json.loads(lines[2][6:])["transcript"] == "hello there"
    server.publish(EmotionEvent(1.6, "sad", 0.6, {"sad": 0.6}, {"face": 1.0}, ("face",), {}, index=4))
    assert json.loads(resp.fp.readline()[6:])["label"] == "sad"
    resp.fp.readline()
    assert resp.fp.readline() == b": keep-alive\n"  # nothing new for keepalive_s
    conn.close()
    conn, resp = _get(server, "/nope")
    assert resp.status == 404
    conn.close()


def test_event_responses_end_after_max_stream_s():
    server = EventServer(port=0, max_stream_s=0.5).start()
    try:
        server.publish(EVENT)
        started = time.monotonic()
        conn, resp = _get(server, "/events")
        body = resp.read()  # returns only when the server ends the response
        # ordering: the server ends the response itself, not before max_stream_s (the body holds the event)
        assert time.monotonic() - started > 0.4
        lines = body.split(b"\n")
        assert lines[:2] == [b"retry: 1000", b""] and lines[2].startswith(b"data: ")
        assert json.loads(lines[2][6:])["label"] == "happy"
        conn.close()
    finally:
        server.close()


def test_foreign_origins_and_hosts_are_refused(server):
    conn, resp = _get(server, "/events", {"Origin": "http://evil.example"})
    assert resp.status == 403 and b"Origin 'http://evil.example' refused" in resp.read()
    conn.close()
    conn, resp = _get(server, "/", {"Host": "attacker.example:80"})
    assert resp.status == 403 and b"only answers to 127.0.0.1 / localhost" in resp.read()
    conn.close()
    same = f"http://127.0.0.1:{server.port}"
    conn, resp = _get(server, "/latest", {"Origin": same})
    assert resp.status == 204
    conn.close()
    extra = EventServer(port=0, allowed_origins=["http://localhost:3000"]).start()
    try:
        conn, resp = _get(extra, "/latest", {"Origin": "http://localhost:3000"})
        assert resp.status == 204
        conn.close()
    finally:
        extra.close()
    assert ("GET", "/events", 403) in server.requests


def test_serve_command_runs_a_stream_and_exits_when_done(capsys, bundle_root, face_video):
    code = main(["serve", "--video", str(face_video), "--no-realtime", "--no-text", "--port", "0", "--exit-when-done",
                 "--bundle", str(bundle_root)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "serving events of 1 stream(s) on http://127.0.0.1:" in err and "20 events in" in err


def test_the_page_shows_live_events_in_headless_chromium(bundle, face_video, speech_wav, tmp_path):
    import cv2

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    server = EventServer(port=0).start()
    rec = Recognizer(bundle=bundle, use_llm=False, text=False)
    browser = None
    try:
        stream = rec.stream(video=face_video, audio=speech_wav, realtime=False, on_event=server.publish)
        assert stream.run(timeout=60)
        assert server.published >= 30
        browser = HeadlessChromium(chromium, str(tmp_path / "profile"), width=800, height=600)
        browser.open(server.url)
        assert browser.wait_for('document.getElementById("status").textContent.includes("events")'), \
            "the page received no event within 30 s"
        assert browser.wait_for('document.querySelector(".legend").textContent.includes("neutral")'), \
            "the one-minute chart has a legend naming each label"
        png = browser.screenshot_png()
    finally:
        if browser is not None:
            browser.close()
        rec.close()
        server.close()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (600, 800, 3)
    assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "the page is not blank"
    green = np.all(np.abs(image.astype(int) - (0x44, 0x9E, 0x2F)) < 24, axis=2).sum()  # probability bars, #2f9e44
    orange = np.all(np.abs(image.astype(int) - (0x00, 0x8C, 0xF0)) < 24, axis=2).sum()  # modality-weight bars, #f08c00
    assert green > 2000 and orange > 2000, "the bars were drawn from received events"
    assert ("GET", "/", 200) in server.requests and ("GET", "/events", 200) in server.requests
