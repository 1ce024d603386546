"""Events over Server-Sent Events with the standard library, and a tiny page that shows them.

Endpoints (docs/integration.md is the developer's guide):

- ``GET /events``: ``text/event-stream``. Every event is one message with an ``id:`` (a number that grows
  by one per message, across streams, from server start) and the event's JSON as ``data:``
  (schema: ``/schema``). A stream that ends sends ``event: end`` (``{"stream", "reason", "events",
  "timestamp"}``). A client that reconnects with ``Last-Event-ID`` (the header browsers send, or
  ``?last_event_id=``) gets every message after that id still held (the last ``replay_s`` seconds of
  each stream); when some were already dropped, an ``event: gap`` message says from which id on it
  resumes. Without one (or with an id this server never gave), it gets the newest event of every stream.
- ``GET /latest``: the newest event (``?stream=NAME``: of that stream) as JSON; 204 before any.
- ``GET /streams``: the streams as JSON: name, source, events sent, whether and why each ended.
- ``GET /schema``: the JSON Schema of events. ``GET /``: the page.

The server binds 127.0.0.1 by default, refuses requests whose ``Origin`` is not the page's own (or
one given with ``allowed_origins``), and on a loopback address also refuses foreign ``Host`` headers
(DNS rebinding). Allowed origins get CORS headers on every endpoint, and ``OPTIONS`` preflights
are answered.
"""
from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ecmf_edge.errors import DeviceError, InputError
from ecmf_edge.events import EVENT_SCHEMA_PATH, SCHEMA_VERSION, EmotionEvent
from ecmf_edge.stream.queues import DropOldestQueue

__all__ = ["EventServer", "PAGE", "ENDPOINTS"]

logger = logging.getLogger("ecmf_edge")

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

