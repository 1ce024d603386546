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
from ecmf_edge.events import SCHEMA_VERSION, EmotionEvent, event_schema
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


def _message(resp) -> dict:
    """The next SSE message (or comment) of an open /events response: {"id", "event", "data", "comment"}."""
    message: dict = {}
    while True:
        line = resp.fp.readline()
        assert line, "the event stream ended"
        line = line.rstrip(b"\n").decode()
        if not line:
            if message:
                return message
            continue
        field, _, value = line.partition(": ")
        if field == "":
            message["comment"] = value
        elif field in ("id", "event", "data", "retry"):
            message[field] = value
        if field == "retry":
            message = {}


def _event(label: str, index: int, stream: str | None = None, t: float = 1.0) -> EmotionEvent:
    return EmotionEvent(t, label, 0.6, {label: 0.6, "neutral": 0.4}, {"face": 1.0}, ("face",), {}, index=index,
                        stream=stream)


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
    assert resp.fp.readline() == b"retry: 1000\n"
    first = _message(resp)  # the newest event at once, with its id
    assert first["id"] == "1" and json.loads(first["data"])["transcript"] == "hello there"
    server.publish(_event("sad", 4))
    second = _message(resp)
    assert second["id"] == "2" and json.loads(second["data"])["label"] == "sad"
    assert _message(resp) == {"comment": "keep-alive"}  # nothing new for keepalive_s
    conn.close()
    conn, resp = _get(server, "/nope")
    assert resp.status == 404 and b"/events" in resp.read()
    conn.close()


def test_a_client_that_reconnects_with_last_event_id_misses_nothing(server):
    for k in range(3):
        server.publish(_event("happy", k + 1, "desk"))
    conn, resp = _get(server, "/events")
    resp.fp.readline()
    seen = _message(resp)["id"]
    assert seen == "3"
    conn.close()  # the client goes away; events go on meanwhile
    for k in range(3, 8):
        server.publish(_event("sad", k + 1, "desk" if k % 2 else "door"))
    server.end("door", "input ended")
    conn, resp = _get(server, "/events", {"Last-Event-ID": seen})
    resp.fp.readline()
    replayed = [_message(resp) for _ in range(6)]
    assert [m["id"] for m in replayed] == ["4", "5", "6", "7", "8", "9"], "every missed message, in order, once"
    assert [json.loads(m["data"])["index"] for m in replayed[:5]] == [4, 5, 6, 7, 8]
    assert replayed[5]["event"] == "end" and json.loads(replayed[5]["data"]) == {
        "schema_version": SCHEMA_VERSION, "stream": "door", "reason": "input ended", "events": 2, "timestamp": 1.0}
    server.publish(_event("happy", 9, "desk"))
    assert _message(resp)["id"] == "10", "then live events, without a duplicate"
    conn.close()
    conn, resp = _get(server, "/events?last_event_id=8")  # for clients that cannot set headers
    resp.fp.readline()
    assert [_message(resp)["id"] for _ in range(2)] == ["9", "10"]
    conn.close()


def test_replay_is_bounded_and_says_what_was_lost():
    server = EventServer(port=0, max_replay=3).start()
    try:
        for k in range(10):
            server.publish(_event("happy", k + 1, "desk"))
        conn, resp = _get(server, "/events", {"Last-Event-ID": "2"})
        resp.fp.readline()
        gap = _message(resp)
        assert gap["event"] == "gap" and json.loads(gap["data"]) == {"last_event_id": 2, "first_available_id": 8}
        assert [_message(resp)["id"] for _ in range(3)] == ["8", "9", "10"]
        conn.close()
        assert sum(len(q) for q in server._replay.values()) == 3
    finally:
        server.close()


