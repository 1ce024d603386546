"""Events over Server-Sent Events with the standard library, and a tiny page that shows them.

``GET /`` is an HTML page (label, probability bars, modality-weight bars, transcript)
that subscribes to ``GET /events`` (``text/event-stream``, one JSON event per message;
the newest event is sent at once on connect). ``GET /latest`` returns the newest event
as JSON. The server binds 127.0.0.1 by default, refuses requests whose ``Origin`` is
not the page's own (or one given with ``allowed_origins``), and on a loopback address
also refuses foreign ``Host`` headers (DNS rebinding).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ecmf_edge.errors import DeviceError
from ecmf_edge.events import EmotionEvent
from ecmf_edge.stream.queues import DropOldestQueue

__all__ = ["EventServer", "PAGE"]

logger = logging.getLogger("ecmf_edge")

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

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


class EventServer:
    """Publishes events to every connected browser; ``publish`` is a stream sink."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, allowed_origins: Iterable[str] = (),
                 keepalive_s: float = 10.0, max_stream_s: float | None = None) -> None:
        """Args:
            host, port: where to listen (port 0 picks a free port).
            allowed_origins: extra ``Origin`` values allowed besides the page's own (e.g. "http://localhost:3000").
            keepalive_s: a comment line is sent after this long without events.
            max_stream_s: end each ``/events`` response after this long (browsers reconnect); None keeps it open.
        """
        self.host, self.requested_port = host, int(port)
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}
        self.keepalive_s, self.max_stream_s = float(keepalive_s), max_stream_s
        self._latest: dict[str | None, str] = {}  # the newest event of each stream, for browsers that join later
        self._newest: str | None = None
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

    def publish(self, event: EmotionEvent) -> None:
        """Send ``event`` to every subscriber (a slow browser loses its oldest pending events)."""
        data = json.dumps(event.to_dict(), ensure_ascii=False)
        with self._lock:
            self._latest[getattr(event, "stream", None)] = data
            self._newest = data
            subscribers = list(self._subscribers)
            self.published += 1
        for queue in subscribers:
            queue.put(data)

    __call__ = publish

    def latest(self) -> str | None:
        """The newest event published (of any stream), as JSON."""
        with self._lock:
            return self._newest

    def latest_per_stream(self) -> list[str]:
        """The newest event of every stream, as JSON."""
        with self._lock:
            return list(self._latest.values())

    def subscribe(self) -> DropOldestQueue:
        queue = DropOldestQueue(64)
        with self._lock:
            self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: DropOldestQueue) -> None:
        with self._lock:
            if queue in self._subscribers:
                self._subscribers.remove(queue)

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


class _Handler(BaseHTTPRequestHandler):
    owner: EventServer
    server_version = "ecmf-edge"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("serve: " + format, *args)

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
        self.owner.requests.append((self.command, self.path, status))

    def _refusal(self) -> str | None:
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.owner.host in _LOOPBACK and name not in _LOOPBACK:
            return f"Host {host!r} refused: this server only answers to 127.0.0.1 / localhost"
        origin = (self.headers.get("Origin") or "").rstrip("/")
        if origin and origin != f"http://{host}" and origin not in self.owner.allowed_origins:
            return f"Origin {origin!r} refused: allow it with --allow-origin {origin}"
        return None

    def do_GET(self) -> None:
        refusal = self._refusal()
        if refusal is not None:
            logger.warning("serve: %s", refusal)
            self._reply(403, (refusal + "\n").encode())
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._reply(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/latest":
            latest = self.owner.latest()
            self._reply(200 if latest else 204, (latest or "").encode(), "application/json")
        elif path == "/events":
            self._events()
        else:
            self._reply(404, b"not found: try / or /events\n")

    def _events(self) -> None:
        import time

        owner = self.owner
        queue = owner.subscribe()
        owner.requests.append((self.command, self.path, 200))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            origin = self.headers.get("Origin")
            if origin:
                self.send_header("Access-Control-Allow-Origin", origin)
            self.end_headers()
            self.close_connection = True
            latest = owner.latest_per_stream()
            self.wfile.write(b"retry: 1000\n\n" + b"".join(f"data: {data}\n\n".encode() for data in latest))
            self.wfile.flush()
            started = last = time.monotonic()
            while not owner.closing:
                if owner.max_stream_s is not None and time.monotonic() - started >= owner.max_stream_s:
                    break
                data = queue.get(0.2)
                if data is not None:
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()
                    last = time.monotonic()
                elif time.monotonic() - last >= owner.keepalive_s:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    last = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the browser went away
        finally:
            owner.unsubscribe(queue)