# What the server answers, for the 404 message and the docs.
ENDPOINTS = ("/", "/events", "/latest", "/streams", "/schema")
# A Last-Event-ID longer than this is not one of ours (ids are decimal counters).
_MAX_ID_DIGITS = 18

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ecmf-edge live</title>
<style>
 body{font-family:sans-serif;background:#16181d;color:#eee;margin:18px}
 #streams{display:flex;flex-wrap:wrap;gap:18px} .stream{background:#1e2128;padding:12px 16px;border-radius:6px;min-width:360px;flex:1}
 .sid{color:#888;font-size:13px} .label{font-size:40px;margin:0 0 2px 0} .conf{color:#aaa;font-size:16px}
 .row{display:flex;align-items:center;margin:4px 0} .name{width:90px}
 .track{flex:1;background:#30343c;height:16px;max-width:420px}
 .bar{height:16px;background:#2f9e44} .w .bar{background:#f08c00}
 canvas{background:#111317;width:100%;max-width:520px;height:110px}
 .transcript{margin-top:10px;font-style:italic;color:#ffe8a3} #status{color:#888;font-size:13px;margin-top:10px}
 table{border-collapse:collapse} td,th{padding:2px 12px 2px 0;text-align:left} .focus{color:#ffd43b}
 h3{margin:10px 0 4px 0;font-size:15px}
 .legend{font-size:12px;color:#bbb;margin:2px 0} .legend span{margin-right:10px} .legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
</style></head><body>
<div id="streams"><div class="stream"><div class="label">waiting for events&hellip;</div></div></div>
<div id="status">connecting</div>
<script>
const COLOURS = {neutral:"#c8c8c8", angry:"#e62828", happy:"#3cc83c", sad:"#2878c8", worried:"#e6a028", surprise:"#c83cc8"};
const panels = {}, history = {};
function bars(el, values, all) {
  el.innerHTML = "";
  for (const name of all) {
    const v = values[name] || 0, row = document.createElement("div");
    row.className = "row";
    row.innerHTML = '<span class="name"></span><div class="track"><div class="bar"></div></div>';
    row.querySelector(".name").textContent = name;
    row.querySelector(".bar").style.width = Math.round(100 * v) + "%";
    el.appendChild(row);
  }
}
function panel(id) {
  if (panels[id]) return panels[id];
  const box = document.getElementById("streams");
  if (!Object.keys(panels).length) box.innerHTML = "";
  const el = document.createElement("div");
  el.className = "stream";
  el.innerHTML = '<div class="sid"></div><div class="label"></div><div class="conf"></div>' +
    '<h3>last minute</h3><div class="legend"></div><canvas width="520" height="110"></canvas>' +
    '<h3>probabilities</h3><div class="probs"></div><h3>modality weights</h3><div class="w weights"></div>' +
    '<h3>people</h3><table class="people"></table><div class="transcript"></div>';
  el.querySelector(".sid").textContent = "stream " + id;
  box.appendChild(el);
  history[id] = [];
  return panels[id] = el;
}
function legend(el, names) {
  if (el.dataset.names === names.join()) return;
  el.dataset.names = names.join();
  el.innerHTML = "";
  for (const name of names) {
    const item = document.createElement("span"), swatch = document.createElement("i");
    swatch.style.background = COLOURS[name] || "#999";
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(name));
    el.appendChild(item);
  }
}
function chart(canvas, points) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  if (!points.length) return;
  const end = points[points.length - 1].t, start = end - 60;
  for (const name of Object.keys(points[points.length - 1].p)) {
    g.strokeStyle = COLOURS[name] || "#999"; g.lineWidth = 1.5; g.beginPath();
    let first = true;
    for (const pt of points) {
      const x = (pt.t - start) / 60 * w, y = h - 4 - (pt.p[name] || 0) * (h - 8);
      if (first) { g.moveTo(x, y); first = false; } else g.lineTo(x, y);
    }
    g.stroke();
  }
}
const source = new EventSource("/events");
let count = 0;
source.onmessage = (msg) => {
  const e = JSON.parse(msg.data), id = e.stream == null ? "0" : e.stream, el = panel(id); count += 1;
  el.querySelector(".label").textContent = e.label || "no signal";
  el.querySelector(".label").style.color = COLOURS[e.label] || "#eee";
  el.querySelector(".conf").textContent = e.label ? "confidence " + e.confidence.toFixed(2) : "";
  bars(el.querySelector(".probs"), e.probabilities, Object.keys(e.probabilities));
  bars(el.querySelector(".weights"), e.modality_weights, ["frame", "face", "audio", "text"]);
  const points = history[id];
  if (e.label) points.push({t: e.timestamp, p: e.probabilities});
  while (points.length && points[0].t < e.timestamp - 60) points.shift();
  legend(el.querySelector(".legend"), Object.keys(e.probabilities));
  chart(el.querySelector("canvas"), points);
  const table = el.querySelector(".people"), people = e.people || [];
  table.innerHTML = people.length ? "<tr><th>id</th><th>label</th><th>confidence</th><th>in view</th></tr>"
                                  : "<tr><td>nobody in view</td></tr>";
  for (const p of people) {
    const row = table.insertRow();
    if (p.id === e.focus_id) row.className = "focus";
    for (const text of ["#" + p.id + (p.id === e.focus_id ? " (focus)" : ""), p.label, p.confidence.toFixed(2),
                        p.tracked_s.toFixed(1) + " s"]) row.insertCell().textContent = text;
  }
  if (e.people_skipped) table.insertRow().insertCell().textContent = e.people_skipped + " more not tracked";
  if (e.transcript) el.querySelector(".transcript").textContent = '"' + e.transcript + '"';
  document.getElementById("status").textContent = count + " events, " + Object.keys(panels).length +
    " stream(s), t = " + e.timestamp + " s";
};
source.addEventListener("end", (msg) => {
  const e = JSON.parse(msg.data), el = panel(e.stream == null ? "0" : e.stream);
  el.querySelector(".sid").textContent = "stream " + e.stream + " \u2014 ended (" + e.reason + ", " + e.events + " events)";
});
source.onerror = () => { document.getElementById("status").textContent = "reconnecting"; };
</script></body></html>
"""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # replaces socketserver's traceback on stderr
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            logger.debug("serve: %s went away (%s)", client_address, exc)
        else:
            logger.warning("serve: a request from %s failed", client_address, exc_info=True)


@dataclass
class _Message:
    """One SSE message as sent: its id, the stream it belongs to, when it was published, and its bytes."""

    id: int
    stream: str | None
    published: float
    payload: str
    data: bytes


class _StreamSink:
    """The sink ``EventServer.attach`` gives a stream: its events are published; its end is announced."""

    def __init__(self, server: EventServer, stream: Any) -> None:
        self.server, self.stream = server, stream

    def __call__(self, event: EmotionEvent) -> None:
        self.server.publish(event)

    def close(self) -> None:
        reason = getattr(self.stream, "end_reason", None) or "stopped"
        self.server.end(getattr(self.stream, "stream_id", None), reason)


class EventServer:
    """Publishes events to every connected client; ``publish`` is a stream sink, ``attach(stream)`` adds the
    stream's name, source and end."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, allowed_origins: Iterable[str] = (),
                 keepalive_s: float = 10.0, max_stream_s: float | None = None, replay_s: float = 60.0,
                 max_replay: int = 2048, max_clients: int = 32) -> None:
        """Args:
            host, port: where to listen (port 0 picks a free port).
            allowed_origins: extra ``Origin`` values allowed besides the page's own (e.g. "http://localhost:3000").
            keepalive_s: a comment line is sent after this long without events.
            max_stream_s: end each ``/events`` response after this long (clients reconnect); None keeps it open.
            replay_s: how long each stream's messages are held for clients that reconnect with ``Last-Event-ID``.
            max_replay: the most messages held per stream, whatever their age (bounds memory at high event rates).
            max_clients: the most ``/events`` clients at once; more get 503.

        Raises:
            InputError: a limit that is not positive.
        """
        if not replay_s >= 0 or max_replay < 1 or max_clients < 1:
            raise InputError("replay_s must be >= 0 and max_replay, max_clients at least 1")
        self.host, self.requested_port = host, int(port)
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}
        self.keepalive_s, self.max_stream_s = float(keepalive_s), max_stream_s
        self.replay_s, self.max_replay, self.max_clients = float(replay_s), int(max_replay), int(max_clients)
        self._latest: dict[str | None, _Message] = {}  # the newest event of each stream, for clients that join later
        self._replay: dict[str | None, deque[_Message]] = {}
        self._ended: dict[str | None, _Message] = {}
        self._info: dict[str | None, dict[str, Any]] = {}
        self._next_id = 1
        self._dropped_through = 0  # the highest id no longer held for replay
        self._subscribers: list[DropOldestQueue] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # (method, path, status) of every request, for diagnostics and tests.
        self.requests: list[tuple[str, str, int]] = []
        self.published = 0

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> EventServer:
        """Bind and serve on a background thread.

        Raises:
            DeviceError: the address is in use or cannot be bound.
        """
        server = self

        class Handler(_Handler):
            owner = server

        try:
            self._httpd = _HTTPServer((self.host, self.requested_port), Handler)
        except OSError as exc:
            raise DeviceError(f"cannot listen on {self.host}:{self.requested_port} ({exc.strerror}): choose another "
                              "--port or stop the program using it") from None
        if self.host not in _LOOPBACK:
            logger.warning("serving events on %s: reachable from other machines", self.url)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="ecmf-serve", daemon=True)
        self._thread.start()
        return self

    # -- publishing -------------------------------------------------------------------------------
    def attach(self, stream: Any) -> None:
        """Publish ``stream``'s events, list it at ``/streams`` (name and source) and announce its end."""
        name = getattr(stream, "stream_id", None)
        with self._lock:
            self._stream_info(name)["source"] = getattr(stream, "source", None)
        stream.add_sink(_StreamSink(self, stream))

    def _stream_info(self, stream: str | None) -> dict[str, Any]:
        """The ``/streams`` entry of ``stream`` (called with the lock held)."""
        return self._info.setdefault(stream, {"name": stream, "source": None, "events": 0, "timestamp": None,
                                              "ended": False, "reason": None})

    def _post(self, stream: str | None, kind: str | None, payload: str) -> _Message:
        """Number, hold and fan out one message (called with the lock held)."""
        now = time.monotonic()
        head = f"id: {self._next_id}\n" + (f"event: {kind}\n" if kind else "")
        message = _Message(self._next_id, stream, now, payload, (head + f"data: {payload}\n\n").encode())
        self._next_id += 1
        held = self._replay.setdefault(stream, deque())
        held.append(message)
        while held and (len(held) > self.max_replay or now - held[0].published > self.replay_s):
            self._dropped_through = max(self._dropped_through, held.popleft().id)
        for queue in self._subscribers:
            queue.put(message)
        return message

    def publish(self, event: EmotionEvent) -> None:
        """Send ``event`` to every client (a slow client loses its oldest pending events; the ids show it)."""
        fields = event.to_dict()
        data = json.dumps(fields, ensure_ascii=False)
        stream = getattr(event, "stream", None)
        with self._lock:
            self._latest[stream] = self._post(stream, None, data)
            self._ended.pop(stream, None)
            info = self._stream_info(stream)
            info.update(events=info["events"] + 1, timestamp=fields["timestamp"], ended=False, reason=None)
            self.published += 1

    __call__ = publish

    def end(self, stream: str | None, reason: str = "input ended") -> None:
        """Announce that ``stream`` ended (an ``event: end`` message; ``attach`` does it for a stream)."""
        with self._lock:
            info = self._stream_info(stream)
            if info["ended"]:
                return
            info.update(ended=True, reason=reason)
            payload = json.dumps({"schema_version": SCHEMA_VERSION, "stream": stream, "reason": reason,
                                  "events": info["events"], "timestamp": info["timestamp"]}, ensure_ascii=False)
            self._ended[stream] = self._post(stream, "end", payload)

    def latest(self, stream: str | None = None) -> str | None:
        """The newest event published (of any stream, or of ``stream``), as JSON."""
        with self._lock:
            if stream is None:
                message = max(self._latest.values(), key=lambda m: m.id, default=None)
            else:
                message = self._latest.get(stream)
        return message.payload if message is not None else None

    def latest_per_stream(self) -> list[str]:
        """The newest event of every stream, as JSON."""
        with self._lock:
            messages = list(self._latest.values())
        return [m.payload for m in messages]

    def streams(self) -> list[dict[str, Any]]:
        """Each stream's name, source, events sent, and whether (and why) it ended."""
        with self._lock:
            return [dict(info) for info in self._info.values()]

    # -- subscribing ------------------------------------------------------------------------------
    def subscribe(self, last_event_id: int | None = None) -> tuple[DropOldestQueue, list[bytes]] | None:
        """A queue of later messages and what to send first: the messages after ``last_event_id`` still held
        (with a gap message when some were dropped), or without one the newest event (and end) of every
        stream. The queue is joined under the same lock as that snapshot is taken, so it holds only messages
        published after them: nothing is sent twice. None when ``max_clients`` are connected already."""
        queue = DropOldestQueue(256)
        with self._lock:
            if len(self._subscribers) >= self.max_clients:
                return None
            self._subscribers.append(queue)
            if last_event_id is not None and 0 <= last_event_id < self._next_id:
                held = sorted((m for q in self._replay.values() for m in q if m.id > last_event_id), key=lambda m: m.id)
                first: list[bytes] = []
                if last_event_id < self._dropped_through:
                    available = held[0].id if held else self._next_id
                    first.append(("event: gap\ndata: " + json.dumps({"last_event_id": last_event_id,
                                                                     "first_available_id": available}) + "\n\n").encode())
                return queue, first + [m.data for m in held]
            current = sorted(list(self._latest.values()) + list(self._ended.values()), key=lambda m: m.id)
            return queue, [m.data for m in current]

    def unsubscribe(self, queue: DropOldestQueue) -> None:
        with self._lock:
            if queue in self._subscribers:
                self._subscribers.remove(queue)

    @property
    def clients(self) -> int:
        """``/events`` clients connected now."""
        with self._lock:
            return len(self._subscribers)

    def drain(self, timeout: float = 2.0) -> bool:
        """Wait (at most ``timeout`` seconds) until every connected client was sent all messages; True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not any(len(queue) for queue in self._subscribers):
                    return True
            time.sleep(0.05)
        return False

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        """Stop serving; open event streams end within a fraction of a second."""
        self._closing.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(1.0)


def _last_event_id(value: str | None) -> int | None:
    """A Last-Event-ID this server could have given (a short decimal number), else None (ignored)."""
    value = (value or "").strip()
    if not value or len(value) > _MAX_ID_DIGITS or not value.isdigit() or not value.isascii():
        return None
    return int(value)


class _Handler(BaseHTTPRequestHandler):
    owner: EventServer
    server_version = "ecmf-edge"
    protocol_version = "HTTP/1.1"
    # Malformed requests get one plain line (the status and why), not an HTML page.
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("serve: " + format, *args)

    def _cors(self) -> None:
        origin = (self.headers.get("Origin") or "").rstrip("/")
        if origin:  # _refusal() has let it through: the page's own origin or an allowed one
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None, cors: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if cors:
            self._cors()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.owner.requests.append((self.command, self.path, status))

    def _json(self, value: Any) -> None:
        self._reply(200, json.dumps(value, ensure_ascii=False).encode(), "application/json")

    def _refusal(self) -> str | None:
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.owner.host in _LOOPBACK and name not in _LOOPBACK:
            return f"Host {host!r} refused: this server only answers to 127.0.0.1 / localhost"
        origin = (self.headers.get("Origin") or "").rstrip("/")
        if origin and origin != f"http://{host}" and origin not in self.owner.allowed_origins:
            return f"Origin {origin!r} refused: allow it with --allow-origin {origin}"
        return None

    def _refused(self) -> bool:
        refusal = self._refusal()
        if refusal is None:
            return False
        logger.warning("serve: %s", refusal)
        self._reply(403, (refusal + "\n").encode(), cors=False)
        return True

    def do_OPTIONS(self) -> None:
        """CORS preflight (and a plain OPTIONS): which methods and headers a browser may use."""
        if self._refused():
            return
        self._reply(204, b"", headers={"Allow": "GET, HEAD, OPTIONS", "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                                       "Access-Control-Allow-Headers": "Last-Event-ID, Cache-Control",
                                       "Access-Control-Max-Age": "600"})

    def _not_allowed(self) -> None:
        self._reply(405, f"{self.command} is not supported: this server only answers GET (see /)\n".encode(),
                    headers={"Allow": "GET, HEAD, OPTIONS"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def do_HEAD(self) -> None:
        if self._refused():
            return
        path = urlsplit(self.path).path
        if path == "/events":
            self._reply(200, b"", "text/event-stream")
        else:
            self._get(path)

    def do_GET(self) -> None:
        if self._refused():
            return
        self._get(urlsplit(self.path).path)

    def _get(self, path: str) -> None:
        query = parse_qs(urlsplit(self.path).query)
        owner = self.owner
        if path in ("/", "/index.html"):
            self._reply(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/latest":
            stream = query.get("stream", [None])[0]
            latest = owner.latest(stream)
            self._reply(200 if latest else 204, (latest or "").encode(), "application/json")
        elif path == "/streams":
            self._json(owner.streams())
        elif path == "/schema":
            self._reply(200, EVENT_SCHEMA_PATH.read_bytes(), "application/schema+json")
        elif path == "/events":
            last = self.headers.get("Last-Event-ID") or query.get("last_event_id", [None])[0]
            self._events(_last_event_id(last))
        else:
            self._reply(404, f"not found: this server answers {', '.join(ENDPOINTS)}\n".encode())

    def _client_left(self) -> bool:
        """Whether the client closed its end (a readable socket with nothing to read), so that a client that
        drops is let go at once rather than at the next write."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _events(self, last_event_id: int | None) -> None:
        owner = self.owner
        subscription = owner.subscribe(last_event_id)
        if subscription is None:
            self._reply(503, f"too many event clients ({owner.max_clients}): close one and retry\n".encode(),
                        headers={"Retry-After": "5"})
            return
        queue, first = subscription
        owner.requests.append((self.command, self.path, 200))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self._cors()
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n\n" + b"".join(first))
            self.wfile.flush()
            started = last = time.monotonic()
            while not owner.closing:
                if owner.max_stream_s is not None and time.monotonic() - started >= owner.max_stream_s:
                    break
                message = queue.get(0.2)
                if message is not None:
                    self.wfile.write(message.data)
                    self.wfile.flush()
                    last = time.monotonic()
                elif self._client_left():
                    break
                elif time.monotonic() - last >= owner.keepalive_s:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    last = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away
        finally:
            owner.unsubscribe(queue)