@pytest.mark.parametrize("header", ["abc", "9" * 40, "-5", "12345678", " ", "\u0661\u0662"])
def test_a_last_event_id_the_server_never_gave_is_ignored(server, header):
    server.publish(_event("happy", 1, "desk"))
    server.publish(_event("sad", 1, "door"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest("GET", "/events")
    conn.putheader("Last-Event-ID", header.encode("utf-8"))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 200
    resp.fp.readline()
    newest = [_message(resp) for _ in range(2)]  # a new client: the newest event of every stream
    assert [json.loads(m["data"])["stream"] for m in newest] == ["desk", "door"]
    conn.close()


def test_cors_preflight_methods_schema_and_streams():
    origin = "http://localhost:3000"
    server = EventServer(port=0, allowed_origins=[origin]).start()
    try:
        for path in ("/latest", "/schema", "/streams", "/"):
            conn, resp = _get(server, path, {"Origin": origin})
            resp.read()
            assert resp.getheader("Access-Control-Allow-Origin") == origin, path
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("OPTIONS", "/events", headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                    "Access-Control-Request-Headers": "last-event-id"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204 and "GET" in resp.getheader("Access-Control-Allow-Methods")
        assert "Last-Event-ID" in resp.getheader("Access-Control-Allow-Headers")
        conn.request("OPTIONS", "/events", headers={"Origin": "http://evil.example"})
        resp = conn.getresponse()
        assert resp.status == 403 and b"--allow-origin" in resp.read()
        conn.request("POST", "/events", body=b"x")
        resp = conn.getresponse()
        assert resp.status == 405 and b"only answers GET" in resp.read()
        conn.close()
        conn, resp = _get(server, "/schema")
        assert json.loads(resp.read()) == event_schema()
        conn.close()
        server.publish(_event("happy", 1, "desk"))
        server.end("desk", "input ended")
        conn, resp = _get(server, "/streams")
        assert json.loads(resp.read()) == [{"name": "desk", "source": None, "events": 1, "timestamp": 1.0, "ended": True,
                                             "reason": "input ended"}]
        conn.close()
        conn, resp = _get(server, "/latest?stream=desk")
        assert json.loads(resp.read())["stream"] == "desk"
        conn.close()
    finally:
        server.close()


def _wait_for_no_clients(server) -> None:
    deadline = time.monotonic() + 30  # a generous bound on a hang: a client that left is let go at the next poll
    while server.clients and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.clients == 0, f"{server.clients} clients that left are still held: the server leaks subscribers"


def test_many_reconnects_garbage_requests_and_too_many_clients_leave_the_server_working():
    import socket

    server = EventServer(port=0, max_clients=4).start()
    try:
        server.publish(_event("happy", 1, "desk"))
        for _ in range(300):  # clients that connect and drop at once (the response holds the socket too)
            conn, resp = _get(server, "/events", {"Last-Event-ID": "1"})
            resp.close()
            conn.close()
        _wait_for_no_clients(server)
        for raw in (b"GARBAGE\r\n\r\n", b"GET /events HTTP/1.1\r\nLast-Event-ID: " + b"9" * 70000 + b"\r\n\r\n",
                    b"\x00\xff\xfe\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(raw)
                answer = sock.recv(200)
                assert answer.split(b"\n", 1)[0].strip() in (b"HTTP/1.0 400 Bad request syntax ('GARBAGE')",
                                                             b"HTTP/1.1 431 Line too long", b"400 Bad request syntax")\
                    or b"400" in answer[:40] or b"431" in answer[:40], answer  # a clear refusal, one line
        held = [_get(server, "/events") for _ in range(4)]
        for _, resp in held:
            assert resp.status == 200
        conn, resp = _get(server, "/events")
        assert resp.status == 503 and b"too many event clients" in resp.read()
        conn.close()
        for conn, resp in held:  # the clients go away (the response holds the socket too)
            resp.close()
            conn.close()
        _wait_for_no_clients(server)
        conn, resp = _get(server, "/latest")
        assert resp.status == 200
        conn.close()
    finally:
        server.close()


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
        assert lines[:2] == [b"retry: 1000", b""] and lines[2] == b"id: 1" and lines[3].startswith(b"data: ")
        assert json.loads(lines[3][6:])["label"] == "happy"
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
